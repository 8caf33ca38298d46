// Package pgutil connects to PostgreSQL and, for single-machine mode and
// tests, runs a PostgreSQL server from the machine's own binaries with its
// data under a directory of ours.
package pgutil

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

// Config is the shared database setting.
type Config struct {
	// URL is a PostgreSQL connection URL. Empty means: start a server from
	// the machine's PostgreSQL binaries under the data directory.
	URL string
}

// RegisterFlags registers -database.url.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.URL, "database.url", "", "PostgreSQL URL (postgres://user:pass@host:5432/db); empty starts a PostgreSQL from the machine's binaries under -data.dir")
}

// Open returns a pool for url (a URL or a keyword/value string) after
// checking it answers. Its errors never contain the connection string's
// secrets.
func Open(ctx context.Context, rawURL string) (*pgxpool.Pool, error) {
	return OpenWith(ctx, rawURL, nil)
}

// OpenWith is Open with configure applied to the parsed pool configuration
// (session settings, handlers) before the pool is made.
func OpenWith(ctx context.Context, rawURL string, configure func(*pgxpool.Config)) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(rawURL)
	if err != nil {
		return nil, parseError(rawURL, err)
	}
	if configure != nil {
		configure(cfg)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, safeError(rawURL, err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, safeError(rawURL, fmt.Errorf("connect to %s: %w", Redacted(rawURL), err))
	}
	return pool, nil
}

// parseError explains a connection string pgx refused without quoting it:
// pgx's own message quotes it with a best-effort redaction, and a URL's
// parse error quotes it whole.
func parseError(conn string, err error) error {
	msg := "not a valid PostgreSQL URL or keyword/value connection string"
	inner := errors.Unwrap(err)
	var ue *url.Error
	if errors.As(err, &ue) {
		inner = ue.Err
	}
	if inner != nil {
		if detail, ok := scrub(inner.Error(), conn); ok {
			msg += ": " + detail
		}
	}
	return fmt.Errorf("database url %s: %s", Redacted(conn), msg)
}

// redactedError is err with a message safe to log; errors.Is and As still
// see err.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// safeError returns err, or err under a message without conn's secrets
// when its message contains one.
func safeError(conn string, err error) error {
	msg, ok := scrub(err.Error(), conn)
	if !ok {
		msg = "database " + Redacted(conn) + ": cannot connect (details withheld: they may quote the connection string)"
	}
	if msg == err.Error() {
		return err
	}
	return &redactedError{msg: msg, err: err}
}

// ErrNoBinaries means no PostgreSQL server binaries were found.
var ErrNoBinaries = errors.New("no PostgreSQL server binaries (initdb, postgres) found on PATH or under /usr/lib/postgresql/*/bin: install the PostgreSQL server package (Debian: apt-get install postgresql) or set -database.url")

// FindBinDir returns the directory holding initdb and postgres.
func FindBinDir() (string, error) {
	if p, err := exec.LookPath("postgres"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			p = real
		}
		dir := filepath.Dir(p)
		if _, err := os.Stat(filepath.Join(dir, "initdb")); err == nil {
			return dir, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) > versionOf(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "postgres")); err == nil {
			return d, nil
		}
	}
	return "", ErrNoBinaries
}

func versionOf(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

// Server is a PostgreSQL server run from local binaries. Its data live in
// Dir; it listens on 127.0.0.1 only, with password authentication (the
// password is generated before initdb and kept in Dir/../postgres.password,
// for a Dir named postgres).
// When this process runs as root, the server runs as the unprivileged
// "postgres" user (or "nobody"), since PostgreSQL refuses to run as root.
type Server struct {
	Dir  string // data directory (created by initdb on first start)
	Port int    // 0 picks a free port at each start
	Log  *slog.Logger

	cmd        *exec.Cmd
	exited     chan error
	stopping   atomic.Bool
	configured string // Dir as given, before relocation
	prepared   bool
	pwFile     string
	port       int
	url        string
	password   string
	cred       *syscall.Credential
}

// URL returns the URL of the "chat" database; valid after Prepare or Start.
func (s *Server) URL() string { return s.url }

const dbUser, dbName = "chat", "chat"

// Prepare fixes what the server's URL holds before Start, so the URL can be
// handed to other components before the server runs: it picks the port
// (when Port is 0) and reads the password file, creating it with a new
// password when the cluster is yet to be initialized. Start calls it when
// it has not been called since the last Start.
func (s *Server) Prepare() error {
	// The server runs in another working directory: the path must be
	// absolute. A restart starts again from the configured directory (Dir
	// may have become the relocated one).
	if s.configured == "" {
		s.configured = s.Dir
	}
	dir, err := filepath.Abs(s.configured)
	if err != nil {
		return err
	}
	s.Dir = dir
	s.pwFile = filepath.Join(filepath.Dir(dir), filepath.Base(dir)+".password")
	pw, err := os.ReadFile(s.pwFile)
	switch {
	case err == nil:
		s.password = strings.TrimSpace(string(pw))
	case errors.Is(err, os.ErrNotExist) && !initialized(dir):
		// initdb will give the cluster this password.
		buf := make([]byte, 24)
		rand.Read(buf)
		s.password = hex.EncodeToString(buf)
		if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(s.pwFile, []byte(s.password+"\n"), 0o600); err != nil {
			return err
		}
	default:
		return fmt.Errorf("read postgres password: %w", err)
	}
	s.port = s.Port
	if s.port == 0 {
		if s.port, err = freePort(); err != nil {
			return err
		}
	}
	s.url = s.urlOf(dbName)
	s.prepared = true
	return nil
}

// initialized reports whether dir holds a cluster.
func initialized(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, "PG_VERSION"))
	return err == nil
}

