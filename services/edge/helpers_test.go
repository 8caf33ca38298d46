package edge_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/chatsys/chat/pkg/auth"
	"github.com/chatsys/chat/pkg/embedkafka"
	"github.com/chatsys/chat/pkg/testutil"
	"github.com/chatsys/chat/services/edge"
)

const testSecret = "test-secret-0123456789abcdef"

var topicSeq atomic.Int64

// testBroker returns the address of a Kafka-protocol broker for one test:
// the one TEST_KAFKA_BROKERS names, or an embedded broker on a free port.
func testBroker(t testing.TB) string {
	t.Helper()
	if b := os.Getenv("TEST_KAFKA_BROKERS"); b != "" {
		return b
	}
	b := embedkafka.New(embedkafka.Config{Addr: "127.0.0.1:0", DataDir: t.TempDir()}, nil)
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Stop(context.Background()) })
	return b.Addr()
}

type testEdge struct {
	*edge.Edge
	URL    string // http://127.0.0.1:port
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan error
	srv    *httptest.Server
	once   sync.Once
}

// startEdge starts an edge against broker with the test defaults, changed by
// mods, and stops it at cleanup.
func startEdge(t testing.TB, broker string, mods ...func(*edge.Config)) *testEdge {
	t.Helper()
	cfg := edge.Defaults()
	cfg.ID = fmt.Sprintf("edge-%d", topicSeq.Add(1))
	cfg.Kafka.Brokers = broker
	cfg.Kafka.RoomsPartitions = 4
	cfg.Kafka.RoomsTopic = topicFor(t) // unique per test; shared by the edges of one test
	cfg.Kafka.DirectTopic, cfg.Kafka.PresenceTopic, cfg.Kafka.DeliveriesTopic = topicFor(t)+".direct", topicFor(t)+".presence", topicFor(t)+".deliveries"
	cfg.Kafka.ACLTopic, cfg.Kafka.TypingTopic = topicFor(t)+".acl", topicFor(t)+".typing"
	cfg.Kafka.SmallPartitions, cfg.Kafka.DirectPartitions = 4, 4
	cfg.Auth = auth.Config{Secret: testSecret}
	cfg.DrainDuration = 200 * time.Millisecond
	for _, m := range mods {
		m(&cfg)
	}
	reg := prometheus.NewRegistry()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	e, err := edge.New(cfg, log, reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := e.Start(ctx); err != nil {
		t.Fatal(err)
	}
	te := &testEdge{Edge: e, reg: reg, cancel: cancel, done: make(chan error, 1)}
	go func() { te.done <- e.Run(ctx) }()
	mux := http.NewServeMux()
	e.Routes(mux)
	te.srv = httptest.NewServer(mux)
	te.URL = te.srv.URL
	t.Cleanup(te.stop)
	return te
}

func (te *testEdge) stop() { te.once.Do(te.doStop) }

func (te *testEdge) doStop() {
	ctx, c := context.WithTimeout(context.Background(), 5*time.Second)
	defer c()
	te.cancel() // as the lifecycle runner does: cancel Run, wait, then Stop
	<-te.done
	te.Edge.Stop(ctx)
	te.srv.Close()
}

// metric returns the summed value of a metric family in the edge's registry.
func (te *testEdge) metric(t testing.TB, name string) float64 {
	t.Helper()
	mfs, err := te.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			}
		}
	}
	return sum
}

func token(t testing.TB, user string, admin bool) string {
	t.Helper()
	return testutil.Token(t, testSecret, user, admin)
}

// client is a WebSocket test client that speaks only the wire protocol.
type client struct {
	t    testing.TB
	ws   *websocket.Conn
	user string
}

func wsURL(base string) string { return "ws" + strings.TrimPrefix(base, "http") + "/ws" }

// dial connects user to the edge at base with a bearer header and reads
// the welcome frame.
func dial(t testing.TB, base, user string) *client {
	t.Helper()
	h := http.Header{"Authorization": {"Bearer " + token(t, user, false)}}
	ws, resp, err := websocket.DefaultDialer.Dial(wsURL(base), h)
	if err != nil {
		t.Fatalf("dial %s as %s: %v (response %v)", base, user, err, resp)
	}
	c := &client{t: t, ws: ws, user: user}
	t.Cleanup(func() { ws.Close() })
	w := c.next()
	if w["type"] != "welcome" || w["username"] != user {
		t.Fatalf("first frame = %v, want welcome for %s", w, user)
	}
	return c
}

// registered waits until the edge has added c to its hub: the welcome
// goes out just before, so a record routed to c right after the dial can
// otherwise find it missing (the router, which routes after the
// connection's presence event, never does). Any answered frame proves it:
// the read loop starts after the hub has the connection.
func (c *client) registered() *client {
	c.t.Helper()
	c.send(map[string]any{"type": "registered?"})
	if m := c.nextOf("error"); m["code"] != "invalid_message" {
		c.t.Fatalf("%s: answer to an unknown frame: %v", c.user, m)
	}
	return c
}

func (c *client) send(v any) {
	c.t.Helper()
	var b []byte
	switch x := v.(type) {
	case string:
		b = []byte(x)
	default:
		b, _ = json.Marshal(v)
	}
	if err := c.ws.WriteMessage(websocket.TextMessage, b); err != nil {
		c.t.Fatalf("%s: write: %v", c.user, err)
	}
}

// read returns the next frame or an error (timeout, close).
func (c *client) read(d time.Duration) (map[string]any, error) {
	c.ws.SetReadDeadline(time.Now().Add(d))
	_, b, err := c.ws.ReadMessage()
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("frame %q is not JSON: %v", b, err)
	}
	return m, nil
}

func (c *client) next() map[string]any {
	c.t.Helper()
	m, err := c.read(10 * time.Second)
	if err != nil {
		c.t.Fatalf("%s: read: %v", c.user, err)
	}
	return m
}

// nextOf skips frames until one of type typ arrives.
func (c *client) nextOf(typ string) map[string]any {
	c.t.Helper()
	for {
		m := c.next()
		if m["type"] == typ {
			return m
		}
	}
}

func (c *client) join(room string) {
	c.t.Helper()
	c.send(map[string]any{"type": "join", "room": room})
	for {
		m := c.next()
		if m["type"] == "error" {
			c.t.Fatalf("%s: join %s: %v", c.user, room, m)
		}
		if m["type"] == "joined" {
			if m["room"] != room {
				c.t.Fatalf("joined = %v, want room %s", m, room)
			}
			return
		}
	}
}

// say sends a chat message and waits for its ack, returning the event id.
func (c *client) say(room, content, clientID string) string {
	c.t.Helper()
	c.send(map[string]any{"type": "chat", "room": room, "content": content, "client_id": clientID})
	for {
		m := c.next()
		switch m["type"] {
		case "ack":
			if m["client_id"] != clientID {
				c.t.Fatalf("ack = %v, want client_id %s", m, clientID)
			}
			return m["id"].(string)
		case "error":
			c.t.Fatalf("%s: chat %s: error %v", c.user, clientID, m)
		}
	}
}

// topicFor returns a topic name unique to the test.
func topicFor(t testing.TB) string {
	return "t." + strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' {
			return r
		}
		return '_'
	}, t.Name())
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t testing.TB) string { t.Helper(); return testutil.FreePort(t) }

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	testutil.Eventually(t, d, what, cond)
}
