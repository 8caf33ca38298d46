package analytics

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/chatsys/chat/pkg/auth"
	"github.com/chatsys/chat/pkg/kafkaio"
	chattest "github.com/chatsys/chat/pkg/testutil"
)

// adminServer serves a scheduler over the log k, with a write timeout as
// -http.write-timeout sets; it returns the server and an admin token.
func adminServer(t *testing.T, k kafkaio.Config, writeTimeout time.Duration) (*Scheduler, *httptest.Server, string) {
	t.Helper()
	s, err := NewScheduler(Config{Kafka: k, Auth: auth.Config{Secret: "test-secret-0123456789"}}, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	s.Routes(mux)
	srv := httptest.NewUnstartedServer(mux)
	srv.Config.WriteTimeout = writeTimeout
	srv.Start()
	t.Cleanup(srv.Close)
	tok, err := auth.NewHS256Minter("test-secret-0123456789", "").Mint("root", true, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return s, srv, tok
}

type adminReply struct {
	status int
	body   struct {
		Events     int64
		Days       *[]json.RawMessage // nil: "days" missing or null
		Note       string
		InputDates []string `json:"input_dates"`
		Error      struct{ Code, Message string }
	}
}

func postAnalytics(ctx context.Context, srv *httptest.Server, tok, body string) (adminReply, error) {
	req, _ := http.NewRequestWithContext(ctx, "POST", srv.URL+"/v1/admin/analytics", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := srv.Client().Do(req)
	if err != nil {
		return adminReply{}, err
	}
	defer resp.Body.Close()
	r := adminReply{status: resp.StatusCode}
	return r, json.NewDecoder(resp.Body).Decode(&r.body)
}

// TestAdminRunIsExclusiveCancellableAndBounded runs against a broker that
// never answers, so a run lasts until it is stopped.
func TestAdminRunIsExclusiveCancellableAndBounded(t *testing.T) {
	k := kafkaio.Config{Brokers: silentBroker(t), RoomsTopic: "rooms", DirectTopic: "direct"}
	s, srv, tok := adminServer(t, k, time.Second)
	const body = `{"from":"2026-11-01","to":"2026-11-02"}`

	// A first request runs; a second one is refused at once.
	ctx, cancel := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() { _, err := postAnalytics(ctx, srv, tok, body); first <- err }()
	waitFor(t, "the first run to start", func() bool { return len(s.slot) == 1 })
	t0 := time.Now()
	r, err := postAnalytics(context.Background(), srv, tok, body)
	if err != nil || r.status != http.StatusConflict || r.body.Error.Code != "busy" || !strings.Contains(r.body.Error.Message, "http run for 2026-11-01..2026-11-02") {
		t.Fatalf("second request: %+v, %v; want 409 busy naming the run in progress", r, err)
	}
	if d := time.Since(t0); d > 2*time.Second {
		t.Fatalf("the second request waited %v", d)
	}

	// The client giving up ends its run.
	cancel()
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Fatalf("first request: %v, want canceled", err)
	}
	waitFor(t, "the canceled run to end", func() bool { return len(s.slot) == 0 })
	waitFor(t, "the canceled run to be counted", func() bool {
		return testutil.ToFloat64(s.runs.WithLabelValues("http", "canceled")) == 1
	})

	// A run is bounded, and its answer is not cut by the server's shorter
	// write timeout.
	s.RunTimeout = 3 * time.Second
	r, err = postAnalytics(context.Background(), srv, tok, body)
	if err != nil || r.status != http.StatusServiceUnavailable || r.body.Error.Code != "timeout" {
		t.Fatalf("a run past its timeout: %+v, %v; want 503 timeout", r, err)
	}
	if n := testutil.ToFloat64(s.runs.WithLabelValues("http", "busy")); n != 1 {
		t.Errorf("busy runs counted: %v, want 1", n)
	}
}

func TestAdminRunEmptyRangeNote(t *testing.T) {
	k := startLog(t)
	rm, dm := logMessages(handMade)
	appendLog(t, k, 0, rm, dm)
	_, srv, tok := adminServer(t, k, 0)
	r, err := postAnalytics(context.Background(), srv, tok, `{"from":"2027-01-01"}`)
	if err != nil || r.status != http.StatusOK {
		t.Fatalf("%+v, %v", r, err)
	}
	if r.body.Days == nil || len(*r.body.Days) != 0 {
		t.Fatalf("days of an empty range: %v, want [] (not null)", r.body.Days)
	}
	if r.body.Events != 0 || !strings.HasPrefix(r.body.Note, "no messages dated 2027-01-01; the log's messages are dated 2026-1") || !strings.Contains(r.body.Note, " to 2026-11-0") || len(r.body.InputDates) == 0 {
		t.Fatalf("reply %+v: want a note with the log's dates", r.body)
	}
	r, err = postAnalytics(context.Background(), srv, tok, `{"from":"2026-11-01","to":"2026-11-02"}`)
	if err != nil || r.status != http.StatusOK || r.body.Events != 5 || r.body.Note != "" {
		t.Fatalf("a range with messages: %+v, %v", r, err)
	}
}

// TestAdminRunBodyIsStrict: the body is decoded as strictly as a frame, so
// a duplicate or case-variant member cannot pick another range.
func TestAdminRunBodyIsStrict(t *testing.T) {
	k := kafkaio.Config{Brokers: silentBroker(t), RoomsTopic: "rooms", DirectTopic: "direct"}
	_, srv, tok := adminServer(t, k, 0)
	for _, body := range []string{`{"from":"2026-11-01","from":"2026-11-02"}`, `{"FROM":"2026-11-01"}`, `{"from":"2026-11-01"} x`, `{"from":1}`, `[]`} {
		r, err := postAnalytics(context.Background(), srv, tok, body)
		if err != nil || r.status != http.StatusBadRequest || r.body.Error.Code != "invalid_request" {
			t.Errorf("%s: %+v, %v; want 400 invalid_request", body, r, err)
		}
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	chattest.Eventually(t, 10*time.Second, what, cond)
}

// Every trigger and result is exported at 0 before the first run, so an
// alert on increase() sees the first failure.
func TestRunsCountedFromZero(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := NewScheduler(Config{Auth: auth.Config{Secret: "test-secret-0123456789"}}, nil, reg); err != nil {
		t.Fatal(err)
	}
	if n, err := testutil.GatherAndCount(reg, "chat_analytics_runs_total"); err != nil || n != 10 {
		t.Fatalf("chat_analytics_runs_total series before any run: %d (%v), want 10 (2 triggers × 5 results)", n, err)
	}
}