func (s *Server) urlOf(db string) string {
	u := url.URL{Scheme: "postgres", User: url.UserPassword(dbUser, s.password), Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)), Path: "/" + db, RawQuery: "sslmode=disable"}
	return u.String()
}

// Start runs initdb when Dir is empty, starts the server and waits until
// it accepts connections, then makes sure database "chat" exists.
func (s *Server) Start(ctx context.Context) error {
	if s.Log == nil {
		s.Log = slog.New(slog.DiscardHandler)
	}
	if !s.prepared {
		if err := s.Prepare(); err != nil {
			return err
		}
	}
	s.prepared = false // the next Start prepares again: a new port when Port is 0
	bin, err := FindBinDir()
	if err != nil {
		return err
	}
	if err := s.runAs(); err != nil {
		return err
	}
	if err := s.relocateIfUnreachable(); err != nil {
		return err
	}
	if !initialized(s.Dir) {
		if err := s.initdb(ctx, bin); err != nil {
			return err
		}
	}
	s.stopStale(bin)
	port := s.port
	cmd := exec.Command(filepath.Join(bin, "postgres"), "-D", s.Dir, "-p", strconv.Itoa(port),
		"-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=", "-c", "max_connections=200")
	logf, err := os.OpenFile(filepath.Join(s.Dir, "server.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred, Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start postgres: %w", err)
	}
	s.cmd = cmd
	s.stopping.Store(false)
	s.exited = make(chan error, 1)
	go func() { s.exited <- cmd.Wait(); logf.Close() }()
	admin := s.urlOf("postgres")
	deadline := time.Now().Add(60 * time.Second)
	for {
		conn, err := pgx.Connect(ctx, admin)
		if err == nil {
			err = ensureDatabase(ctx, conn, dbName)
			conn.Close(ctx)
			if err != nil {
				return err
			}
			break
		}
		select {
		case e := <-s.exited:
			return fmt.Errorf("postgres exited during start (%v); see %s", e, filepath.Join(s.Dir, "server.log"))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("postgres not accepting connections after 60s: %w", err)
		}
	}
	s.Log.Info("postgres started", "dir", s.Dir, "url", Redacted(s.url))
	return nil
}

// AdminURL returns the URL of the maintenance database "postgres".
func (s *Server) AdminURL() string {
	u, _ := url.Parse(s.url)
	u.Path = "/postgres"
	return u.String()
}

// Stop shuts the server down (fast mode: open transactions roll back).
func (s *Server) Stop(ctx context.Context) error {
	if s.cmd == nil {
		return nil
	}
	s.stopping.Store(true) // until the next Start
	s.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-s.exited:
	case <-ctx.Done():
		s.cmd.Process.Kill()
		<-s.exited
	}
	s.cmd = nil
	return nil
}

func ensureDatabase(ctx context.Context, conn *pgx.Conn, name string) error {
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return err
	}
	if exists {
		return nil
	}
	_, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	var pgErr interface{ SQLState() string }
	if errors.As(err, &pgErr) && pgErr.SQLState() == "42P04" { // created concurrently
		return nil
	}
	return err
}

