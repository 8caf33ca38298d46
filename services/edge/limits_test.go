package edge_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/chatsys/chat/pkg/auth"
	"github.com/chatsys/chat/services/edge"
)

// A connection is closed with 1008 when its token expires; nothing it sends
// after that is appended.
func TestTokenExpiryClosesWith1008(t *testing.T) {
	e := startEdge(t, testBroker(t))
	tok, err := auth.NewHS256Minter(testSecret, "").Mint("alice", false, 4*time.Second) // exp is whole seconds: 3-4 s to join
	if err != nil {
		t.Fatal(err)
	}
	ws, _, err := websocket.DefaultDialer.Dial(wsURL(e.URL), http.Header{"Authorization": {"Bearer " + tok}})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	c := &client{t: t, ws: ws, user: "alice"}
	c.nextOf("welcome")
	c.join("general")
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := c.read(time.Until(deadline))
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.ClosePolicyViolation {
			t.Fatalf("read error %v, want close 1008 at the token's expiry", err)
		}
		if ce.Text == "" {
			t.Fatalf("close 1008 without a reason")
		}
		break
	}
}

// dialStatus opens a WebSocket as user with extra headers and returns the
// connection or the HTTP status and error code of a refused handshake.
func dialStatus(t *testing.T, base, user string, hdr http.Header) (*websocket.Conn, int, string) {
	t.Helper()
	h := http.Header{"Authorization": {"Bearer " + token(t, user, false)}}
	for k, v := range hdr {
		h[k] = v
	}
	ws, resp, err := websocket.DefaultDialer.Dial(wsURL(base), h)
	if err == nil {
		t.Cleanup(func() { ws.Close() })
		return ws, 101, ""
	}
	if resp == nil {
		t.Fatalf("dial: %v", err)
	}
	var body struct {
		Error struct{ Code string } `json:"error"`
	}
	json.NewDecoder(resp.Body).Decode(&body)
	return nil, resp.StatusCode, body.Error.Code
}

func TestConnectionLimitPerUser(t *testing.T) {
	e := startEdge(t, testBroker(t), func(c *edge.Config) { c.MaxConnsPerUser = 3 })
	var open []*websocket.Conn
	for i := 0; i < 3; i++ {
		ws, st, code := dialStatus(t, e.URL, "alice", nil)
		if st != 101 {
			t.Fatalf("connection %d: status %d %s, want 101", i+1, st, code)
		}
		open = append(open, ws)
	}
	if _, st, code := dialStatus(t, e.URL, "alice", nil); st != http.StatusTooManyRequests || code != "too_many_connections" {
		t.Fatalf("fourth connection: status %d code %q, want 429 too_many_connections", st, code)
	}
	if _, st, _ := dialStatus(t, e.URL, "bob", nil); st != 101 {
		t.Fatalf("another user: status %d, want 101", st)
	}
	open[0].Close()
	eventually(t, 10*time.Second, "a slot after a close", func() bool {
		ws, st, _ := dialStatus(t, e.URL, "alice", nil)
		if ws != nil {
			ws.Close()
		}
		return st == 101
	})
}

func TestConnectionLimitPerAddress(t *testing.T) {
	e := startEdge(t, testBroker(t), func(c *edge.Config) { c.MaxConnsPerIP = 2 })
	for _, u := range []string{"a1", "a2"} {
		if _, st, _ := dialStatus(t, e.URL, u, nil); st != 101 {
			t.Fatalf("%s: status %d, want 101", u, st)
		}
	}
	// X-Forwarded-For from an untrusted peer is ignored.
	if _, st, code := dialStatus(t, e.URL, "a3", http.Header{"X-Forwarded-For": {"203.0.113.9"}}); st != http.StatusTooManyRequests || code != "too_many_connections" {
		t.Fatalf("third from one address: status %d %q, want 429 too_many_connections", st, code)
	}

	// Behind a trusted proxy the forwarded address counts.
	p := startEdge(t, testBroker(t), func(c *edge.Config) {
		c.MaxConnsPerIP = 1
		c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	})
	xff := func(a string) http.Header { return http.Header{"X-Forwarded-For": {"198.51.100.1, " + a}} }
	if _, st, _ := dialStatus(t, p.URL, "b1", xff("203.0.113.1")); st != 101 {
		t.Fatalf("first client behind the proxy: %d", st)
	}
	if _, st, _ := dialStatus(t, p.URL, "b2", xff("203.0.113.2")); st != 101 {
		t.Fatalf("second client behind the proxy: %d", st)
	}
	if _, st, _ := dialStatus(t, p.URL, "b3", xff("203.0.113.1")); st != http.StatusTooManyRequests {
		t.Fatalf("second connection of 203.0.113.1: %d, want 429", st)
	}
}

// A frame header announcing a 2^63-byte payload gets a 1009 close frame,
// not a bare TCP close.
func TestHugeLengthHeaderGets1009(t *testing.T) {
	e := startEdge(t, testBroker(t))
	c := dial(t, e.URL, "alice")
	// FIN+text, mask bit + 127, then the 64-bit length 2^63, a masking key
	// and a few payload bytes.
	hdr := []byte{0x81, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 'x', 'y'}
	if _, err := c.ws.NetConn().Write(hdr); err != nil {
		t.Fatal(err)
	}
	for {
		_, err := c.read(10 * time.Second)
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.CloseMessageTooBig {
			t.Fatalf("read error %v, want close 1009", err)
		}
		return
	}
}

// While an edge drains (before its Run is cancelled, as the lifecycle runner
// does it), the connections not yet told to go away keep receiving.
func TestDrainKeepsDeliveringUntilEachClose(t *testing.T) {
	broker := testBroker(t)
	a := startEdge(t, broker, func(c *edge.Config) { c.DrainDuration = 20 * time.Second })
	b := startEdge(t, broker)
	first, second := dial(t, a.URL, "first"), dial(t, a.URL, "second")
	first.join("general")
	second.join("general")
	pub := dial(t, b.URL, "pub")
	drained := make(chan error, 1)
	go func() { drained <- a.Drain(context.Background()) }()
	// One of the two is told to go away at once, the other 10 s later.
	eventually(t, 5*time.Second, "the drain to start", func() bool { return a.Ready(context.Background()) != nil })
	pub.say("general", "during the drain", "d1")
	got := 0
	for _, c := range []*client{first, second} {
		for {
			m, err := c.read(25 * time.Second)
			if err != nil {
				var ce *websocket.CloseError
				if !errors.As(err, &ce) || ce.Code != websocket.CloseGoingAway {
					t.Fatalf("%s: %v, want close 1001", c.user, err)
				}
				break
			}
			if m["type"] == "chat" && m["content"] == "during the drain" {
				got++
			}
		}
	}
	if got == 0 {
		t.Fatal("no connection still open during the drain received the message")
	}
	if err := <-drained; err != nil {
		t.Fatal(err)
	}
}
