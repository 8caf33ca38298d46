package edge_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/chatsys/chat/pkg/embedkafka"
	"github.com/chatsys/chat/services/edge"
)

func TestRoomMessageCrossesEdges(t *testing.T) {
	broker := testBroker(t)
	a := startEdge(t, broker)
	b := startEdge(t, broker)

	alice := dial(t, a.URL, "alice")
	bob := dial(t, b.URL, "bob")
	carol := dial(t, b.URL, "carol") // on bob's edge, not in the room
	alice.join("general")
	bob.join("general")
	carol.join("other")

	id := alice.say("general", "hello from A", "c1")
	got := bob.nextOf("chat")
	if got["id"] != id || got["content"] != "hello from A" || got["username"] != "alice" || got["room"] != "general" {
		t.Fatalf("bob got %v, want alice's message %s", got, id)
	}
	if pos, _ := got["pos"].(string); !strings.Contains(pos, ":") {
		t.Fatalf("delivered pos = %q, want <partition>:<offset>", pos)
	}
	if ts, _ := got["timestamp"].(string); len(ts) != len("2006-01-02T15:04:05.000Z") || !strings.HasSuffix(ts, "Z") {
		t.Fatalf("timestamp = %q, want RFC 3339 UTC with milliseconds", ts)
	}
	// carol is on the same edge as bob: had she been subscribed she would
	// have got the message before this marker in "other".
	alice.say("other", "marker", "c2")
	if m := carol.nextOf("chat"); m["content"] != "marker" {
		t.Fatalf("carol got %v, want only the marker of her room", m)
	}
}

// restartableBroker returns the address of an embedded broker on its own
// data directory and a function that starts it (again) there.
func restartableBroker(t *testing.T) (string, func() *embedkafka.Broker) {
	addr := freePort(t)
	dir := t.TempDir()
	return addr, func() *embedkafka.Broker {
		b := embedkafka.New(embedkafka.Config{Addr: addr, DataDir: dir}, nil)
		if err := b.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		return b
	}
}

