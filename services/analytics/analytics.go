// Package analytics computes daily active users and word counts from the
// log (or from archived JSON-lines logs), as a batch job over a range of
// UTC dates.
//
// Consumes chat.rooms and chat.direct (every partition in parallel, from the
// offsets of the range's first timestamp to the end at the start of the
// run), or JSON-lines files. Writes tables analytics_dau and analytics_words
// (a re-run of a date replaces it) and, on request, dau.csv and words.csv.
package analytics

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/chatsys/chat/pkg/analyticsapi"
	"github.com/chatsys/chat/pkg/auth"
	"github.com/chatsys/chat/pkg/chatevent"
	"github.com/chatsys/chat/pkg/httperr"
	"github.com/chatsys/chat/pkg/kafkaio"
	"github.com/chatsys/chat/pkg/pgutil"
)

// Config configures a run.
type Config struct {
	Kafka       kafkaio.Config
	Auth        auth.Config
	DatabaseURL string // empty: results are not stored

	// From and To are the inclusive UTC date range, YYYY-MM-DD (default:
	// yesterday, both).
	From, To string
	// Out, when set, is a directory to write dau.csv and words.csv to.
	Out string
	// Input, when set, reads JSON lines instead of the log: a file, a
	// directory of *.jsonl, or "-" for stdin.
	Input string
	// Workers is the number of goroutines parsing and counting (default
	// GOMAXPROCS); reading the log, twice as many fetch.
	Workers int
	// Progress, when not nil, receives a progress line every second.
	Progress io.Writer
}

// RegisterFlags registers the analytics.* flags.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.From, "analytics.from", "", "first UTC date of the range, YYYY-MM-DD (default: yesterday)")
	fs.StringVar(&c.To, "analytics.to", "", "last UTC date of the range, inclusive (default: analytics.from)")
	fs.StringVar(&c.Out, "analytics.out", "", "directory to write dau.csv and words.csv to")
	fs.StringVar(&c.Input, "analytics.input", "", "read JSON lines instead of the log: a file, a directory of *.jsonl, or - for stdin")
	fs.IntVar(&c.Workers, "analytics.workers", 0, "goroutines parsing and counting (default: GOMAXPROCS; reading the log, twice as many fetch)")
}

// Range returns the configured range, defaulting to yesterday (UTC).
func (c *Config) Range(now time.Time) (Range, error) {
	from, to := c.From, c.To
	if from == "" {
		from = now.UTC().AddDate(0, 0, -1).Format(time.DateOnly)
	}
	if to == "" {
		to = from
	}
	return ParseRange(from, to)
}

// Run computes the results for cfg, stores them when a database is
// configured, and writes the CSV files when Out is set.
func Run(ctx context.Context, cfg Config, stdin io.Reader, log *slog.Logger) (*Results, error) {
	rng, err := cfg.Range(time.Now())
	if err != nil {
		return nil, err
	}
	n := cfg.Workers
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	seen := newIDSet()
	days := int(rng.End().Sub(rng.Start()).Hours() / 24)
	if cfg.Input != "" {
		seen.expect(inputSize(cfg.Input)/180, days) // about 180 bytes a line
	}
	ws := make([]*worker, n)
	for i := range ws {
		ws[i] = newWorker(rng, seen)
	}
	p := &progress{}
	stop := startProgress(cfg.Progress, p)
	t0 := time.Now()
	if cfg.Input != "" {
		err = readJSONLines(ctx, cfg.Input, stdin, ws, p)
	} else {
		err = readLog(ctx, cfg.Kafka, []string{cfg.Kafka.RoomsTopic, cfg.Kafka.DirectTopic}, rng, ws, p, func(n int64) { seen.expect(n, days) })
	}
	stop()
	if err != nil {
		return nil, err
	}
	res := merge(rng, ws)
	res.Records, res.Undecodable = p.records.Load(), p.bad.Load()
	if log != nil {
		log.Info("analytics computed", "from", rng.From, "to", rng.To, "records", res.Records, "undecodable", res.Undecodable,
			"events", res.Events, "days", len(res.Days), "took", time.Since(t0).Round(time.Millisecond))
	}
	if res.Events == 0 {
		res.InputDates = otherDates(ws)
		if cfg.Input == "" {
			// Only the log from the range's start on was read: add where
			// each partition starts and ends.
			probed, err := probeLogDates(ctx, cfg.Kafka, []string{cfg.Kafka.RoomsTopic, cfg.Kafka.DirectTopic})
			if err != nil {
				return nil, fmt.Errorf("no messages in the range, and looking for the log's dates: %w", err)
			}
			res.InputDates = slices.Compact(slices.Sorted(slices.Values(append(res.InputDates, probed...))))
		}
		res.Note = emptyNote(cfg, rng, res.InputDates)
		if log != nil {
			log.Warn(res.Note, "input_dates", res.InputDates)
		}
	}
	if cfg.Out != "" {
		if err := writeCSVFiles(cfg.Out, res); err != nil {
			return nil, err
		}
	}
	if cfg.DatabaseURL != "" {
		pool, err := pgutil.Open(ctx, cfg.DatabaseURL)
		if err != nil {
			return nil, err
		}
		defer pool.Close()
		if err := Migrate(ctx, pool); err != nil {
			return nil, err
		}
		if err := Store(ctx, pool, res); err != nil {
			return nil, fmt.Errorf("store results: %w", err)
		}
	}
	return res, nil
}

