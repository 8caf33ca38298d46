// Package history writes the log into PostgreSQL and serves the history API.
//
// Consumes chat.rooms and chat.direct as one consumer group (-history.group),
// from the earliest offset for a new group. Records are written in batches,
// one transaction each, idempotently (a redelivered event or a retried send
// adds no row); offsets are committed only after the database commit, so a
// crash or a database outage loses nothing. Undecodable records, and records
// the database refuses for their own data, go to the dead_letters table and
// are skipped, so no record can stall its partition.
//
// HTTP (JWT-authenticated): GET /v1/rooms/{room}/messages,
// GET /v1/dm/{peer}/messages, GET /v1/search, and GET /v1/openapi.yaml.
package history

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/segmentio/kafka-go"
	"golang.org/x/sync/errgroup"

	"github.com/chatsys/chat/pkg/auth"
	"github.com/chatsys/chat/pkg/chatevent"
	"github.com/chatsys/chat/pkg/kafkaio"
	"github.com/chatsys/chat/pkg/pgutil"
)

// History is the history service. Create it with New; it does no I/O until Start.
type History struct {
	cfg    Config
	log    *slog.Logger
	m      *metrics
	verify *auth.Verifier

	pool   *pgxpool.Pool
	reader *kafka.Reader

	dbOK     atomic.Bool // the last database write (or ping) succeeded
	stopping atomic.Bool
	dbURL    func() string
	lagMu    sync.Mutex
	lag      map[string]int64 // "topic/partition" → records behind
}

type metrics struct {
	rows       prometheus.Counter
	duplicates prometheus.Counter
	batchSize  prometheus.Histogram
	writeSecs  prometheus.Histogram
	writeErrs  prometheus.Counter
	lag        *prometheus.GaugeVec
	dead       prometheus.Counter
	requests   *prometheus.CounterVec
	reqSecs    *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	return &metrics{
		rows:       f.NewCounter(prometheus.CounterOpts{Name: "chat_history_rows_written_total", Help: "Messages inserted into PostgreSQL."}),
		duplicates: f.NewCounter(prometheus.CounterOpts{Name: "chat_history_duplicates_total", Help: "Records skipped because their event (or their username and client_id) was already stored."}),
		batchSize:  f.NewHistogram(prometheus.HistogramOpts{Name: "chat_history_batch_records", Help: "Records per database transaction.", Buckets: prometheus.ExponentialBuckets(1, 4, 7)}),
		writeSecs:  f.NewHistogram(prometheus.HistogramOpts{Name: "chat_history_write_duration_seconds", Help: "Duration of one batch transaction.", Buckets: prometheus.DefBuckets}),
		writeErrs:  f.NewCounter(prometheus.CounterOpts{Name: "chat_history_write_errors_total", Help: "Failed batch transactions (retried)."}),
		lag:        f.NewGaugeVec(prometheus.GaugeOpts{Name: "chat_history_consumer_lag_records", Help: "Records between the last one written and the partition's end."}, []string{"topic", "partition"}),
		dead:       f.NewCounter(prometheus.CounterOpts{Name: "chat_history_dead_letters_total", Help: "Records moved to dead_letters: undecodable, or refused by the database for their own data."}),
		requests:   f.NewCounterVec(prometheus.CounterOpts{Name: "chat_history_http_requests_total", Help: "History API requests by route and status."}, []string{"route", "status"}),
		reqSecs:    f.NewHistogramVec(prometheus.HistogramOpts{Name: "chat_history_http_request_duration_seconds", Help: "History API latency by route.", Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, 1}}, []string{"route"}),
	}
}

// New returns a history service for cfg, registering its metrics with reg.
func New(cfg Config, log *slog.Logger, reg prometheus.Registerer) (*History, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	v, err := auth.NewVerifier(cfg.Auth)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &History{cfg: cfg, log: log, m: newMetrics(reg), verify: v, lag: map[string]int64{}}, nil
}

