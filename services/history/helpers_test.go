package history_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/chatsys/chat/pkg/auth"
	"github.com/chatsys/chat/pkg/chatevent"
	"github.com/chatsys/chat/pkg/embedkafka"
	"github.com/chatsys/chat/pkg/kafkaio"
	"github.com/chatsys/chat/pkg/pgutil/pgtest"
	"github.com/chatsys/chat/pkg/testutil"
	"github.com/chatsys/chat/services/history"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const testSecret = "history-test-secret-0123456789"

func testBroker(t testing.TB) string {
	t.Helper()
	if b := os.Getenv("TEST_KAFKA_BROKERS"); b != "" {
		return b
	}
	b := embedkafka.New(embedkafka.Config{Addr: "127.0.0.1:0"}, nil)
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Stop(context.Background()) })
	return b.Addr()
}

// topics returns a Kafka config with topic names unique to the test.
func topics(t testing.TB, broker string) kafkaio.Config {
	k := history.Defaults().Kafka
	name := strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())
	k.Brokers, k.RoomsTopic, k.DirectTopic = broker, "rooms."+name, "direct."+name
	k.ACLTopic, k.TypingTopic = "acl."+name, "typing."+name
	k.RoomsPartitions, k.DirectPartitions = 4, 4
	return k
}

type testHistory struct {
	*history.History
	Reg    *prometheus.Registry
	URL    string
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

func startHistory(t testing.TB, k kafkaio.Config, dbURL string, mods ...func(*history.Config)) *testHistory {
	t.Helper()
	return startHistoryLog(t, k, dbURL, nil, mods...)
}

// startHistoryLog is startHistory logging to log (nil: discarded, or
// stderr with -v).
func startHistoryLog(t testing.TB, k kafkaio.Config, dbURL string, log *slog.Logger, mods ...func(*history.Config)) *testHistory {
	t.Helper()
	cfg := history.Defaults()
	cfg.Kafka, cfg.DatabaseURL = k, dbURL
	cfg.Auth = auth.Config{Secret: testSecret}
	cfg.GroupID = "g." + k.RoomsTopic
	cfg.BatchWait = 20 * time.Millisecond
	for _, m := range mods {
		m(&cfg)
	}
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
		if testing.Verbose() {
			log = slog.New(slog.NewTextHandler(os.Stderr, nil))
		}
	}
	reg := prometheus.NewRegistry()
	h, err := history.New(cfg, log, reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := h.Start(ctx); err != nil {
		t.Fatal(err)
	}
	th := &testHistory{History: h, Reg: reg, cancel: cancel, done: make(chan error, 1)}
	go func() { th.done <- h.Run(ctx) }()
	mux := http.NewServeMux()
	h.Routes(mux)
	srv := httptest.NewServer(mux)
	th.URL = srv.URL
	t.Cleanup(func() { srv.Close(); th.stop(t) })
	return th
}

func (th *testHistory) stop(t testing.TB) {
	th.once.Do(func() {
		th.History.Stop(context.Background())
		th.cancel()
		if err := <-th.done; err != nil {
			t.Errorf("history Run: %v", err)
		}
	})
}

// event builds a stored event as an edge would stamp it.
func event(typ, room, target, user, content, clientID string) chatevent.Event {
	return chatevent.Event{ID: chatevent.NewID(), Type: typ, Room: room, Target: target, Username: user, Content: content,
		Timestamp: chatevent.FormatTime(time.Now()), ClientID: clientID}
}

// produce appends events to the log as the edge does (key rules included)
// and returns their positions.
func produce(t testing.TB, k kafkaio.Config, evs ...chatevent.Event) {
	t.Helper()
	var rooms, direct []kafka.Message
	for _, ev := range evs {
		b, err := ev.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if ev.Type == chatevent.TypePrivate {
			direct = append(direct, kafka.Message{Key: []byte(chatevent.DMKey(ev.Username, ev.Target)), Value: b})
		} else {
			rooms = append(rooms, kafka.Message{Key: []byte(chatevent.RoomKey(ev.Room)), Value: b})
		}
	}
	produceRaw(t, k, k.RoomsTopic, rooms...)
	produceRaw(t, k, k.DirectTopic, direct...)
}

func produceRaw(t testing.TB, k kafkaio.Config, topic string, msgs ...kafka.Message) {
	t.Helper()
	if len(msgs) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// A broker that just restarted may drop the first connections (EOF):
	// try again with a fresh writer until the deadline.
	for {
		w := k.NewWriter(topic)
		err := w.WriteMessages(ctx, msgs...)
		w.Close()
		if err == nil {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("produce to %s: %v", topic, err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func token(t testing.TB, user string) string {
	t.Helper()
	return testutil.Token(t, testSecret, user, false)
}

type apiResult struct {
	Status   int
	Messages []chatevent.Event `json:"messages"`
	Error    struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// get calls the API as user ("" sends no token).
func get(t testing.TB, base, user, path string, query url.Values) apiResult {
	t.Helper()
	req, _ := http.NewRequest("GET", base+path+"?"+query.Encode(), nil)
	if user != "" {
		req.Header.Set("Authorization", "Bearer "+token(t, user))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r apiResult
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatalf("GET %s: body is not JSON: %v", path, err)
	}
	r.Status = resp.StatusCode
	return r
}

func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	testutil.Eventually(t, d, what, cond)
}

func count(t testing.TB, dbURL, query string, args ...any) int {
	t.Helper()
	ctx := context.Background()
	c, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return -1
	}
	defer c.Close(ctx)
	var n int
	if err := c.QueryRow(ctx, query, args...).Scan(&n); err != nil {
		return -1
	}
	return n
}

func vals(kv ...string) url.Values {
	v := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		v.Set(kv[i], kv[i+1])
	}
	return v
}

// getJSON calls the API as user and decodes the body into out.
func getJSON(t testing.TB, base, user, path string, query url.Values, out any) {
	t.Helper()
	req, _ := http.NewRequest("GET", base+path+"?"+query.Encode(), nil)
	req.Header.Set("Authorization", "Bearer "+token(t, user))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s", path, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		t.Fatal(err)
	}
}
