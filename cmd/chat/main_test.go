package main

import (
	"bytes"
	"context"
	"fmt"
	"github.com/chatsys/chat/pkg/testutil"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/chatsys/chat/pkg/auth"
)

// dataDir returns a fresh data directory the unprivileged PostgreSQL user can
// enter (t.TempDir's parent is private to the test user).
func dataDir(t testing.TB) string {
	t.Helper()
	d := t.TempDir()
	os.Chmod(filepath.Dir(d), 0o755)
	os.Chmod(d, 0o755)
	return d
}

func freeAddr(t testing.TB) string {
	t.Helper()
	return testutil.FreePort(t)
}

// server is one in-process run of `chat -target=all`.
type server struct {
	addr   string
	cancel context.CancelFunc
	exit   chan int
}

func startAll(t testing.TB, dataDir string, extra ...string) *server {
	t.Helper()
	var stderr io.Writer = io.Discard
	if testing.Verbose() {
		stderr = os.Stderr
	}
	return startAllLogging(t, dataDir, stderr, extra...)
}

// startAllLogging is startAll with the process's log going to stderr.
func startAllLogging(t testing.TB, dataDir string, stderr io.Writer, extra ...string) *server {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &server{cancel: cancel, exit: make(chan int, 1)}
	readyc := make(chan string, 1)
	args := append([]string{"-target=all", "-data.dir=" + dataDir, "-http.addr=127.0.0.1:0",
		"-broker.addr=" + freeAddr(t), "-edge.drain-duration=100ms", "-log.level=warn"}, extra...)
	go func() { s.exit <- run(ctx, args, io.Discard, stderr, func(a string) { readyc <- a }) }()
	select {
	case s.addr = <-readyc:
	case code := <-s.exit:
		t.Fatalf("chat exited with %d before it was ready", code)
	case <-time.After(90 * time.Second): // initdb, PostgreSQL, migrations and every component, under -race
		cancel()
		t.Fatal("chat not ready within 90s")
	}
	t.Cleanup(s.stop)
	return s
}

func (s *server) stop() {
	if s.cancel == nil {
		return
	}
	s.cancel()
	<-s.exit
	s.cancel = nil
}

func tokenFromDataDir(t testing.TB, dir, user string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, auth.SecretFile))
	if err != nil {
		t.Fatalf("single-machine mode did not generate %s: %v", auth.SecretFile, err)
	}
	tok, err := auth.NewHS256Minter(strings.TrimSpace(string(b)), "").Mint(user, false, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func dialWS(t testing.TB, addr, tok string) *websocket.Conn {
	t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/ws?token="+tok, nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { ws.Close() })
	return ws
}

func readType(t testing.TB, ws *websocket.Conn, typ string) map[string]any {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ws.SetReadDeadline(deadline)
		var m map[string]any
		if err := ws.ReadJSON(&m); err != nil {
			t.Fatalf("waiting for %s: %v", typ, err)
		}
		if typ == "" || m["type"] == typ {
			return m
		}
	}
}

func TestAllInOneResumesAcrossRestart(t *testing.T) {
	dir := dataDir(t)
	s := startAll(t, dir)
	// Readiness includes a bounded database probe: on a loaded machine the
	// first ones may miss their bound, so wait for it.
	waitFor(t, 20*time.Second, "/readyz 200", func() bool {
		resp, err := http.Get("http://" + s.addr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	for _, path := range []string{"/healthz", "/readyz", "/metrics", "/"} {
		resp, err := http.Get("http://" + s.addr + path)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET %s = %v, %v; want 200", path, resp, err)
		}
		resp.Body.Close()
	}
	alice := dialWS(t, s.addr, tokenFromDataDir(t, dir, "alice"))
	bob := dialWS(t, s.addr, tokenFromDataDir(t, dir, "bob"))
	for _, ws := range []*websocket.Conn{alice, bob} {
		ws.WriteJSON(map[string]string{"type": "join", "room": "general"})
		readType(t, ws, "joined")
	}
	alice.WriteJSON(map[string]string{"type": "chat", "room": "general", "content": "before restart", "client_id": "a1"})
	readType(t, alice, "ack")
	since := readType(t, bob, "chat")["pos"].(string)

	// Restart the whole server on the same data directory.
	s.stop()
	s = startAll(t, dir)
	alice = dialWS(t, s.addr, tokenFromDataDir(t, dir, "alice"))
	const n = 5
	for i := 0; i < n; i++ {
		alice.WriteJSON(map[string]string{"type": "chat", "room": "general", "content": fmt.Sprint("after ", i), "client_id": fmt.Sprint("b", i)})
		readType(t, alice, "ack")
	}
	bob = dialWS(t, s.addr, tokenFromDataDir(t, dir, "bob"))
	bob.WriteJSON(map[string]string{"type": "join", "room": "general", "since": since})
	if j := readType(t, bob, "joined"); j["recovered"] != true {
		t.Fatalf("joined after restart = %v, want recovered:true", j)
	}
	for i := 0; i < n; i++ {
		if m := readType(t, bob, "chat"); m["content"] != fmt.Sprint("after ", i) {
			t.Fatalf("resumed message %d = %v, want %q", i, m["content"], fmt.Sprint("after ", i))
		}
	}
}

func TestTargets(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want int
	}{
		{"unknown target", []string{"-target=nope"}, 1},
		{"bad flag", []string{"-no-such-flag"}, 2},
		{"bad env value", []string{"-kafka.rooms-partitions=x"}, 2},
		{"print config", []string{"-print-config"}, 0},
		{"analytics from JSON lines", []string{"-target=analytics", "-analytics.from=2026-11-01", "-analytics.input=testdata/events.jsonl"}, 0},
		{"analytics bad range", []string{"-target=analytics", "-analytics.from=2026-11-02", "-analytics.to=2026-11-01", "-analytics.input=testdata/events.jsonl"}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			args := append([]string{"-data.dir=" + t.TempDir(), "-http.addr=127.0.0.1:0"}, tc.args...)
			if got := run(context.Background(), args, &out, io.Discard, nil); got != tc.want {
				t.Fatalf("run(%v) = %d, want %d", tc.args, got, tc.want)
			}
		})
	}
}