func TestAckOnlyAfterDurableAppend(t *testing.T) {
	addr, startB := restartableBroker(t)
	br := startB()
	t.Cleanup(func() { br.Stop(context.Background()) })
	e := startEdge(t, addr, func(c *edge.Config) { c.Kafka.WriteTimeout = 1500 * time.Millisecond })
	alice := dial(t, e.URL, "alice")
	alice.join("general")
	alice.say("general", "before", "c1")

	br.Stop(context.Background())
	alice.send(map[string]any{"type": "chat", "room": "general", "content": "while down", "client_id": "c2"})
	for {
		m := alice.next()
		if m["type"] == "ack" {
			t.Fatalf("got %v while the broker was down, want no ack", m)
		}
		if m["type"] == "error" {
			if m["code"] != "unavailable" || m["client_id"] != "c2" {
				t.Fatalf("error = %v, want unavailable for c2", m)
			}
			break
		}
	}

	br = startB()
	// The producer reconnects by itself; the client retries as it would.
	deadline := time.Now().Add(20 * time.Second)
	for i := 0; ; i++ {
		cid := fmt.Sprintf("retry-%d", i)
		alice.send(map[string]any{"type": "chat", "room": "general", "content": "after", "client_id": cid})
		m := alice.next()
		for m["type"] == "chat" {
			m = alice.next()
		}
		if m["type"] == "ack" && m["client_id"] == cid {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no ack within 20s after the broker came back; last frame %v", m)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// A resend after unavailable is the same event again, and is not counted
// by the rate limit: with the user's whole bucket spent by the first
// attempt, the resend is acknowledged, not refused (a refusal used to make
// the next resend a new event with a new id, a duplicate if the first
// attempt had landed).
func TestResendAfterUnavailableIsNotRateLimited(t *testing.T) {
	addr, startB := restartableBroker(t)
	br := startB()
	t.Cleanup(func() { br.Stop(context.Background()) })
	e := startEdge(t, addr, func(c *edge.Config) {
		c.Kafka.WriteTimeout = 1500 * time.Millisecond
		c.RatePerSecond, c.RateBurst = 0.001, 1
	})
	alice := dial(t, e.URL, "alice")
	alice.join("general")
	br.Stop(context.Background())
	frame := map[string]any{"type": "chat", "room": "general", "content": "once", "client_id": "r1"}
	alice.send(frame)
	if m := alice.nextOf("error"); m["code"] != "unavailable" || m["client_id"] != "r1" {
		t.Fatalf("error = %v, want unavailable for r1", m)
	}
	br = startB()
	var id string
	var echo map[string]any // the delivery may come before the ack
	deadline := time.Now().Add(20 * time.Second)
	for id == "" {
		alice.send(frame)
		for {
			m := alice.next()
			if m["type"] == "chat" && echo == nil {
				echo = m
				continue
			}
			if m["type"] == "ack" && m["client_id"] == "r1" {
				id = m["id"].(string)
				break
			}
			if m["type"] == "error" {
				if m["code"] != "unavailable" {
					t.Fatalf("resend: %v, want an ack (or unavailable while the producer reconnects)", m)
				}
				break
			}
		}
		if id == "" && time.Now().After(deadline) {
			t.Fatal("no ack for the resend within 20s of the broker's return")
		}
	}
	if echo == nil {
		echo = alice.nextOf("chat")
	}
	if echo["id"] != id {
		t.Fatalf("delivered %v, want the acknowledged id %s", echo, id)
	}
	// The bucket is still spent for new sends.
	alice.send(map[string]any{"type": "chat", "room": "general", "content": "new", "client_id": "r2"})
	alice.expectError("rate_limited")
}

func TestBadFramesGetErrorsAndConnectionSurvives(t *testing.T) {
	e := startEdge(t, testBroker(t))
	c := dial(t, e.URL, "alice")
	long := strings.Repeat("é", 4001)
	for _, tc := range []struct {
		name     string
		frame    string
		clientID string
	}{
		{"not json", `hello`, ""},
		{"truncated json", `{"type":"chat"`, ""},
		{"not an object", `["chat"]`, ""},
		{"null", `null`, ""},
		{"unknown type", `{"type":"dance","client_id":"x1"}`, "x1"},
		{"missing type", `{"room":"general"}`, ""},
		{"missing room", `{"type":"chat","content":"hi","client_id":"x2"}`, "x2"},
		{"mistyped room", `{"type":"chat","room":7,"content":"hi","client_id":"x3"}`, "x3"},
		{"mistyped content", `{"type":"chat","room":"general","content":{"a":1},"client_id":"x4"}`, "x4"},
		{"bad room name", `{"type":"chat","room":"Bad Room!","content":"hi","client_id":"x5"}`, "x5"},
		{"room name too long", `{"type":"join","room":"` + strings.Repeat("a", 65) + `"}`, ""},
		{"empty content", `{"type":"chat","room":"general","content":"","client_id":"x6"}`, "x6"},
		{"content too long", `{"type":"chat","room":"general","content":"` + long + `","client_id":"x7"}`, "x7"},
		{"missing client_id", `{"type":"chat","room":"general","content":"hi"}`, ""},
		{"bad since", `{"type":"join","room":"general","since":"abc"}`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c.send(tc.frame)
			m := c.next()
			if m["type"] != "error" || m["code"] != "invalid_message" {
				t.Fatalf("reply to %s = %v, want error invalid_message", tc.name, m)
			}
			if msg, _ := m["message"].(string); msg == "" {
				t.Errorf("error for %s has no message", tc.name)
			}
			if got, _ := m["client_id"].(string); got != tc.clientID {
				t.Errorf("error client_id = %q, want %q", got, tc.clientID)
			}
		})
	}
	// Exactly 4000 characters is fine, and the connection still works.
	c.join("general")
	c.send(map[string]any{"type": "chat", "room": "general", "content": strings.Repeat("é", 4000), "client_id": "ok1", "username": "mallory"})
	var acked, seen bool
	for !acked || !seen {
		m := c.next()
		switch m["type"] {
		case "ack":
			acked = m["client_id"] == "ok1"
		case "chat":
			if m["username"] != "alice" {
				t.Fatalf("username = %v, want the token's alice (spoofed mallory must be ignored)", m["username"])
			}
			seen = true
		case "error":
			t.Fatalf("valid frame after bad ones: %v", m)
		}
	}
}

func TestProtocolViolationsClose(t *testing.T) {
	e := startEdge(t, testBroker(t))
	for _, tc := range []struct {
		name string
		typ  int
		data []byte
		code int
	}{
		{"frame above read limit", websocket.TextMessage, []byte(`{"type":"chat","content":"` + strings.Repeat("x", 70<<10) + `"}`), websocket.CloseMessageTooBig},
		{"invalid utf-8", websocket.TextMessage, []byte("{\"type\":\"chat\",\"content\":\"\xff\xfe\"}"), websocket.CloseInvalidFramePayloadData},
		{"binary frame", websocket.BinaryMessage, []byte(`{"type":"join","room":"general"}`), websocket.CloseUnsupportedData},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, e.URL, "alice")
			if err := c.ws.WriteMessage(tc.typ, tc.data); err != nil {
				t.Fatal(err)
			}
			for {
				_, err := c.read(5 * time.Second)
				if err == nil {
					continue
				}
				var ce *websocket.CloseError
				if !errors.As(err, &ce) || ce.Code != tc.code {
					t.Fatalf("%s: read error %v, want close %d", tc.name, err, tc.code)
				}
				break
			}
		})
	}
}

