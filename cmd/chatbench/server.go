package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/chatsys/chat/pkg/auth"
)

// The baseline is gorilla/websocket's chat example exactly as it ships,
// installed with go install at this version (never vendored or copied).
const (
	exampleModule  = "github.com/gorilla/websocket"
	exampleVersion = "v1.5.3"
	examplePkg     = exampleModule + "/examples/chat@" + exampleVersion
)

// sysFlags are the flags shared by the scenarios that start servers.
type sysFlags struct {
	chat    string // path of bin/chat
	example string // path of the installed example binary
	mode    string // all: chat -target=all; split: -target=broker and -target=edge
	only    string // run only "example" or "chat"
	verbose bool   // servers' output to our stderr, not to log files
}

// register adds the flags; withExample those of the baseline too.
func (f *sysFlags) register(fs *flag.FlagSet, mode string, withExample bool) {
	fs.StringVar(&f.chat, "chat", "bin/chat", "path of the chat binary (make build)")
	fs.StringVar(&f.mode, "mode", mode, "how the chat runs: all (-target=all: embedded broker, PostgreSQL, every service) or split (-target=broker and -target=edge processes)")
	fs.BoolVar(&f.verbose, "v", false, "servers write their logs to stderr (default: to files in their temporary directory)")
	if withExample {
		fs.StringVar(&f.example, "example", "bin/tools/chat", "path of gorilla/websocket's chat example binary; installed there with go install "+examplePkg+" when missing")
		fs.StringVar(&f.only, "only", "", "run only this system: example or chat")
	}
}

// systems returns the systems to measure, baseline first.
func (f *sysFlags) systems() ([]string, error) {
	switch f.only {
	case "chat":
		return []string{"chat"}, nil
	case "", "example":
		// Installed now, so that go install's output precedes the tables.
		if _, err := ensureExample(f.example); err != nil {
			return nil, err
		}
		if f.only == "" {
			return []string{"example", "chat"}, nil
		}
		return []string{"example"}, nil
	}
	return nil, fmt.Errorf("-only %q: want example or chat", f.only)
}

func (f *sysFlags) start(name string, extra ...string) (*server, error) {
	if name == "example" {
		return startExample(f.example, f.verbose)
	}
	return startChat(f.chat, f.mode, f.verbose, extra...)
}

// server is a system under test: one or more processes we started, each
// the root of a process tree that is measured as a whole.
type server struct {
	name   string // example, chat
	label  string // what runs, for the tables
	addr   string // host:port of /ws
	broker string // the Kafka-protocol address (chat only)
	chat   bool   // speaks the chat protocol (token, join, ack)
	dir    string // temporary directory, removed by stop
	cmds   []*exec.Cmd
	logs   []string
	minter *auth.Minter
}

var (
	runningMu sync.Mutex
	running   = map[*server]bool{}
)

// stopAll stops every server still running (on a signal or a timeout).
func stopAll() {
	runningMu.Lock()
	var ss []*server
	for s := range running {
		ss = append(ss, s)
	}
	runningMu.Unlock()
	for _, s := range ss {
		s.stop()
	}
}

// roots are the pids of the processes we started.
func (s *server) roots() []int {
	var out []int
	for _, c := range s.cmds {
		out = append(out, c.Process.Pid)
	}
	return out
}

// usage sums the whole system: every process we started and its descendants.
func (s *server) usage(withPSS bool) usage { return treeUsage(withPSS, s.roots()...) }

// token returns the bearer token for user ("" for the example).
func (s *server) token(user string) string {
	if s.minter == nil {
		return ""
	}
	tok, err := s.minter.Mint(user, false, 6*time.Hour)
	if err != nil {
		panic(err)
	}
	return tok
}

// cleanEnv is our environment without any CHAT_* variable, plus extra.
func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CHAT_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// launch starts one process of s, its output to a log file in s.dir.
func (s *server) launch(name, dir string, env []string, verbose bool, bin string, args ...string) error {
	cmd := exec.Command(bin, args...)
	cmd.Dir, cmd.Env = dir, env
	if verbose {
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	} else {
		path := filepath.Join(s.dir, name+".log")
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		defer f.Close() // the child has its own descriptor
		cmd.Stdout, cmd.Stderr = f, f
		s.logs = append(s.logs, path)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", bin, err)
	}
	s.cmds = append(s.cmds, cmd)
	return nil
}