// SetDatabaseURL makes Start take the database URL from fn, for a database
// that is started in the same process after New (single-machine mode).
func (h *History) SetDatabaseURL(fn func() string) { h.dbURL = fn }

// Name returns "history".
func (h *History) Name() string { return "history" }

// Start connects to PostgreSQL, applies migrations, makes sure the topics
// exist and joins the consumer group.
func (h *History) Start(ctx context.Context) error {
	sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	url := h.cfg.DatabaseURL
	if h.dbURL != nil {
		url = h.dbURL()
	}
	pool, err := pgutil.Open(sctx, url)
	if err != nil {
		return err
	}
	if err := Migrate(sctx, pool); err != nil {
		pool.Close()
		return err
	}
	h.pool = pool
	h.dbOK.Store(true)
	k := h.cfg.Kafka
	if _, err := k.EnsureTopics(sctx,
		kafkaio.TopicSpec{Name: k.RoomsTopic, Partitions: k.RoomsPartitions},
		kafkaio.TopicSpec{Name: k.DirectTopic, Partitions: k.DirectPartitions}); err != nil {
		pool.Close()
		return err
	}
	h.reader = kafka.NewReader(kafka.ReaderConfig{
		Brokers:         k.BrokerList(),
		GroupID:         h.cfg.GroupID,
		GroupTopics:     []string{k.RoomsTopic, k.DirectTopic},
		StartOffset:     kafka.FirstOffset,
		MinBytes:        1,
		MaxBytes:        16 << 20,
		MaxWait:         250 * time.Millisecond,
		CommitInterval:  0, // commit synchronously, after the database commit
		ReadLagInterval: -1,
		ErrorLogger: kafka.LoggerFunc(func(msg string, args ...any) {
			h.log.Debug("kafka reader", "msg", fmt.Sprintf(msg, args...))
		}),
	})
	return nil
}

// Run consumes until ctx ends. Fetching and decoding the next batch overlap
// with writing the current one; batches are written and their offsets
// committed strictly in order, by one goroutine.
func (h *History) Run(ctx context.Context) error {
	batches := make(chan *decoded, 1)
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(batches)
		for {
			msgs, err := h.fetchBatch(ctx)
			if err != nil {
				if ctx.Err() != nil || h.stopping.Load() {
					return nil
				}
				return fmt.Errorf("fetch: %w", err)
			}
			select {
			case batches <- decode(msgs):
			case <-ctx.Done():
				return nil
			}
		}
	})
	g.Go(func() error {
		for b := range batches {
			if err := h.store(ctx, b); err != nil {
				return nil // ctx ended while retrying: nothing committed, nothing lost
			}
			if err := h.commit(ctx, b.msgs); err != nil {
				return nil
			}
		}
		return nil
	})
	return g.Wait()
}

// decoded is a fetched batch split into rows and dead letters.
type decoded struct {
	msgs []kafka.Message
	rows []row
	dead []deadLetter
}

func decode(msgs []kafka.Message) *decoded {
	d := &decoded{msgs: msgs, rows: make([]row, 0, len(msgs))}
	for _, m := range msgs {
		ev, err := chatevent.Decode(m.Value)
		if err != nil {
			d.dead = append(d.dead, deadLetter{topic: m.Topic, partition: m.Partition, offset: m.Offset, key: m.Key, value: m.Value, err: err.Error()})
			continue
		}
		if chatevent.Conversation(&ev) == "" {
			continue // a broadcast announcement belongs to no conversation
		}
		d.rows = append(d.rows, row{ev: ev, topic: m.Topic, partition: m.Partition, offset: m.Offset, key: m.Key, value: m.Value})
	}
	return d
}