func TestRateLimit(t *testing.T) {
	e := startEdge(t, testBroker(t), func(c *edge.Config) { c.RatePerSecond, c.RateBurst = 0.01, 5 }) // no refill during the test
	c := dial(t, e.URL, "alice")
	const n = 12
	for i := 0; i < n; i++ {
		c.send(map[string]any{"type": "chat", "room": "general", "content": "x", "client_id": fmt.Sprint("r", i)})
	}
	var acks, limited int
	for acks+limited < n {
		m := c.next()
		switch {
		case m["type"] == "ack":
			acks++
		case m["type"] == "error" && m["code"] == "rate_limited":
			limited++
		case m["type"] == "error":
			t.Fatalf("unexpected error %v", m)
		}
	}
	if acks != 5 || limited != n-5 {
		t.Fatalf("acks, rate_limited = %d, %d; want 5 acks (the burst) and the rest limited", acks, limited)
	}
	// A second connection of the same user shares the bucket.
	c2 := dial(t, e.URL, "alice")
	c2.send(map[string]any{"type": "chat", "room": "general", "content": "x", "client_id": "second"})
	if m := c2.nextOf("error"); m["code"] != "rate_limited" {
		t.Fatalf("second connection of a limited user got %v, want rate_limited", m)
	}
}

func TestHandshakeAuth(t *testing.T) {
	e := startEdge(t, testBroker(t))
	good := token(t, "alice", false)
	for _, tc := range []struct {
		name   string
		header http.Header
		query  string
		want   int
	}{
		{"missing", nil, "", http.StatusUnauthorized},
		{"expired", bearer(mintWith(t, testSecret, "alice", -time.Hour, "HS256")), "", http.StatusUnauthorized},
		{"wrong secret", bearer(mintWith(t, "another-secret-0123456789", "alice", time.Hour, "HS256")), "", http.StatusUnauthorized},
		{"alg none", bearer(noneToken("alice")), "", http.StatusUnauthorized},
		{"no exp", bearer(mintNoExp(t, "alice")), "", http.StatusUnauthorized},
		{"garbage", bearer("not.a.jwt"), "", http.StatusUnauthorized},
		{"bearer header", bearer(good), "", http.StatusSwitchingProtocols},
		{"query parameter", nil, "?token=" + good, http.StatusSwitchingProtocols},
		{"subprotocol", http.Header{"Sec-WebSocket-Protocol": {"chat.v1, bearer." + good}}, "", http.StatusSwitchingProtocols},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ws, resp, err := websocket.DefaultDialer.Dial(wsURL(e.URL)+tc.query, tc.header)
			if resp == nil {
				t.Fatalf("dial: %v", err)
			}
			if resp.StatusCode != tc.want {
				t.Fatalf("status = %d, want %d", resp.StatusCode, tc.want)
			}
			if ws != nil {
				defer ws.Close()
				if p := resp.Header.Get("Sec-WebSocket-Protocol"); strings.Contains(p, "bearer") {
					t.Fatalf("server echoed the token subprotocol: %q", p)
				}
			}
		})
	}
}