// emptyNote says that rng matched no message, and which dates the input
// holds.
func emptyNote(cfg Config, rng Range, dates []string) string {
	what := "the log"
	if cfg.Input != "" {
		what = "the input"
	}
	note := "no messages dated " + rng.From
	if rng.To != rng.From {
		note += ".." + rng.To
	}
	if cfg.From == "" {
		note += " (yesterday, the default range)"
	}
	switch {
	case len(dates) == 0:
		note += "; " + what + " holds no messages"
	case cfg.Input == "":
		note += "; the log's messages are dated " + dates[0]
		if len(dates) > 1 {
			note += " to " + dates[len(dates)-1]
		}
	default:
		note += "; " + what + " holds messages dated " + describeDates(dates)
	}
	return note
}

// inputSize is the total size of a JSON-lines input (0 for stdin).
func inputSize(path string) int64 {
	if path == "-" {
		return 0
	}
	if st, err := os.Stat(path); err == nil && !st.IsDir() {
		return st.Size()
	}
	var total int64
	files, _ := filepath.Glob(filepath.Join(path, "*.jsonl"))
	for _, f := range files {
		if st, err := os.Stat(f); err == nil {
			total += st.Size()
		}
	}
	return total
}

func writeCSVFiles(dir string, res *Results) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	dau, words := res.CSV()
	if err := os.WriteFile(filepath.Join(dir, "dau.csv"), dau, 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "words.csv"), words, 0o644)
}

