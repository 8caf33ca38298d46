package router

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/chatsys/chat/pkg/auth"
	"github.com/chatsys/chat/pkg/chatevent"
	"github.com/chatsys/chat/pkg/embedkafka"
	"github.com/chatsys/chat/pkg/kafkaio"
	"github.com/chatsys/chat/pkg/testutil"
)

func TestMain(m *testing.M) {
	if cfg := os.Getenv(childEnv); cfg != "" {
		os.Exit(runChild(cfg)) // a router process for the crash test
	}
	os.Exit(m.Run())
}

const testSecret = "router-test-secret-0123456789"

// testLog logs to stderr with -v, else nowhere.
func testLog() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// freeAddr returns a loopback address with a port nobody listens on.
func freeAddr(t testing.TB) string {
	t.Helper()
	return testutil.FreePort(t)
}

// startBroker starts an embedded broker with its log under a temporary
// directory, on a fixed address so it can be stopped and started again.
func startBroker(t testing.TB) *embedkafka.Broker {
	t.Helper()
	b := embedkafka.New(embedkafka.Config{Addr: freeAddr(t), DataDir: t.TempDir()}, nil)
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Stop(context.Background()) })
	return b
}

// testKafka returns a Kafka config with topic names unique to the test and
// nothing taken from the environment.
func testKafka(t testing.TB, broker string) kafkaio.Config {
	k := Defaults().Kafka // defaults only: nothing from CHAT_* variables
	name := strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())
	k.Brokers = broker
	k.RoomsTopic, k.DirectTopic = "rooms."+name, "direct."+name
	k.PresenceTopic, k.DeliveriesTopic = "presence."+name, "deliveries."+name
	k.ACLTopic, k.TypingTopic = "acl."+name, "typing."+name
	k.RoomsPartitions, k.DirectPartitions, k.SmallPartitions = 4, 4, 4
	return k
}

// ensureTopics creates the test's topics as a router's Start does.
func ensureTopics(t testing.TB, k kafkaio.Config) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := k.EnsureTopics(ctx, append(k.AllTopics(), kafkaio.TopicSpec{Name: snapshotTopic(k.PresenceTopic), Partitions: 1})...); err != nil {
		t.Fatal(err)
	}
}

func testConfig(k kafkaio.Config) Config {
	cfg := Defaults()
	cfg.Kafka = k
	cfg.Auth = auth.Config{Secret: testSecret}
	cfg.GroupID = "router." + k.DirectTopic
	return cfg
}

type testRouter struct {
	*Router
	URL    string
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// startRouter starts a router in this process and serves its API.
func startRouter(t testing.TB, cfg Config, mods ...func(*Router)) *testRouter {
	t.Helper()
	r, err := New(cfg, testLog(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range mods {
		m(r)
	}
	mux := http.NewServeMux()
	r.Routes(mux)
	srv := httptest.NewServer(mux)
	ctx, cancel := context.WithCancel(context.Background())
	if err := r.Start(ctx); err != nil {
		cancel()
		srv.Close()
		t.Fatal(err)
	}
	tr := &testRouter{Router: r, URL: srv.URL, cancel: cancel, done: make(chan error, 1)}
	go func() { tr.done <- r.Run(ctx) }()
	t.Cleanup(func() { srv.Close(); tr.stop(t) })
	return tr
}

// stop stops the router as the lifecycle runner does: Stop, then cancel Run.
func (tr *testRouter) stop(t testing.TB) {
	tr.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		tr.Router.Stop(ctx)
		tr.cancel()
		if err := <-tr.done; err != nil {
			t.Errorf("router Run: %v", err)
		}
	})
}

func (tr *testRouter) waitCaughtUp(t testing.TB, d time.Duration) {
	t.Helper()
	select {
	case <-tr.caughtUpCh:
	case <-time.After(d):
		t.Fatalf("router did not catch up on presence within %v", d)
	}
}

func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	testutil.Eventually(t, d, what, cond)
}

// fakeEdge publishes presence records as an edge does.
type fakeEdge struct {
	t  testing.TB
	id string
	k  kafkaio.Config
	w  *kafka.Writer

	mu     sync.Mutex
	paused bool
	stop   chan struct{}
	done   chan struct{}
}