func TestSlowClientIsDroppedOthersKeepUp(t *testing.T) {
	e := startEdge(t, testBroker(t), func(c *edge.Config) {
		c.RatePerSecond, c.RateBurst = 1e6, 1e6
	})
	// The slow client has a tiny receive buffer and never reads.
	d := websocket.Dialer{NetDialContext: func(ctx context.Context, network, addr string) (netConn, error) {
		return dialSmallBuffer(ctx, network, addr)
	}}
	slowWS, _, err := d.Dial(wsURL(e.URL), http.Header{"Authorization": {"Bearer " + token(t, "slow", false)}})
	if err != nil {
		t.Fatal(err)
	}
	defer slowWS.Close()
	slowWS.WriteMessage(websocket.TextMessage, []byte(`{"type":"join","room":"flood"}`))
	fast := dial(t, e.URL, "fast")
	fast.join("flood")
	pub := dial(t, e.URL, "pub")
	eventually(t, 5*time.Second, "slow client joined", func() bool { return e.metric(t, "chat_edge_frames_received_total") >= 2 })

	// ~12 MB at about 1000 msg/s (4 MB/s): more than the 1 MiB queue plus
	// loopback socket buffers absorb (tcp_wmem max 4 MiB), and a rate a
	// reading client keeps up with even under the race detector.
	const n = 3000
	content := strings.Repeat("z", 3900)
	go func() {
		for i := 0; i < n; i++ {
			pub.ws.WriteMessage(websocket.TextMessage, []byte(fmt.Sprintf(`{"type":"chat","room":"flood","content":"%s","client_id":"f%d"}`, content, i)))
			time.Sleep(time.Millisecond)
		}
	}()
	fastDone := make(chan string, 1)
	go func() {
		for i := 0; i < n; i++ {
			m, err := fast.read(30 * time.Second)
			if err != nil {
				fastDone <- fmt.Sprintf("fast client: %v after %d messages", err, i)
				return
			}
			if m["type"] != "chat" {
				i--
				continue
			}
			if m["client_id"] != fmt.Sprint("f", i) {
				fastDone <- fmt.Sprintf("fast client message %d = %v, want f%d (in order, none lost)", i, m["client_id"], i)
				return
			}
		}
		fastDone <- ""
	}()
	defer func() {
		if msg := <-fastDone; msg != "" {
			t.Error(msg)
		}
	}()
	eventually(t, 20*time.Second, "slow client dropped", func() bool { return e.metric(t, "chat_edge_slow_clients_dropped_total") == 1 })
	// Reading now (within the write timeout), the slow client finds the
	// close code telling it to resume.
	for {
		slowWS.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, _, err := slowWS.ReadMessage(); err != nil {
			var ce *websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != int(edge.CloseSlowClient) {
				t.Fatalf("slow client: %v, want a close frame with %d (not a reset or a timeout)", err, edge.CloseSlowClient)
			}
			break
		}
	}
}

