package pgtest_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/chatsys/chat/pkg/pgutil"
	"github.com/chatsys/chat/pkg/pgutil/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestNewDatabaseIsUsableAndSeparate(t *testing.T) {
	ctx := context.Background()
	a, b := pgtest.NewDatabase(t), pgtest.NewDatabase(t)
	if a == b {
		t.Fatalf("two NewDatabase calls returned the same URL %s", a)
	}
	ca, err := pgx.Connect(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	defer ca.Close(ctx)
	if _, err := ca.Exec(ctx, "CREATE TABLE t (x int)"); err != nil {
		t.Fatal(err)
	}
	cb, err := pgx.Connect(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close(ctx)
	var n int
	if err := cb.QueryRow(ctx, "SELECT count(*) FROM pg_tables WHERE tablename = 't'").Scan(&n); err != nil || n != 0 {
		t.Fatalf("table of database a visible in b: n=%d err=%v", n, err)
	}
}

// TestServerWithRelativeDir starts a server on a relative data directory, as
// `make run` does with ./data, and restarts it on the same data.
func TestServerWithRelativeDir(t *testing.T) {
	dir := t.TempDir()
	os.Chmod(filepath.Dir(dir), 0o755)
	os.Chmod(dir, 0o755)
	t.Chdir(dir)
	ctx := context.Background()
	s := &pgutil.Server{Dir: "data/postgres"}
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	c, err := pgx.Connect(ctx, s.URL())
	if err != nil {
		t.Fatal(err)
	}
	c.Exec(ctx, "CREATE TABLE kept (x int)")
	c.Close(ctx)
	s.Stop(ctx)
	if err := s.Start(ctx); err != nil {
		t.Fatalf("restart: %v", err)
	}
	defer s.Stop(ctx)
	c, err = pgx.Connect(ctx, s.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, "SELECT * FROM kept"); err != nil {
		t.Fatalf("table gone after restart: %v", err)
	}
}

// TestServerRelocatesUnreachableDir: as root, a data directory under a
// parent the server's user cannot enter (a checkout under /root) still
// works: the cluster lives under /var/lib/chat-postgres, linked from it.
func TestServerRelocatesUnreachableDir(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("only as root: the server then runs as an unprivileged user")
	}
	private := t.TempDir() // mode 0700, owned by root
	dir := filepath.Join(private, "data", "postgres")
	ctx := context.Background()
	s := &pgutil.Server{Dir: dir}
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() { s.Stop(ctx); os.RemoveAll(s.Dir) }()
	target, err := os.Readlink(dir)
	if err != nil || target != s.Dir {
		t.Fatalf("%s should link to the relocated cluster %s: %v", dir, s.Dir, err)
	}
	s.Stop(ctx)
	s2 := &pgutil.Server{Dir: dir}
	if err := s2.Start(ctx); err != nil {
		t.Fatalf("restart through the link: %v", err)
	}
	defer s2.Stop(ctx)
	if s2.Dir != s.Dir {
		t.Fatalf("restart used %s, want %s", s2.Dir, s.Dir)
	}
}

// TestServerURLKnownBeforeStart: Prepare gives the URL other components
// are configured with before the server starts, on a fresh directory and
// on an initialized one.
func TestServerURLKnownBeforeStart(t *testing.T) {
	dir := t.TempDir()
	os.Chmod(filepath.Dir(dir), 0o755)
	os.Chmod(dir, 0o755)
	ctx := context.Background()
	for _, round := range []string{"fresh", "initialized"} {
		s := &pgutil.Server{Dir: filepath.Join(dir, "postgres")}
		if err := s.Prepare(); err != nil {
			t.Fatalf("%s: prepare: %v", round, err)
		}
		before := s.URL()
		if before == "" {
			t.Fatalf("%s: no URL after Prepare", round)
		}
		if err := s.Start(ctx); err != nil {
			t.Fatalf("%s: %v", round, err)
		}
		if s.URL() != before {
			t.Errorf("%s: URL %s after Start, %s before", round, pgutil.Redacted(s.URL()), pgutil.Redacted(before))
		}
		c, err := pgx.Connect(ctx, before)
		if err != nil {
			s.Stop(ctx)
			t.Fatalf("%s: connect with the prepared URL: %v", round, err)
		}
		c.Close(ctx)
		s.Stop(ctx)
	}
}