func startProgress(w io.Writer, p *progress) func() {
	if w == nil {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		t0, last := time.Now(), int64(0)
		for {
			select {
			case <-done:
				fmt.Fprintf(w, "\r%d records read in %.1fs\n", p.records.Load(), time.Since(t0).Seconds())
				return
			case <-t.C:
				n := p.records.Load()
				fmt.Fprintf(w, "\r%d records read, %d/s   ", n, n-last)
				last = n
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// Summary writes a human-readable summary of res.
func Summary(w io.Writer, res *Results) { analyticsapi.Summary(w, res) }

// Scheduler runs analytics for the previous UTC day once a day (at 00:05
// UTC) and on demand over HTTP: single-machine mode's stand-in for a
// Kubernetes CronJob. One run at a time, each bounded by RunTimeout: a
// request while a run is in progress is refused (409) rather than queued,
// and a request's run ends when the request does.
type Scheduler struct {
	cfg    Config
	log    *slog.Logger
	verify *auth.Verifier
	runs   *prometheus.CounterVec

	// RunTimeout bounds one run (default DefaultRunTimeout).
	RunTimeout time.Duration

	slot    chan struct{} // holds a token while a run is in progress
	mu      sync.Mutex
	current string // what the run in progress is, for the 409
}

// DefaultRunTimeout is how long a scheduled or requested run may take.
const DefaultRunTimeout = 15 * time.Minute

// ErrBusy is returned when a run is asked for while another is in progress.
var ErrBusy = errors.New("an analytics run is already in progress")

// NewScheduler returns a scheduler for cfg (From, To, Out and Input are ignored).
func NewScheduler(cfg Config, log *slog.Logger, reg prometheus.Registerer) (*Scheduler, error) {
	v, err := auth.NewVerifier(cfg.Auth)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	runs := promauto.With(reg).NewCounterVec(prometheus.CounterOpts{Name: "chat_analytics_runs_total", Help: "Analytics runs by trigger and result (ok, error, timeout, canceled, busy)."}, []string{"trigger", "result"})
	// Every series exists from the start at 0, so the first failure is an
	// increase (alerts use increase(), which needs a sample before it).
	for _, trigger := range []string{"daily", "http"} {
		for _, result := range []string{"ok", "error", "timeout", "canceled", "busy"} {
			runs.WithLabelValues(trigger, result)
		}
	}
	return &Scheduler{cfg: cfg, log: log, verify: v, runs: runs, RunTimeout: DefaultRunTimeout, slot: make(chan struct{}, 1)}, nil
}

// Name returns "analytics".
func (s *Scheduler) Name() string { return "analytics" }

// Start does nothing: runs open their own connections.
func (s *Scheduler) Start(context.Context) error { return nil }

// Stop does nothing; Run returns when its context ends.
func (s *Scheduler) Stop(context.Context) error { return nil }

// Run waits for 00:05 UTC each day and computes the previous day.
func (s *Scheduler) Run(ctx context.Context) error {
	for {
		now := time.Now().UTC()
		next := time.Date(now.Year(), now.Month(), now.Day(), 0, 5, 0, 0, time.UTC)
		if !next.After(now) {
			next = next.AddDate(0, 0, 1)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Until(next)):
		}
		day := next.AddDate(0, 0, -1).Format(time.DateOnly)
		if _, err := s.run(ctx, "daily", day, day, true); err != nil {
			s.log.Error("daily analytics failed", "date", day, "err", err)
		}
	}
}

// run computes from..to. With wait, it waits for a run in progress to end
// (or ctx); without, it returns an error wrapping ErrBusy at once.
func (s *Scheduler) run(ctx context.Context, trigger, from, to string, wait bool) (*Results, error) {
	if wait {
		select {
		case s.slot <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	} else {
		select {
		case s.slot <- struct{}{}:
		default:
			s.mu.Lock()
			current := s.current
			s.mu.Unlock()
			s.runs.WithLabelValues(trigger, "busy").Inc()
			return nil, fmt.Errorf("%w (%s)", ErrBusy, current)
		}
	}
	s.mu.Lock()
	s.current = fmt.Sprintf("%s run for %s..%s since %s", trigger, from, to, time.Now().UTC().Format(time.RFC3339))
	s.mu.Unlock()
	defer func() { <-s.slot }()
	ctx, cancel := context.WithTimeoutCause(ctx, s.RunTimeout, fmt.Errorf("analytics run took longer than %v: %w", s.RunTimeout, context.DeadlineExceeded))
	defer cancel()
	cfg := s.cfg
	cfg.From, cfg.To, cfg.Out, cfg.Input, cfg.Progress = from, to, "", "", nil
	res, err := Run(ctx, cfg, nil, s.log)
	result := "ok"
	switch {
	case err == nil:
	case errors.Is(context.Cause(ctx), context.Canceled):
		result, err = "canceled", context.Canceled
	case ctx.Err() != nil:
		result, err = "timeout", context.Cause(ctx)
	default:
		result = "error"
	}
	s.runs.WithLabelValues(trigger, result).Inc()
	return res, err
}

// Routes registers POST /v1/admin/analytics {from, to}: an admin runs the
// job now and gets the results as JSON. The run belongs to the request: it
// stops when the client goes away, and a request while another run is in
// progress gets 409 at once.
func (s *Scheduler) Routes(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/admin/analytics", func(w http.ResponseWriter, r *http.Request) {
		fail := func(status int, code, msg string) { httperr.Write(w, status, code, msg) }
		id, err := s.verify.VerifyAPIRequest(r)
		if err != nil {
			fail(http.StatusUnauthorized, "unauthorized", err.Error())
			return
		}
		if !id.Admin {
			fail(http.StatusForbidden, "forbidden", "analytics needs a token with the admin role")
			return
		}
		var req struct {
			From string `json:"from"`
			To   string `json:"to"`
		}
		b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 4096))
		if err == nil && len(bytes.TrimSpace(b)) > 0 { // no body: yesterday
			err = chatevent.DecodeObject(b, &req)
		}
		if err != nil {
			fail(http.StatusBadRequest, "invalid_request", "body must be {\"from\":\"YYYY-MM-DD\",\"to\":\"YYYY-MM-DD\"}: "+err.Error())
			return
		}
		c := Config{From: req.From, To: req.To}
		rng, err := c.Range(time.Now())
		if err != nil {
			fail(http.StatusBadRequest, "invalid_range", err.Error())
			return
		}
		// The run, not the server's write timeout, bounds the answer.
		http.NewResponseController(w).SetWriteDeadline(time.Now().Add(s.RunTimeout + 30*time.Second))
		res, err := s.run(r.Context(), "http", rng.From, rng.To, false)
		switch {
		case errors.Is(err, ErrBusy):
			w.Header().Set("Retry-After", "30")
			fail(http.StatusConflict, "busy", err.Error())
			return
		case r.Context().Err() != nil:
			s.log.Info("analytics run canceled: the request ended", "from", rng.From, "to", rng.To)
			return // nobody to answer
		case errors.Is(err, context.DeadlineExceeded):
			s.log.Error("analytics run timed out", "err", err)
			fail(http.StatusServiceUnavailable, "timeout", err.Error())
			return
		case err != nil:
			s.log.Error("analytics run failed", "err", err)
			fail(http.StatusServiceUnavailable, "unavailable", "analytics run failed: "+err.Error())
			return
		}
		days := res.Days
		if days == nil {
			days = []analyticsapi.DayResult{} // "days": [], as documented, never null
		}
		body := map[string]any{"from": rng.From, "to": rng.To, "events": res.Events, "days": days,
			"records": res.Records, "undecodable": res.Undecodable}
		if res.Note != "" {
			body["note"], body["input_dates"] = res.Note, res.InputDates
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(body)
	})
}
