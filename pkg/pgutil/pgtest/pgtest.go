// Package pgtest gives tests a real PostgreSQL: the server TEST_DATABASE_URL
// names, or a throwaway cluster started from the machine's PostgreSQL
// binaries. Each call of NewDatabase creates a fresh database, dropped at
// the end of the test.
//
// Use Main in TestMain so a started cluster is stopped after the package's
// tests:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
package pgtest

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/chatsys/chat/pkg/pgutil"
	"github.com/chatsys/chat/pkg/testutil"
)

var (
	mu      sync.Mutex
	server  *pgutil.Server
	tmpDir  string
	baseURL string
	seq     atomic.Int64
)

// Main runs the package's tests, then stops the cluster if one was started.
func Main(m *testing.M) {
	code := m.Run()
	mu.Lock()
	if server != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		server.Stop(ctx)
		cancel()
		os.RemoveAll(tmpDir)
	}
	mu.Unlock()
	os.Exit(code)
}

// Server returns the throwaway cluster (nil when TEST_DATABASE_URL is used),
// starting it on first use. Fault tests stop and start it.
func Server(t testing.TB) *pgutil.Server {
	t.Helper()
	admin(t)
	return server
}

// admin returns a URL of the maintenance database, starting a cluster if needed.
func admin(t testing.TB) string {
	t.Helper()
	mu.Lock()
	defer mu.Unlock()
	if baseURL != "" {
		return baseURL
	}
	if u := os.Getenv("TEST_DATABASE_URL"); u != "" {
		baseURL = u
		return baseURL
	}
	dir, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	s := &pgutil.Server{Dir: dir + "/pg", Port: testutil.FreePortNumber(t)} // below the ephemeral range: see FreePortNumber
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := s.Start(ctx); err != nil {
		os.RemoveAll(dir)
		t.Fatalf("start a throwaway PostgreSQL (set TEST_DATABASE_URL to use an existing server): %v", err)
	}
	server, tmpDir = s, dir
	baseURL = s.AdminURL()
	return baseURL
}

// NewDatabase creates an empty database for the test and returns its URL.
// The database is dropped when the test ends.
func NewDatabase(t testing.TB) string {
	t.Helper()
	base := admin(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("connect to test PostgreSQL: %v", err)
	}
	defer conn.Close(ctx)
	name := fmt.Sprintf("test_%d_%d", os.Getpid(), seq.Add(1))
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("create database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, admin(t))
		if err != nil {
			return
		}
		defer c.Close(ctx)
		c.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	return u.String()
}