func newFakeEdge(t testing.TB, k kafkaio.Config, id string) *fakeEdge {
	t.Helper()
	e := &fakeEdge{t: t, id: id, k: k, w: k.NewWriter(k.PresenceTopic)}
	t.Cleanup(func() { e.stopBeating(); e.w.Close() })
	return e
}

func (e *fakeEdge) publish(typ, user, room string, conns int) {
	e.t.Helper()
	if err := e.tryPublish(typ, user, room, conns); err != nil {
		e.t.Errorf("edge %s: publish %s: %v", e.id, typ, err)
	}
}

// tryPublish publishes one record and returns the error.
func (e *fakeEdge) tryPublish(typ, user, room string, conns int) error {
	key := user
	if typ == chatevent.PresenceHeartbeat {
		key = e.id
	}
	b, err := (&chatevent.Presence{Type: typ, Edge: e.id, User: user, Room: room, Connections: conns,
		Timestamp: chatevent.FormatTime(time.Now())}).Encode()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return e.w.WriteMessages(ctx, kafka.Message{Key: []byte(key), Value: b})
}

// beat publishes a heartbeat every interval until stopBeating; pause and
// resume suspend it.
func (e *fakeEdge) beat(interval time.Duration) {
	e.stop, e.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(e.done)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-e.stop:
				return
			case <-tick.C:
			}
			e.mu.Lock()
			paused := e.paused
			e.mu.Unlock()
			if !paused { // best effort, as an edge's heartbeats
				if err := e.tryPublish(chatevent.PresenceHeartbeat, "", "", 0); err != nil {
					e.t.Logf("edge %s: heartbeat: %v", e.id, err)
				}
			}
		}
	}()
}

func (e *fakeEdge) pause(p bool) {
	e.mu.Lock()
	e.paused = p
	e.mu.Unlock()
}

func (e *fakeEdge) stopBeating() {
	if e.stop != nil {
		select {
		case <-e.stop:
		default:
			close(e.stop)
		}
		<-e.done
	}
}

func token(t testing.TB, user string) string {
	t.Helper()
	return testutil.Token(t, testSecret, user, false)
}

type apiError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// getJSON calls the router API as user and decodes the body into out; it
// returns the status.
func getJSON(t testing.TB, url, user string, out any) int {
	t.Helper()
	st, body := get(t, url, token(t, user))
	if err := json.Unmarshal(body, out); err != nil {
		t.Fatalf("GET %s: body is not JSON: %v", url, err)
	}
	return st
}

// get calls the router API with bearer token tok and returns the status
// and the body.
func get(t testing.TB, url, tok string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, body
}

// readAll returns every record of topic (all partitions) up to its current end.
func readAll(t testing.TB, k kafkaio.Config, topic string, partitions int) []kafka.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out []kafka.Message
	for p := 0; p < partitions; p++ {
		first, end, err := k.Offsets(ctx, topic, p)
		if err != nil {
			t.Fatal(err)
		}
		if end <= first {
			continue
		}
		rd := kafka.NewReader(kafka.ReaderConfig{Brokers: k.BrokerList(), Topic: topic, Partition: p, MaxWait: 100 * time.Millisecond})
		if err := rd.SetOffset(first); err != nil {
			t.Fatal(err)
		}
		for {
			m, err := rd.ReadMessage(ctx)
			if err != nil {
				rd.Close()
				t.Fatalf("read %s/%d: %v", topic, p, err)
			}
			out = append(out, m)
			if m.Offset >= end-1 {
				break
			}
		}
		rd.Close()
	}
	return out
}

// leaves returns "user@room" of every leave event on the rooms topic.
func leaves(t testing.TB, k kafkaio.Config) []string {
	t.Helper()
	var out []string
	for _, m := range readAll(t, k, k.RoomsTopic, k.RoomsPartitions) {
		ev, err := chatevent.Decode(m.Value)
		if err == nil && ev.Type == chatevent.TypeLeave {
			out = append(out, ev.Username+"@"+ev.Room)
		}
	}
	return out
}