func TestEnvFallbackAndRedaction(t *testing.T) {
	t.Setenv("CHAT_HTTP_ADDR", "127.0.0.1:9999")
	t.Setenv("CHAT_JWT_SECRET", "super-secret-value-123")
	var out bytes.Buffer
	if code := run(context.Background(), []string{"-print-config"}, &out, io.Discard, nil); code != 0 {
		t.Fatalf("print-config exited %d", code)
	}
	if !strings.Contains(out.String(), "http.addr=127.0.0.1:9999") {
		t.Fatalf("CHAT_HTTP_ADDR not applied:\n%s", out.String())
	}
	if strings.Contains(out.String(), "super-secret") {
		t.Fatalf("secret printed:\n%s", out.String())
	}
}

func TestReadinessTurnsFalseOnShutdown(t *testing.T) {
	dir := dataDir(t)
	s := startAll(t, dir, "-shutdown-delay=1s")
	ws := dialWS(t, s.addr, tokenFromDataDir(t, dir, "alice"))
	var last string
	status := func() int {
		resp, err := http.Get("http://" + s.addr + "/readyz")
		if err != nil {
			return 0
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		last = string(b)
		return resp.StatusCode
	}
	// Started is not yet ready: the checks (history's lag, the router's
	// presence rebuild) may take a moment.
	deadline := time.Now().Add(30 * time.Second)
	for status() != 200 {
		if time.Now().After(deadline) {
			t.Fatalf("/readyz not 200 within 30s of the start: %s", last)
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.cancel() // SIGTERM
	deadline = time.Now().Add(5 * time.Second)
	for status() != http.StatusServiceUnavailable {
		if time.Now().After(deadline) {
			t.Fatal("/readyz did not turn 503 during the shutdown delay")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Then the connection is told to reconnect (1001) and the process exits.
	ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		if _, _, err := ws.ReadMessage(); err != nil {
			if !websocket.IsCloseError(err, websocket.CloseGoingAway) {
				t.Fatalf("connection ended with %v, want close 1001", err)
			}
			break
		}
	}
	var code int
	select {
	case code = <-s.exit:
	case <-time.After(30 * time.Second):
		t.Fatal("chat did not exit within 30s of SIGTERM")
	}
	s.cancel = nil
	if code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
}

func TestSeparateBrokerAndEdgeProcesses(t *testing.T) {
	dir := dataDir(t)
	brokerAddr := freeAddr(t)
	startTarget := func(args ...string) *server {
		t.Helper()
		ctx, cancel := context.WithCancel(context.Background())
		s := &server{cancel: cancel, exit: make(chan int, 1)}
		readyc := make(chan string, 1)
		go func() {
			s.exit <- run(ctx, append([]string{"-data.dir=" + dir, "-http.addr=127.0.0.1:0", "-log.level=warn", "-edge.drain-duration=100ms"}, args...),
				io.Discard, io.Discard, func(a string) { readyc <- a })
		}()
		select {
		case s.addr = <-readyc:
		case code := <-s.exit:
			t.Fatalf("%v exited with %d", args, code)
		case <-time.After(30 * time.Second):
			cancel()
			t.Fatalf("%v not ready within 30s", args)
		}
		t.Cleanup(s.stop)
		return s
	}
	startTarget("-target=broker", "-broker.addr="+brokerAddr)
	t.Setenv("CHAT_KAFKA_BROKERS", brokerAddr)
	e1 := startTarget("-target=edge", "-edge.id=e1")
	e2 := startTarget("-target=edge", "-edge.id=e2")
	a := dialWS(t, e1.addr, tokenFromDataDir(t, dir, "alice"))
	b := dialWS(t, e2.addr, tokenFromDataDir(t, dir, "bob"))
	for _, ws := range []*websocket.Conn{a, b} {
		ws.WriteJSON(map[string]string{"type": "join", "room": "general"})
		readType(t, ws, "joined")
	}
	a.WriteJSON(map[string]string{"type": "chat", "room": "general", "content": "across processes", "client_id": "x1"})
	if m := readType(t, b, "chat"); m["content"] != "across processes" {
		t.Fatalf("bob on edge 2 got %v", m)
	}
}