// failed stops s and returns err with the tail of its logs.
func (s *server) failed(err error) error {
	var tails []string
	for _, p := range s.logs {
		b, _ := os.ReadFile(p)
		lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
		tails = append(tails, "--- "+filepath.Base(p)+":\n"+strings.Join(lines[max(0, len(lines)-15):], "\n"))
	}
	s.stop()
	if len(tails) > 0 {
		return fmt.Errorf("%s: %w\n%s", s.label, err, strings.Join(tails, "\n"))
	}
	return fmt.Errorf("%s: %w", s.label, err)
}

// stop interrupts the processes (the last started first: edge before
// broker), waits for them, kills whatever of their trees is left, and
// removes the temporary directory.
func (s *server) stop() {
	runningMu.Lock()
	if !running[s] {
		runningMu.Unlock()
		return
	}
	delete(running, s)
	runningMu.Unlock()
	left := treeOf(s.roots()...)
	for i := len(s.cmds) - 1; i >= 0; i-- {
		c := s.cmds[i]
		c.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { c.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			fmt.Fprintf(os.Stderr, "chatbench: %s did not stop in 30s: killing it\n", s.label)
			c.Process.Kill()
			<-done
		}
	}
	// Anything of the trees still alive (a PostgreSQL the chat did not get
	// to stop) is ours: kill exactly those processes.
	for _, p := range left {
		if q, ok := readProc(p.pid); ok && q.start == p.start {
			syscall.Kill(p.pid, syscall.SIGKILL)
		}
	}
	if s.dir != "" {
		os.RemoveAll(s.dir)
	}
}

// ensureExample installs gorilla/websocket's chat example at path (its
// directory is the GOBIN) when it is not there yet.
func ensureExample(path string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(abs); err == nil {
		return abs, nil
	}
	if filepath.Base(abs) != "chat" {
		return "", fmt.Errorf("%s: go install names the example's binary chat; give a path ending in /chat", path)
	}
	if err := goInstall(examplePkg, filepath.Dir(abs)); err != nil {
		return "", err
	}
	return abs, nil
}

// goInstall installs pkg (module@version) into dir, as a user would, with
// the caller's CHAT_* variables removed and outside our workspace.
func goInstall(pkg, dir string) error {
	fmt.Fprintf(os.Stderr, "chatbench: installing %s into %s\n", pkg, dir)
	cmd := exec.Command("go", "install", pkg)
	cmd.Env = cleanEnv("GOBIN="+dir, "GOWORK=off")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go install %s: %w", pkg, err)
	}
	return nil
}

// exampleDir is the example's source directory in the module cache (it
// serves home.html from its working directory), or "" if absent.
func exampleDir() string {
	out, err := exec.Command("go", "env", "GOMODCACHE").Output()
	if err != nil {
		return ""
	}
	d := filepath.Join(strings.TrimSpace(string(out)), exampleModule+"@"+exampleVersion, "examples", "chat")
	if _, err := os.Stat(filepath.Join(d, "home.html")); err != nil {
		return ""
	}
	return d
}

// startExample runs the example on a free loopback port.
func startExample(path string, verbose bool) (*server, error) {
	bin, err := ensureExample(path)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "chatbench-example-")
	if err != nil {
		return nil, err
	}
	s := &server{name: "example", label: "gorilla chat example " + exampleVersion, addr: freeAddr(), dir: dir}
	runningMu.Lock()
	running[s] = true
	runningMu.Unlock()
	cwd := exampleDir()
	if cwd == "" {
		cwd = dir // / answers 404 without home.html; /ws is all we use
	}
	if err := s.launch("example", cwd, cleanEnv(), verbose, bin, "-addr="+s.addr); err != nil {
		return nil, s.failed(err)
	}
	if err := waitHTTP(s.addr, "/", 15*time.Second); err != nil {
		return nil, s.failed(err)
	}
	return s, nil
}

