package history_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/chatsys/chat/pkg/auth"
	"github.com/chatsys/chat/pkg/pgutil/pgtest"
	"github.com/chatsys/chat/services/history"
)

// silentDatabase accepts connections and never answers, as a PostgreSQL
// whose machine stopped responding does.
func silentDatabase(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return "postgres://chat:secret@" + l.Addr().String() + "/chat?sslmode=disable"
}

// Until Start has connected and migrated, the API answers 503 unavailable
// (it used to panic on the missing pool) and readiness says why.
func TestAPIUnavailableUntilStarted(t *testing.T) {
	k := topics(t, "127.0.0.1:1") // Start never gets as far as the broker
	cfg := history.Defaults()
	cfg.Kafka, cfg.DatabaseURL = k, silentDatabase(t)
	cfg.Auth = auth.Config{Secret: testSecret}
	h, err := history.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	h.Routes(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan error, 1)
	go func() { started <- h.Start(ctx) }()
	for _, path := range []string{"/v1/rooms/general/messages", "/v1/dm/bob/messages", "/v1/search", "/v1/dm"} {
		r := get(t, srv.URL, "alice", path, vals("q", "hello"))
		if r.Status != http.StatusServiceUnavailable || r.Error.Code != "unavailable" {
			t.Errorf("GET %s while starting = %d %+v, want 503 unavailable", path, r.Status, r.Error)
		}
	}
	if r := get(t, srv.URL, "", "/v1/rooms/general/messages", nil); r.Status != http.StatusUnauthorized {
		t.Errorf("GET without a token while starting = %d, want 401", r.Status)
	}
	if err := h.Ready(context.Background()); err == nil {
		t.Error("Ready while starting = nil, want an error")
	}
	cancel()
	if err := <-started; err == nil {
		t.Error("Start against a database that never answers succeeded")
	}
	if err := h.Stop(context.Background()); err != nil {
		t.Errorf("Stop after a failed Start = %v", err)
	}
}

// With the messages table locked by another session, API requests answer
// 503 unavailable within about -history.db-timeout (they used to wait for
// the 5s handler timeout), many at once included (the pool wait is bounded
// too), and readiness fails within half of it; both recover once the lock
// is gone.
func TestLockedTableAnswersQuickly(t *testing.T) {
	k := topics(t, testBroker(t))
	db := pgtest.NewDatabase(t)
	const dbTimeout = time.Second
	h := startHistory(t, k, db, func(c *history.Config) { c.DBTimeout = dbTimeout })
	produce(t, k, event("chat", "general", "", "alice", "hello", "c1"))
	eventually(t, 20*time.Second, "the message stored", func() bool { return count(t, db, "SELECT count(*) FROM messages") == 1 })
	eventually(t, 10*time.Second, "ready", func() bool { return h.Ready(context.Background()) == nil })

	unlock := lockMessages(t, db, "ACCESS EXCLUSIVE")
	defer unlock()

	const concurrent = 12 // more than the pool's connections
	var wg sync.WaitGroup
	results := make([]apiResult, concurrent)
	took := make([]time.Duration, concurrent)
	tok := token(t, "alice")
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			results[i] = tryGet(h.URL+"/v1/rooms/general/messages", tok)
			took[i] = time.Since(t0)
		}()
	}
	wg.Wait()
	bound := 2*dbTimeout + 2*time.Second // the bound, a cancel's round trip, a loaded machine (still below the 5 s it used to take)
	for i, r := range results {
		if r.Status != http.StatusServiceUnavailable || r.Error.Code != "unavailable" || took[i] > bound {
			t.Errorf("request %d on a locked table = %d %q after %v, want 503 unavailable within %v", i, r.Status, r.Error.Code, took[i].Round(time.Millisecond), bound)
		}
	}
	t0 := time.Now()
	rctx, cancel := context.WithTimeout(context.Background(), 2*time.Second) // as /readyz gives its checks
	err := h.Ready(rctx)
	cancel()
	if err == nil {
		t.Error("Ready with the messages table locked = nil, want an error")
	}
	t.Logf("locked table: API answered 503 after %v..%v, readiness failed after %v (%v)", minDur(took), maxDur(took), time.Since(t0).Round(time.Millisecond), err)

	unlock()
	eventually(t, 10*time.Second, "readiness back after the lock", func() bool { return h.Ready(context.Background()) == nil })
	if r := get(t, h.URL, "alice", "/v1/rooms/general/messages", nil); r.Status != 200 || len(r.Messages) != 1 {
		t.Errorf("after the lock: %d with %d messages, want 200 with 1", r.Status, len(r.Messages))
	}
	produce(t, k, event("chat", "general", "", "bob", "after the lock", "c2"))
	eventually(t, 20*time.Second, "the writer to continue", func() bool { return count(t, db, "SELECT count(*) FROM messages") == 2 })
}

