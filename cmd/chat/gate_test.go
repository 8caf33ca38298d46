package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/chatsys/chat/pkg/auth"
	"github.com/chatsys/chat/pkg/testutil"
)

// syncBuffer is a log destination tests read while the process writes.
type syncBuffer = testutil.SyncBuffer

// startRun runs chat with args in this process without waiting for it to
// be ready; the log goes to the returned buffer.
func startRun(t *testing.T, args ...string) (*server, *syncBuffer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &server{cancel: cancel, exit: make(chan int, 1)}
	log := &syncBuffer{}
	go func() { s.exit <- run(ctx, args, io.Discard, log, nil) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-s.exit:
		case <-time.After(60 * time.Second):
			t.Error("chat did not exit within 60s")
		}
	})
	return s, log
}

type httpAnswer struct {
	status int
	code   string
	body   string
}

func call(t *testing.T, method, url, tok string) httpAnswer {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader("{}"))
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return httpAnswer{body: err.Error()}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var e struct{ Error struct{ Code string } }
	json.Unmarshal(b, &e)
	return httpAnswer{resp.StatusCode, e.Error.Code, string(b)}
}

// TestRoutesUnavailableUntilStarted: with a broker that cannot be reached,
// the services never finish starting; their routes (WebSocket upgrade
// included) answer 503 unavailable instead of reaching a half-initialised
// service, while /healthz answers and /readyz says not ready.
func TestRoutesUnavailableUntilStarted(t *testing.T) {
	for _, tc := range []struct {
		target string
		api    [][2]string // method, path
	}{
		{"edge", [][2]string{{"POST", "/v1/admin/announce"}, {"GET", "/"}}},
		// A database that does not answer yet: history waits for it.
		{"history", [][2]string{{"GET", "/v1/rooms/general/messages"}, {"GET", "/v1/unread"}}},
		{"all", [][2]string{{"POST", "/v1/admin/announce"}, {"GET", "/v1/rooms/general/messages"}, {"GET", "/v1/dm"},
			{"GET", "/v1/search?q=x"}, {"GET", "/v1/presence?user=alice"}, {"GET", "/v1/rooms/general/members"}, {"POST", "/v1/admin/analytics"}}},
	} {
		t.Run(tc.target, func(t *testing.T) {
			dir := dataDir(t)
			addr := freeAddr(t)
			args := []string{"-target=" + tc.target, "-data.dir=" + dir, "-http.addr=" + addr, "-kafka.brokers=" + freeAddr(t), "-log.level=debug"}
			if tc.target == "history" {
				args = append(args, "-database.url=postgres://chat@"+freeAddr(t)+"/chat?sslmode=disable", "-jwt.secret=gate-test-secret-0123456789")
			}
			s, log := startRun(t, args...)
			waitFor(t, 30*time.Second, "/healthz", func() bool {
				select {
				case code := <-s.exit:
					t.Fatalf("chat exited with %d:\n%s", code, log)
				default:
				}
				return call(t, "GET", "http://"+addr+"/healthz", "").status == 200
			})
			if tc.target == "all" {
				// PostgreSQL up, history half-way through its Start (it
				// has its database, not the broker).
				waitFor(t, 60*time.Second, "postgres started", func() bool {
					return strings.Contains(log.String(), `msg="component started" component=postgres`)
				})
			}
			var tok string
			if tc.target == "history" {
				waitFor(t, 30*time.Second, "history retrying the database", func() bool {
					return strings.Contains(log.String(), "database not reachable yet; retrying")
				})
				tok, _ = auth.NewHS256Minter("gate-test-secret-0123456789", "").Mint("root", true, time.Hour)
			} else {
				tok = tokenFromDataDir(t, dir, "root")
			}

			if tc.target != "history" { // it serves no /ws
				ws, resp, err := websocket.DefaultDialer.Dial("ws://"+addr+"/ws?token="+tok, nil)
				if err == nil {
					ws.Close()
					t.Fatal("WebSocket upgrade accepted before the edge started")
				}
				if !errors.Is(err, websocket.ErrBadHandshake) || resp == nil || resp.StatusCode != 503 {
					t.Fatalf("upgrade before start: %v %v, want 503", resp, err)
				}
				var e struct {
					Error struct{ Code, Message string }
				}
				json.NewDecoder(resp.Body).Decode(&e)
				resp.Body.Close()
				if e.Error.Code != "unavailable" || e.Error.Message == "" {
					t.Fatalf("upgrade before start answered %+v, want code unavailable", e)
				}
			}
			for _, r := range tc.api {
				if a := call(t, r[0], "http://"+addr+r[1], tok); a.status != 503 || a.code != "unavailable" {
					t.Errorf("%s %s before start = %d %s, want 503 unavailable", r[0], r[1], a.status, a.body)
				}
			}
			if a := call(t, "GET", "http://"+addr+"/healthz", ""); a.status != 200 {
				t.Errorf("/healthz = %d, want 200", a.status)
			}
			if a := call(t, "GET", "http://"+addr+"/readyz", ""); a.status != 503 {
				t.Errorf("/readyz = %d, want 503", a.status)
			}
			if a := call(t, "GET", "http://"+addr+"/metrics", ""); a.status != 200 {
				t.Errorf("/metrics = %d, want 200", a.status)
			}
			if strings.Contains(log.String(), "panic") {
				t.Fatalf("panic in the log:\n%s", log)
			}
		})
	}
}

// TestWebSocketOutlivesHTTPTimeouts: with read, write and idle timeouts of
// 300ms, an idle keep-alive connection is closed, yet a WebSocket opened
// before keeps working both ways.
func TestWebSocketOutlivesHTTPTimeouts(t *testing.T) {
	dir := dataDir(t)
	s := startAll(t, dir, "-http.read-timeout=300ms", "-http.write-timeout=300ms", "-http.idle-timeout=300ms")
	ws := dialWS(t, s.addr, tokenFromDataDir(t, dir, "alice"))
	ws.WriteJSON(map[string]string{"type": "join", "room": "general"})
	readType(t, ws, "joined")

	// Once the server has closed an idle keep-alive connection opened
	// after the WebSocket, all three timeouts have passed for it.
	c, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /healthz: %v %v", resp, err)
	}
	io.Copy(io.Discard, resp.Body)
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("idle keep-alive connection: %v, want closed by the server (EOF)", err)
	}

	ws.WriteJSON(map[string]string{"type": "chat", "room": "general", "content": "after the timeouts", "client_id": "late1"})
	for acked, echoed := false, false; !acked || !echoed; { // in either order
		m := readType(t, ws, "")
		acked = acked || m["type"] == "ack" && m["client_id"] == "late1"
		echoed = echoed || m["type"] == "chat" && m["content"] == "after the timeouts"
	}

	// A token-sized header passes (an in-memory API, so the 300 ms write
	// timeout measures nothing but the header); a header over 64 KiB is
	// refused.
	if a := call(t, "GET", "http://"+s.addr+"/v1/presence?user=alice", tokenFromDataDir(t, dir, "alice")); a.status != 200 {
		t.Fatalf("presence = %d %s", a.status, a.body)
	}
	req, _ := http.NewRequest("GET", "http://"+s.addr+"/healthz", nil)
	req.Header.Set("X-Big", strings.Repeat("x", 100<<10))
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("100 KiB header: %v %v, want 431", resp, err)
	} else {
		resp.Body.Close()
	}
}