// startChat runs bin/chat as a user would: -target=all on a fresh data
// directory (embedded broker, PostgreSQL from the machine's binaries, every
// service), or -target=broker plus -target=edge. The per-user rate limit is
// raised (publishers send far more than 10 messages/s) and the shutdown
// drain shortened; everything else is the default.
func startChat(path, mode string, verbose bool, extra ...string) (*server, error) {
	bin, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("%s: %w (run make build first)", path, err)
	}
	dir, err := os.MkdirTemp("", "chatbench-chat-")
	if err != nil {
		return nil, err
	}
	// PostgreSQL runs as the postgres user when we are root: it must be able
	// to enter the data directory.
	os.Chmod(dir, 0o755)
	s := &server{name: "chat", addr: freeAddr(), broker: freeAddr(), chat: true, dir: dir, minter: auth.NewHS256Minter(secret, "")}
	runningMu.Lock()
	running[s] = true
	runningMu.Unlock()
	env := chatEnv()
	common := []string{"-data.dir=" + filepath.Join(dir, "data"), "-broker.addr=" + s.broker}
	switch mode {
	case "all":
		s.label = "bin/chat -target=all"
		args := append(append([]string{"-target=all", "-http.addr=" + s.addr, "-edge.drain-duration=1s"}, common...), extra...)
		if err := s.launch("chat-all", dir, env, verbose, bin, args...); err != nil {
			return nil, s.failed(err)
		}
		// First start: initdb, PostgreSQL, migrations.
		if err := waitHTTP(s.addr, "/readyz", 180*time.Second); err != nil {
			return nil, s.failed(err)
		}
	case "split":
		s.label = "bin/chat -target=broker + -target=edge"
		baddr := freeAddr()
		if err := s.launch("chat-broker", dir, env, verbose, bin, append([]string{"-target=broker", "-http.addr=" + baddr}, common...)...); err != nil {
			return nil, s.failed(err)
		}
		if err := waitHTTP(baddr, "/readyz", 60*time.Second); err != nil {
			return nil, s.failed(err)
		}
		args := append([]string{"-target=edge", "-http.addr=" + s.addr, "-kafka.brokers=" + s.broker, "-edge.drain-duration=1s"}, extra...)
		if err := s.launch("chat-edge", dir, env, verbose, bin, args...); err != nil {
			return nil, s.failed(err)
		}
		if err := waitHTTP(s.addr, "/readyz", 60*time.Second); err != nil {
			return nil, s.failed(err)
		}
	default:
		s.stop()
		return nil, fmt.Errorf("-mode %q: want all or split", mode)
	}
	return s, nil
}

// chatEnv is the environment of every chat process: the caller's CHAT_*
// variables removed, the benchmark's JWT secret, warnings only, and the
// per-user rate limit raised (publishers send far more than 10 msg/s).
func chatEnv() []string {
	return cleanEnv("CHAT_JWT_SECRET="+secret, "CHAT_EDGE_RATE=1000000", "CHAT_EDGE_RATE_BURST=1000000", "CHAT_LOG_LEVEL=warn")
}

func waitHTTP(addr, path string, d time.Duration) error {
	deadline := time.Now().Add(d)
	var last string
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + addr + path)
		if err == nil {
			var b bytes.Buffer
			b.ReadFrom(resp.Body)
			resp.Body.Close()
			if resp.StatusCode < 500 {
				return nil
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(b.String()))
		} else {
			last = err.Error()
		}
		time.Sleep(100 * time.Millisecond)
	}
	return errors.New(addr + path + " not ready after " + d.String() + ": " + last)
}

// settle waits until the tree's CPU use stays under 2 % of a core for a
// second (start-up work done), at most d.
func settle(s *server, d time.Duration) {
	deadline := time.Now().Add(d)
	prev := s.usage(false).cpu
	for time.Now().Before(deadline) {
		time.Sleep(time.Second)
		cur := s.usage(false).cpu
		if cur-prev <= 2*clockTick {
			return
		}
		prev = cur
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