func minDur(ds []time.Duration) time.Duration {
	m := ds[0]
	for _, d := range ds {
		m = min(m, d)
	}
	return m.Round(time.Millisecond)
}

func maxDur(ds []time.Duration) time.Duration {
	m := ds[0]
	for _, d := range ds {
		m = max(m, d)
	}
	return m.Round(time.Millisecond)
}

// tryGet is get for other goroutines than the test's: failures become a
// status of -1 with the error as message.
func tryGet(url, tok string) apiResult {
	var r apiResult
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		r.Status, r.Error.Message = -1, err.Error()
		return r
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		r.Error.Message = "body is not JSON: " + err.Error()
	}
	r.Status = resp.StatusCode
	return r
}

// lagSeries returns the lag gauge's series count and their sum.
func lagSeries(t *testing.T, reg *prometheus.Registry) (int, float64) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == "chat_history_consumer_lag_records" {
			for _, m := range mf.GetMetric() {
				n++
				sum += m.GetGauge().GetValue()
			}
		}
	}
	return n, sum
}

// The lag gauge comes from the broker: every partition of the consumed
// topics is exported, and it grows while history is stalled (a locked
// table: nothing is written, so nothing is committed).
func TestLagGrowsWhileStalled(t *testing.T) {
	k := topics(t, testBroker(t))
	db := pgtest.NewDatabase(t)
	h := startHistory(t, k, db)
	produce(t, k, event("chat", "general", "", "alice", "hello", "c1"))
	eventually(t, 20*time.Second, "the message stored", func() bool { return count(t, db, "SELECT count(*) FROM messages") == 1 })
	// rooms 4 + direct 4 + acl 1 partitions.
	eventually(t, 20*time.Second, "every partition exported at lag 0", func() bool { n, sum := lagSeries(t, h.Reg); return n == 9 && sum == 0 })

	unlock := lockMessages(t, db, "ACCESS EXCLUSIVE")
	defer unlock()
	produce(t, k, event("chat", "general", "", "alice", "one", "c2"), event("chat", "general", "", "alice", "two", "c3"),
		event("chat", "general", "", "alice", "three", "c4"))
	eventually(t, 20*time.Second, "the lag shows the stalled records", func() bool { _, sum := lagSeries(t, h.Reg); return sum >= 3 })
	if h.Lag() < 3 {
		t.Fatalf("Lag() = %d while stalled on 3 records of a partition it consumes", h.Lag())
	}
	unlock()
	eventually(t, 30*time.Second, "the lag back to 0", func() bool { _, sum := lagSeries(t, h.Reg); return sum == 0 })
}

// A refused password is not waited for as a database that is not up yet:
// Start fails at once.
func TestStartFailsFastOnARefusedPassword(t *testing.T) {
	k := topics(t, testBroker(t))
	u, err := url.Parse(pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(u.User.Username(), "not-the-password")
	cfg := history.Defaults()
	cfg.Kafka, cfg.DatabaseURL = k, u.String()
	cfg.Auth = auth.Config{Secret: testSecret}
	h, err := history.New(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	err = h.Start(context.Background())
	if err == nil || time.Since(t0) > 10*time.Second {
		t.Fatalf("Start with a wrong password: %v after %v, want an error within seconds", err, time.Since(t0))
	}
	t.Logf("Start: %v", err)
	if strings.Contains(err.Error(), "not-the-password") {
		t.Fatalf("the error quotes the password: %v", err)
	}
}

// lockMessages locks the messages table in mode (ACCESS EXCLUSIVE: against
// readers too; EXCLUSIVE: against writers only) until the returned unlock
// (idempotent) is called.
func lockMessages(t *testing.T, db, mode string) (unlock func()) {
	t.Helper()
	ctx := context.Background()
	locker, err := pgx.Connect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := locker.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "LOCK TABLE messages IN "+mode+" MODE"); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			if err := tx.Rollback(ctx); err != nil {
				t.Error(err)
			}
			locker.Close(ctx)
		})
	}
}