func TestAnnounce(t *testing.T) {
	e := startEdge(t, testBroker(t))
	alice := dial(t, e.URL, "alice")
	alice.join("general")
	bob := dial(t, e.URL, "bob") // in no room: gets only the broadcast

	post := func(tok, body string) int {
		req, _ := http.NewRequest("POST", e.URL+"/v1/admin/announce", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := post(token(t, "alice", false), `{"content":"hi"}`); got != http.StatusForbidden {
		t.Fatalf("announce by non-admin = %d, want 403", got)
	}
	if got := post(token(t, "root", true), `{"content":""}`); got != http.StatusBadRequest {
		t.Fatalf("empty announce = %d, want 400", got)
	}
	if got := post(token(t, "root", true), `{"content":"a\u0000b"}`); got != http.StatusBadRequest {
		t.Fatalf("announce with NUL = %d, want 400", got)
	}
	// Decoded as strictly as a frame.
	for _, body := range []string{`{"content":"a","room":"general","room":"x"}`, `{"Content":"hi"}`, `{"content":"hi"} {}`, `{"content":1}`} {
		if got := post(token(t, "root", true), body); got != http.StatusBadRequest {
			t.Fatalf("announce %s = %d, want 400", body, got)
		}
	}
	if got := post(token(t, "root", true), `{"content":"room news","room":"general"}`); got != http.StatusOK {
		t.Fatalf("room announce = %d, want 200", got)
	}
	if got := post(token(t, "root", true), `{"content":"all hands"}`); got != http.StatusOK {
		t.Fatalf("broadcast announce = %d, want 200", got)
	}
	// The two are in different partitions: either may come first.
	got := map[string]string{}
	for range 2 {
		m := alice.nextOf("system")
		content, _ := m["content"].(string)
		room, _ := m["room"].(string)
		got[content] = room
	}
	if room, ok := got["room news"]; !ok || room != "general" {
		t.Fatalf("alice got %v, want the room announcement in general", got)
	}
	if room, ok := got["all hands"]; !ok || room != "" {
		t.Fatalf("alice got %v, want the broadcast (no room)", got)
	}
	if m := bob.nextOf("system"); m["content"] != "all hands" {
		t.Fatalf("bob got %v, want only the broadcast", m)
	}
}

func TestDrainClosesWithGoingAway(t *testing.T) {
	e := startEdge(t, testBroker(t))
	cs := []*client{dial(t, e.URL, "a"), dial(t, e.URL, "b")}
	go e.stop()
	for _, c := range cs {
		for {
			_, err := c.read(5 * time.Second)
			if err == nil {
				continue
			}
			var ce *websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != websocket.CloseGoingAway {
				t.Fatalf("%s: %v, want close 1001", c.user, err)
			}
			break
		}
	}
}

func TestOriginAllowList(t *testing.T) {
	e := startEdge(t, testBroker(t), func(c *edge.Config) { c.AllowedOrigins = []string{"https://chat.example"} })
	host := strings.TrimPrefix(e.URL, "http://")
	for _, tc := range []struct {
		name, origin string
		want         int
	}{
		{"no origin (not a browser)", "", http.StatusSwitchingProtocols},
		{"same host", "http://" + host, http.StatusSwitchingProtocols},
		{"allowed", "https://chat.example", http.StatusSwitchingProtocols},
		{"foreign", "https://evil.example", http.StatusForbidden},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := bearer(token(t, "alice", false))
			if tc.origin != "" {
				h.Set("Origin", tc.origin)
			}
			ws, resp, _ := websocket.DefaultDialer.Dial(wsURL(e.URL), h)
			if ws != nil {
				ws.Close()
			}
			if resp == nil || resp.StatusCode != tc.want {
				t.Fatalf("origin %q: response %v, want status %d", tc.origin, resp, tc.want)
			}
			if tc.want == http.StatusForbidden {
				var body struct {
					Error struct{ Code, Message string }
				}
				if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || body.Error.Code != "forbidden" || body.Error.Message == "" {
					t.Fatalf("refused origin: body %+v (%v), want a JSON error with code forbidden", body, err)
				}
			}
		})
	}
	// A plain GET of /ws (no upgrade) is a JSON error too.
	req, _ := http.NewRequest("GET", e.URL+"/ws", nil)
	req.Header = bearer(token(t, "alice", false))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Error struct{ Code, Message string }
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != 400 || body.Error.Code != "invalid_request" {
		t.Fatalf("GET /ws without an upgrade: %d %+v (%v), want 400 invalid_request", resp.StatusCode, body, err)
	}
}