// fetchBatch returns up to BatchSize records: it blocks for the first, then
// collects more for at most BatchWait.
func (h *History) fetchBatch(ctx context.Context) ([]kafka.Message, error) {
	first, err := h.reader.FetchMessage(ctx)
	if err != nil {
		return nil, err
	}
	batch := []kafka.Message{first}
	wctx, cancel := context.WithTimeout(ctx, h.cfg.BatchWait)
	defer cancel()
	for len(batch) < h.cfg.BatchSize {
		m, err := h.reader.FetchMessage(wctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			break // the wait is over: write what we have
		}
		batch = append(batch, m)
	}
	return batch, nil
}

// store writes a batch, retrying with backoff while the database is away.
// It returns only on success or when ctx ends.
func (h *History) store(ctx context.Context, b *decoded) error {
	rows, dead, batch := b.rows, b.dead, b.msgs
	backoff := 100 * time.Millisecond
	for {
		t0 := time.Now()
		n, refused, err := writeBatch(ctx, h.pool, rows, dead)
		if err == nil {
			dead := append(dead[:len(dead):len(dead)], refused...)
			h.dbOK.Store(true)
			h.m.writeSecs.Observe(time.Since(t0).Seconds())
			h.m.batchSize.Observe(float64(len(batch)))
			h.m.rows.Add(float64(n))
			h.m.duplicates.Add(float64(int64(len(rows)-len(refused)) - n))
			if len(dead) > 0 {
				h.m.dead.Add(float64(len(dead)))
				h.log.Warn("records moved to dead_letters", "count", len(dead), "topic", dead[0].topic, "partition", dead[0].partition, "offset", dead[0].offset, "err", dead[0].err)
			}
			return nil
		}
		h.dbOK.Store(false)
		h.m.writeErrs.Inc()
		h.log.Warn("history write failed; retrying", "records", len(batch), "retry_in", backoff, "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff + rand.N(backoff/2)):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// commit commits the batch's offsets, retrying while the broker is away.
// A batch whose commit never lands is redelivered and stored idempotently.
func (h *History) commit(ctx context.Context, batch []kafka.Message) error {
	backoff := 100 * time.Millisecond
	for {
		err := h.reader.CommitMessages(ctx, batch...)
		if err == nil {
			h.updateLag(batch)
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		h.log.Warn("offset commit failed; retrying", "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func (h *History) updateLag(batch []kafka.Message) {
	last := map[string]kafka.Message{}
	for _, m := range batch {
		last[m.Topic+"/"+strconv.Itoa(m.Partition)] = m
	}
	h.lagMu.Lock()
	defer h.lagMu.Unlock()
	for k, m := range last {
		lag := max(m.HighWaterMark-m.Offset-1, 0)
		h.lag[k] = lag
		h.m.lag.WithLabelValues(m.Topic, strconv.Itoa(m.Partition)).Set(float64(lag))
	}
}

// Lag returns the consumer lag summed over the partitions seen so far.
func (h *History) Lag() int64 {
	h.lagMu.Lock()
	defer h.lagMu.Unlock()
	var sum int64
	for _, l := range h.lag {
		sum += l
	}
	return sum
}

// Ready reports whether the database answers and the consumer is caught up
// within ReadyMaxLag.
func (h *History) Ready(ctx context.Context) error {
	if h.pool == nil {
		return errors.New("not started")
	}
	if err := h.pool.Ping(ctx); err != nil {
		return fmt.Errorf("database unavailable: %w", err)
	}
	if !h.dbOK.Load() {
		return errors.New("database writes failing; retrying")
	}
	if lag := h.Lag(); lag > h.cfg.ReadyMaxLag {
		return fmt.Errorf("consumer lag %d above %d", lag, h.cfg.ReadyMaxLag)
	}
	return nil
}

// Stop leaves the consumer group and closes the database pool.
func (h *History) Stop(context.Context) error {
	h.stopping.Store(true)
	var err error
	if h.reader != nil {
		err = h.reader.Close()
	}
	if h.pool != nil {
		h.pool.Close()
	}
	return err
}
