package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/chatsys/chat/pkg/auth"
	"github.com/chatsys/chat/pkg/embedkafka"
	"github.com/chatsys/chat/pkg/lifecycle"
	"github.com/chatsys/chat/pkg/pgutil/pgtest"
	"github.com/chatsys/chat/services/analytics"
	"github.com/chatsys/chat/services/edge"
	"github.com/chatsys/chat/services/history"
	"github.com/chatsys/chat/services/router"

	"net/http"
)

// startServer runs a broker and an edge whose secret lives in dataDir, as
// single-machine mode does, and returns the edge's address.
func startServer(t *testing.T, dataDir string) string {
	t.Helper()
	secret, err := auth.LoadOrCreateSecret(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	b := embedkafka.New(embedkafka.Config{Addr: "127.0.0.1:0"}, nil)
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Stop(context.Background()) })
	cfg := edge.Defaults()
	cfg.Kafka.Brokers = b.Addr()
	cfg.Auth = auth.Config{Secret: secret}
	cfg.DrainDuration = 50 * time.Millisecond
	e, err := edge.New(cfg, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	hcfg := history.Defaults()
	hcfg.Kafka, hcfg.Auth, hcfg.DatabaseURL = cfg.Kafka, cfg.Auth, pgtest.NewDatabase(t)
	hcfg.BatchWait = 10 * time.Millisecond
	hist, err := history.New(hcfg, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	acfg := analytics.Config{Kafka: cfg.Kafka, Auth: cfg.Auth, DatabaseURL: hcfg.DatabaseURL}
	sched, err := analytics.NewScheduler(acfg, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	rcfg := router.Defaults()
	rcfg.Kafka, rcfg.Auth = cfg.Kafka, cfg.Auth
	rt, err := router.New(rcfg, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	e.Routes(mux)
	hist.Routes(mux)
	sched.Routes(mux)
	rt.Routes(mux)
	h := &lifecycle.HTTPServer{Addr: "127.0.0.1:0", Handler: mux}
	ctx, cancel := context.WithCancel(context.Background())
	r := &lifecycle.Runner{}
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx, h, hist, rt, e) }()
	deadline := time.Now().Add(60 * time.Second)
	for !r.Ready() {
		if time.Now().After(deadline) {
			t.Fatal("server not ready")
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Cleanup(func() { cancel(); <-done })
	return h.ListenAddr()
}

// TestMain runs the tests without the caller's CHAT_* and OTEL_* variables,
// which chatctl (and the services it talks to) would pick up.
func TestMain(m *testing.M) {
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "CHAT_") || strings.HasPrefix(k, "OTEL_") {
			os.Unsetenv(k)
		}
	}
	pgtest.Main(m)
}

// TestHelpShowsNoSecrets: CHAT_TOKEN and CHAT_JWT_SECRET are used, but
// never printed as flag defaults by --help.
func TestHelpShowsNoSecrets(t *testing.T) {
	const secret, token = "env-secret-never-printed-0123", "env.token.never-printed"
	t.Setenv("CHAT_JWT_SECRET", secret)
	t.Setenv("CHAT_TOKEN", token)
	for _, args := range [][]string{{"--help"}, {"token", "--help"}, {"chat", "--help"}, {"history", "--help"}} {
		out, err := ctl(t, "", args...)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(out, secret) || strings.Contains(out, token) {
			t.Fatalf("chatctl %v printed a secret:\n%s", args, out)
		}
		if !strings.Contains(out, "CHAT_JWT_SECRET") {
			t.Fatalf("chatctl %v does not mention CHAT_JWT_SECRET:\n%s", args, out)
		}
	}
	// The secret from the environment still signs tokens.
	tok, err := ctl(t, "", "token", "--user", "alice", "--data-dir", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	v, err := auth.NewVerifier(auth.Config{Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	if id, err := v.Verify(strings.TrimSpace(tok)); err != nil || id.Username != "alice" {
		t.Fatalf("token from CHAT_JWT_SECRET: %v %v", id, err)
	}
	// And a --jwt-secret flag wins over it.
	tok, _ = ctl(t, "", "token", "--user", "alice", "--jwt-secret", "flag-secret-0123456789")
	if _, err := v.Verify(strings.TrimSpace(tok)); err == nil {
		t.Fatal("--jwt-secret did not override CHAT_JWT_SECRET")
	}
	// An empty --jwt-secret (an unset variable) is refused, not replaced.
	if out, err := ctl(t, "", "token", "--user", "alice", "--jwt-secret", ""); err == nil || !strings.Contains(err.Error(), "--jwt-secret is empty") {
		t.Fatalf("--jwt-secret \"\": %q, %v; want refused", out, err)
	}
}

func ctl(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	root := newRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(io.Discard)
	root.SetIn(strings.NewReader(stdin))
	root.SetArgs(args)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := root.ExecuteContext(ctx)
	return out.String(), err
}

func TestTokenAnnounceAndChat(t *testing.T) {
	dir := t.TempDir()
	addr := startServer(t, dir)
	server := "http://" + addr

	tok, err := ctl(t, "", "token", "--user", "alice", "--data-dir", dir)
	if err != nil {
		t.Fatal(err)
	}
	ws, resp, err := websocket.DefaultDialer.Dial("ws://"+addr+"/ws", http.Header{"Authorization": {"Bearer " + strings.TrimSpace(tok)}})
	if err != nil {
		t.Fatalf("the server refused chatctl's token: %v %v", err, resp)
	}
	defer ws.Close()
	ws.WriteJSON(map[string]string{"type": "join", "room": "general"})
	next := func(typ string) map[string]any {
		for {
			ws.SetReadDeadline(time.Now().Add(10 * time.Second))
			var m map[string]any
			if err := ws.ReadJSON(&m); err != nil {
				t.Fatalf("waiting for %s: %v", typ, err)
			}
			if m["type"] == typ {
				return m
			}
		}
	}
	next("joined")

	if out, err := ctl(t, "", "announce", "hello all", "--room", "general", "--server", server, "--data-dir", dir); err != nil || !strings.HasPrefix(out, "announced ") {
		t.Fatalf("announce = %q, %v", out, err)
	}
	if m := next("system"); m["content"] != "hello all" {
		t.Fatalf("announcement = %v", m)
	}

	sentDay := time.Now().UTC().Format("2006-01-02")
	if _, err := ctl(t, "line one\nline two\n", "chat", "general", "--user", "bob", "--server", server, "--data-dir", dir); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"line one", "line two"} {
		if m := next("chat"); m["content"] != want || m["username"] != "bob" {
			t.Fatalf("chat from chatctl = %v, want bob: %q", m, want)
		}
	}

	// History and search see what was sent.
	var out string
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(out, "line two") && time.Now().Before(deadline) {
		out, err = ctl(t, "", "history", "general", "--limit", "10", "--server", server, "--data-dir", dir)
		if err != nil && !strings.Contains(err.Error(), "not_found") { // not_found: no row of the room stored yet
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if i, j := strings.Index(out, "line one"), strings.Index(out, "line two"); i < 0 || j < i || !strings.Contains(out, "<bob>") {
		t.Fatalf("chatctl history =\n%s\nwant bob's two lines, oldest first", out)
	}
	out, err = ctl(t, "", "search", "two", "--server", server, "--data-dir", dir)
	if err != nil || !strings.Contains(out, "#general <bob> line two") || strings.Contains(out, "line one") {
		t.Fatalf("chatctl search two = %q, %v", out, err)
	}
	if _, err := ctl(t, "", "history", "general", "--limit", "500", "--server", server, "--data-dir", dir); err == nil || !strings.Contains(err.Error(), "invalid_limit") {
		t.Fatalf("history --limit 500: error %v, want invalid_limit", err)
	}

	// Analytics over today: bob wrote two lines, alice's announcement is not a chat message.
	// (Skipped when the run crossed midnight UTC: the lines are dated the day before.)
	if today := time.Now().UTC().Format("2006-01-02"); today == sentDay {
		outDir := t.TempDir()
		out, err = ctl(t, "", "analytics", "--from", today, "--to", today, "--out", outDir, "--server", server, "--data-dir", dir)
		if err != nil || !strings.Contains(out, "2 messages on 1 days") || !strings.Contains(out, "1 users") {
			t.Fatalf("chatctl analytics = %q, %v", out, err)
		}
		if b, _ := os.ReadFile(filepath.Join(outDir, "dau.csv")); string(b) != "date,users\n"+today+",1\n" {
			t.Fatalf("dau.csv = %q", b)
		}
		if _, err := ctl(t, "", "analytics", "--from", "yesterday", "--server", server, "--data-dir", dir); err == nil || !strings.Contains(err.Error(), "invalid_range") {
			t.Fatalf("analytics --from yesterday: %v, want invalid_range", err)
		}
		// A range without messages says where the messages are.
		if out, err := ctl(t, "", "analytics", "--from", "2020-01-01", "--server", server, "--data-dir", dir); err != nil ||
			!strings.Contains(out, "0 messages on 0 days") || !strings.Contains(out, "no messages dated 2020-01-01") || !strings.Contains(out, today) {
			t.Fatalf("chatctl analytics of an empty range = %q, %v; want the note naming the log's dates", out, err)
		}
	}

	// Presence and a private message: alice (the WebSocket above) is online.
	deadline = time.Now().Add(10 * time.Second)
	for !strings.Contains(out, "alice: online (1 connections)") {
		if time.Now().After(deadline) {
			t.Fatalf("chatctl presence alice = %q", out)
		}
		out, _ = ctl(t, "", "presence", "alice", "nobody", "--server", server, "--data-dir", dir)
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(out, "nobody: offline") {
		t.Fatalf("presence of nobody: %q", out)
	}
	// bob's chatctl chat above has closed: his leave reaches the router soon.
	deadline = time.Now().Add(10 * time.Second)
	for {
		out, err = ctl(t, "", "presence", "--room", "general", "--server", server, "--data-dir", dir)
		if err == nil && out == "#general: alice\n" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("chatctl presence --room general = %q, %v", out, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if out, err = ctl(t, "", "dm", "alice", "psst", "--user", "bob", "--server", server, "--data-dir", dir); err != nil || !strings.HasPrefix(out, "sent ") {
		t.Fatalf("chatctl dm = %q, %v", out, err)
	}
	if m := next("private"); m["content"] != "psst" || m["username"] != "bob" {
		t.Fatalf("alice got %v, want bob's DM", m)
	}

	// A token from another secret is refused.
	other := t.TempDir()
	os.WriteFile(filepath.Join(other, auth.SecretFile), []byte("a-completely-different-secret\n"), 0o600)
	bad, _ := ctl(t, "", "token", "--user", "eve", "--data-dir", other)
	_, resp, _ = websocket.DefaultDialer.Dial("ws://"+addr+"/ws?token="+strings.TrimSpace(bad), nil)
	if resp == nil || resp.StatusCode != 401 {
		t.Fatalf("foreign token: %v, want 401", resp)
	}
}

// TestChatReturnsAfterItsReader: when chat returns, its connection's reader
// goroutine has ended: the output (and the resume position it keeps, read
// by the next connection's join) is no longer written. Run with -race: out
// is read without synchronisation right after chat returns.
func TestChatReturnsAfterItsReader(t *testing.T) {
	dir := t.TempDir()
	addr := startServer(t, dir)
	m, err := (&globals{dataDir: dir}).minter()
	if err != nil {
		t.Fatal(err)
	}
	aliceTok, _ := m.Mint("alice", false, time.Hour)
	bobTok, _ := m.Mint("bob", false, time.Hour)
	alice, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/ws", http.Header{"Authorization": {"Bearer " + aliceTok}})
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Close()
	alice.WriteJSON(map[string]string{"type": "join", "room": "general"})
	waitFrame(t, alice, func(m map[string]any) bool { return m["type"] == "joined" })

	for round := 0; round < 3; round++ {
		in, lines := io.Pipe()
		var out bytes.Buffer // a plain buffer: read below without a lock
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- chat(ctx, "http://"+addr, bobTok, "general", in, &out) }()
		line := "from bob " + strconv.Itoa(round)
		io.WriteString(lines, line+"\n")
		waitFrame(t, alice, func(m map[string]any) bool { return m["type"] == "chat" && m["content"] == line })
		// Keep bob's reader busy while chat ends.
		for i := 0; i < 10; i++ { // within the edge's rate limit
			alice.WriteJSON(map[string]string{"type": "chat", "room": "general", "content": "busy " + strconv.Itoa(i), "client_id": "b" + strconv.Itoa(round*100+i)})
		}
		cancel()
		var err error
		select {
		case err = <-done:
		case <-time.After(20 * time.Second):
			t.Fatal("chat did not return within 20s of its context's end")
		}
		got := out.String()
		lines.Close()
		if err != nil {
			t.Fatalf("chat = %v", err)
		}
		if !strings.Contains(got, "* connected as bob") {
			t.Fatalf("chat printed %q", got)
		}
		// Drain alice's acks and echoes before the next round.
		waitFrame(t, alice, func(m map[string]any) bool { return m["client_id"] == "b"+strconv.Itoa(round*100+9) })
	}
}

// waitFrame reads ws until a frame satisfies ok, within 10s.
func waitFrame(t *testing.T, ws *websocket.Conn, ok func(map[string]any) bool) map[string]any {
	t.Helper()
	ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		var m map[string]any
		if err := ws.ReadJSON(&m); err != nil {
			t.Fatalf("waiting for a frame: %v", err)
		}
		if ok(m) {
			return m
		}
	}
}

func TestTokenURL(t *testing.T) {
	const secret = "url-secret-0123456789abcdef"
	out, err := ctl(t, "", "token", "--user", "alice", "--url", "--jwt-secret", secret, "--server", "http://127.0.0.1:9999/")
	if err != nil {
		t.Fatal(err)
	}
	tok, ok := strings.CutPrefix(strings.TrimSpace(out), "http://127.0.0.1:9999/#token=")
	if !ok {
		t.Fatalf("chatctl token --url = %q, want http://127.0.0.1:9999/#token=…", out)
	}
	v, err := auth.NewVerifier(auth.Config{Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	if id, err := v.Verify(tok); err != nil || id.Username != "alice" {
		t.Fatalf("the link's token: %v %v", id, err)
	}
}