func TestSilentClientIsClosedAfterMissingPong(t *testing.T) {
	e := startEdge(t, testBroker(t), func(c *edge.Config) { c.PingInterval, c.PongTimeout = 200*time.Millisecond, time.Second })
	// A raw client that never reads never answers pings.
	ws, _, err := websocket.DefaultDialer.Dial(wsURL(e.URL), bearer(token(t, "mute", false)))
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	eventually(t, 5*time.Second, "connection opened", func() bool { return e.metric(t, "chat_edge_connections") == 1 })
	// A client that reads (and so answers pings) stays.
	alive := dial(t, e.URL, "alive")
	go func() {
		for {
			if _, err := alive.read(5 * time.Second); err != nil {
				return
			}
		}
	}()
	eventually(t, 10*time.Second, "silent connection closed", func() bool { return e.metric(t, "chat_edge_connections") == 1 })
	time.Sleep(1500 * time.Millisecond) // longer than a ping interval and its pong timeout
	if got := e.metric(t, "chat_edge_connections"); got != 1 {
		t.Fatalf("connections = %v, want 1 (the client answering pings)", got)
	}
}

// Pings are spread over the interval (each connection in its own slot), not
// sent to every connection at once: a burst of one ping per connection
// would hold up every append and delivery behind it.
func TestPingsAreSpreadOverTheInterval(t *testing.T) {
	e := startEdge(t, testBroker(t), func(c *edge.Config) { c.PingInterval, c.PongTimeout = time.Second, 2*time.Second })
	const n = 20
	var mu sync.Mutex
	var pings []time.Time
	perConn := make([]int, n)
	var start time.Time
	for i := range n {
		ws, _, err := websocket.DefaultDialer.Dial(wsURL(e.URL), bearer(token(t, fmt.Sprintf("p%d", i), false)))
		if err != nil {
			t.Fatal(err)
		}
		defer ws.Close()
		ws.SetPingHandler(func(data string) error {
			mu.Lock()
			if !start.IsZero() {
				pings = append(pings, time.Now())
				perConn[i]++
			}
			mu.Unlock()
			return ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
		})
		go func() {
			for {
				if _, _, err := ws.ReadMessage(); err != nil {
					return
				}
			}
		}()
	}
	mu.Lock()
	start = time.Now()
	mu.Unlock()
	// Every connection is pinged in every interval: four times in four.
	eventually(t, 20*time.Second, "four pings per connection", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return slices.Min(perConn) >= 4
	})
	mu.Lock()
	defer mu.Unlock()
	slices.SortFunc(pings, func(a, b time.Time) int { return a.Compare(b) })
	// The largest bunch within 50 ms, per interval (second) of the run. A
	// stall of this process (both ends are in it) bunches one interval;
	// pings not spread over the interval bunch in every one.
	bunched, intervals := 0, 0
	for w := start; w.Before(pings[len(pings)-1]); w = w.Add(time.Second) {
		most := 0
		for i, p := range pings {
			if p.Before(w) || !p.Before(w.Add(time.Second)) {
				continue
			}
			j := i
			for j < len(pings) && pings[j].Sub(p) < 50*time.Millisecond {
				j++
			}
			most = max(most, j-i)
		}
		intervals++
		// 20 connections in 10 slots of 100 ms: about 2 pings per slot.
		if most > n/2 {
			bunched++
		}
	}
	if bunched > intervals/2 {
		t.Fatalf("in %d of %d intervals more than %d of %d connections were pinged within 50 ms: the pings are not spread over the interval", bunched, intervals, n/2, n)
	}
}

// The labelled counters an operator's dashboards and alerts read exist
// at 0 from the start: "none yet" is not "no data".
func TestLabelledCountersStartAtZero(t *testing.T) {
	e := startEdge(t, testBroker(t))
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				have[mf.GetName()+"/"+l.GetValue()] = m.GetCounter().GetValue() == 0
			}
		}
	}
	for _, want := range []string{"chat_edge_errors_total/unavailable", "chat_edge_errors_total/invalid_message",
		"chat_edge_closes_total/4000", "chat_edge_closes_total/1008", "chat_edge_handshakes_total/unauthorized"} {
		if !have[want] {
			t.Errorf("%s: not exported at 0 by a fresh edge", want)
		}
	}
}