// runAs picks the user the server runs as when we are root.
func (s *Server) runAs() error {
	if os.Geteuid() != 0 {
		return nil
	}
	var u *user.User
	var err error
	for _, name := range []string{"postgres", "nobody"} {
		if u, err = user.Lookup(name); err == nil {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("running as root and no unprivileged user (postgres, nobody) to run PostgreSQL as: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	s.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	return nil
}

func (s *Server) initdb(ctx context.Context, bin string) error {
	// Parents must be enterable by the server's user; the directory itself private.
	if err := os.MkdirAll(filepath.Dir(s.Dir), 0o755); err != nil {
		return err
	}
	if err := os.Mkdir(s.Dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	// initdb reads the password from a file the server user can read.
	tmp, err := os.CreateTemp("", "pgpw")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	tmp.WriteString(s.password + "\n")
	tmp.Close()
	if s.cred != nil {
		for _, p := range []string{s.Dir, tmp.Name()} {
			if err := os.Chown(p, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
				return err
			}
		}
		if err := checkTraversable(s.Dir, s.cred); err != nil {
			return err
		}
	}
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "initdb"), "-D", s.Dir, "-U", dbUser, "--pwfile="+tmp.Name(),
		"--auth=scram-sha-256", "--encoding=UTF8", "--locale=C.UTF-8")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	cmd.Dir = os.TempDir()
	if out, err := cmd.CombinedOutput(); err != nil {
		// A failed initdb leaves a partial directory that blocks the next try.
		os.RemoveAll(s.Dir)
		return fmt.Errorf("initdb %s: %w\n%s", s.Dir, err, out)
	}
	s.Log.Info("postgres initialized", "dir", s.Dir)
	return nil
}

// relocateIfUnreachable handles a data directory the server's user cannot
// reach (a checkout under /root, say, when we run as root): the cluster
// then lives under /var/lib/chat-postgres/<hash of the path>, and Dir
// becomes a symbolic link to it, so the data directory still shows where
// everything is and a restart finds the same cluster.
func (s *Server) relocateIfUnreachable() error {
	if s.cred == nil {
		return nil
	}
	if target, err := os.Readlink(s.Dir); err == nil { // relocated by an earlier start
		s.Dir = target
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(s.Dir), 0o755); err != nil {
		return err
	}
	if checkTraversable(s.Dir, s.cred) == nil {
		return nil
	}
	h := sha256.Sum256([]byte(s.Dir))
	alt := filepath.Join("/var/lib/chat-postgres", hex.EncodeToString(h[:8]))
	if err := os.MkdirAll(filepath.Dir(alt), 0o755); err != nil {
		return fmt.Errorf("relocate postgres data: %w", err)
	}
	if err := checkTraversable(alt, s.cred); err != nil {
		return err
	}
	if _, err := os.Lstat(s.Dir); err == nil {
		return fmt.Errorf("%s exists but PostgreSQL's user cannot reach it: %w", s.Dir, checkTraversable(s.Dir, s.cred))
	}
	if err := os.MkdirAll(filepath.Dir(s.Dir), 0o755); err != nil {
		return err
	}
	if err := os.Symlink(alt, s.Dir); err != nil {
		return fmt.Errorf("link %s to %s: %w", s.Dir, alt, err)
	}
	s.Log.Warn("postgres's user cannot enter the data directory's parents; the cluster lives elsewhere, linked from the data directory", "link", s.Dir, "dir", alt)
	s.Dir = alt
	return nil
}

// checkTraversable fails with a clear message when the server user cannot
// reach dir (say, a checkout under /root).
func checkTraversable(dir string, cred *syscall.Credential) error {
	for d := filepath.Dir(dir); d != "/" && d != "."; d = filepath.Dir(d) {
		st, err := os.Stat(d)
		if err != nil {
			return err
		}
		sys := st.Sys().(*syscall.Stat_t)
		mode := st.Mode().Perm()
		ok := mode&0o001 != 0 || (sys.Uid == cred.Uid && mode&0o100 != 0) || (sys.Gid == cred.Gid && mode&0o010 != 0)
		if !ok {
			return fmt.Errorf("PostgreSQL runs as uid %d, which cannot enter %s (mode %v): choose a -data.dir outside it, or chmod o+x %s", cred.Uid, d, mode, d)
		}
	}
	return nil
}

// stopStale stops a server left running on Dir by a process that died.
func (s *Server) stopStale(bin string) {
	pidFile := filepath.Join(s.Dir, "postmaster.pid")
	if _, err := os.Stat(pidFile); err != nil {
		return
	}
	cmd := exec.Command(filepath.Join(bin, "pg_ctl"), "-D", s.Dir, "-m", "fast", "-w", "stop")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	cmd.Dir = os.TempDir()
	if out, err := cmd.CombinedOutput(); err == nil {
		s.Log.Warn("stopped a postgres left running by an earlier process", "dir", s.Dir, "out", strings.TrimSpace(string(out)))
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Name returns "postgres": a Server is a lifecycle component.
func (s *Server) Name() string { return "postgres" }

// Run blocks until ctx ends; a server that exits on its own is an error.
func (s *Server) Run(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case err := <-s.exited:
		s.exited <- err
		if s.stopping.Load() {
			return nil
		}
		return fmt.Errorf("postgres exited: %v (see %s)", err, filepath.Join(s.Dir, "server.log"))
	}
}

// Migrate applies the pending goose migrations of fsys (SQL files at its
// root) to the database of pool, tracking them in table. A PostgreSQL
// session advisory lock makes concurrent processes take turns.
func Migrate(ctx context.Context, pool *pgxpool.Pool, fsys fs.FS, table string) error {
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	locker, err := lock.NewPostgresSessionLocker()
	if err != nil {
		return err
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, fsys, goose.WithSessionLocker(locker), goose.WithTableName(table))
	if err != nil {
		return fmt.Errorf("migrations: %w", err)
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("apply migrations: %w", err)
	}
	return nil
}
