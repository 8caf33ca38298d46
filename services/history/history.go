// Package history writes the log into PostgreSQL and serves the history API.
//
// Consumes chat.rooms, chat.direct and chat.acl as one consumer group
// (-history.group), from the earliest offset for a new group: messages are
// inserted, edits, deletes and read positions applied to them and to
// read_state, and chat.acl records (rooms, memberships, blocks) stored in
// their tables. A chatacl.Follower of chat.acl authorizes the API. Records are written in batches,
// one transaction each, idempotently (a redelivered event or a retried send
// adds no row); offsets are committed only after the database commit, so a
// crash or a database outage loses nothing. Undecodable records, and records
// the database refuses for their own data, go to the dead_letters table and
// are skipped, so no record can stall its partition.
//
// HTTP (JWT-authenticated): GET /v1/rooms/{room}/messages,
// GET /v1/dm/{peer}/messages, GET /v1/search, GET /v1/openapi.yaml, and
// the conversation API of docs/conversations.md (rooms, memberships,
// blocks, unread counts, edits and deletes), which appends to chat.acl,
// chat.rooms and chat.direct.
package history

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/segmentio/kafka-go"
	"golang.org/x/sync/errgroup"

	"github.com/chatsys/chat/pkg/auth"
	"github.com/chatsys/chat/pkg/chatacl"
	"github.com/chatsys/chat/pkg/chatevent"
	"github.com/chatsys/chat/pkg/kafkaio"
	"github.com/chatsys/chat/pkg/observe"
	"github.com/chatsys/chat/pkg/pgutil"
)

// History is the history service. Create it with New; it does no I/O until Start.
type History struct {
	cfg    Config
	log    *slog.Logger
	m      *metrics
	verify *auth.Verifier

	// pool is the writer's; api serves the API and readiness probes, its
	// connections with statement_timeout = DBTimeout. Both are nil until
	// Start has connected and migrated: the API answers 503 until then.
	pool   atomic.Pointer[pgxpool.Pool]
	api    atomic.Pointer[pgxpool.Pool]
	reader *kafka.Reader
	// stats is reader for the metrics collector, which may run before Start.
	stats atomic.Pointer[kafka.Reader]

	// acl follows chat.acl for authorization (started in Start); appender
	// appends its records; rooms and direct append edits and deletes.
	acl      *chatacl.Follower
	appender *chatacl.Appender
	rooms    *eventWriter
	direct   *eventWriter
	changes  changes // edits and deletes appended, maybe not yet in the table
	// writersSet: rooms and direct are set (read by the stats collector).
	writersSet atomic.Bool

	dbOK     atomic.Bool // the last database write (or ping) succeeded
	stopping atomic.Bool
	topics   map[string]int // consumed topic → partitions (set by Start)
	lagMu    sync.Mutex
	lag      map[topicPart]int64     // the group's records behind (lagLoop)
	fetched  map[topicPart]time.Time // when this instance last committed from the partition
}

type metrics struct {
	rows       prometheus.Counter
	duplicates prometheus.Counter
	batchSize  prometheus.Histogram
	writeSecs  prometheus.Histogram
	writeErrs  prometheus.Counter
	lag        *prometheus.GaugeVec
	dead       prometheus.Counter
	ops        prometheus.Counter
	aclBad     prometheus.Counter
	requests   *prometheus.CounterVec
	reqSecs    *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer, group string) *metrics {
	f := promauto.With(reg)
	return &metrics{
		rows:       f.NewCounter(prometheus.CounterOpts{Name: "chat_history_rows_written_total", Help: "Messages inserted into PostgreSQL."}),
		duplicates: f.NewCounter(prometheus.CounterOpts{Name: "chat_history_duplicates_total", Help: "Records skipped because their event (or their username and client_id) was already stored."}),
		batchSize:  f.NewHistogram(prometheus.HistogramOpts{Name: "chat_history_batch_records", Help: "Records per database transaction.", Buckets: prometheus.ExponentialBuckets(1, 4, 7)}),
		writeSecs:  f.NewHistogram(prometheus.HistogramOpts{Name: "chat_history_write_duration_seconds", Help: "Duration of one batch transaction.", Buckets: prometheus.DefBuckets}),
		writeErrs:  f.NewCounter(prometheus.CounterOpts{Name: "chat_history_write_errors_total", Help: "Failed batch transactions (retried)."}),
		lag:        f.NewGaugeVec(prometheus.GaugeOpts{Name: "chat_history_consumer_lag_records", Help: "Records between the group's committed offset and the partition's end, every partition of the consumed topics (the same from every instance).", ConstLabels: prometheus.Labels{"group": group}}, []string{"topic", "partition"}),
		dead:       f.NewCounter(prometheus.CounterOpts{Name: "chat_history_dead_letters_total", Help: "Records moved to dead_letters: undecodable, or refused by the database for their own data."}),
		ops:        f.NewCounter(prometheus.CounterOpts{Name: "chat_history_ops_applied_total", Help: "Edits, deletes, read positions and chat.acl records applied to the tables."}),
		aclBad:     f.NewCounter(prometheus.CounterOpts{Name: "chat_history_acl_undecodable_total", Help: "chat.acl records the authorization follower skipped because they do not decode."}),
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
	h := &History{cfg: cfg, log: log, m: newMetrics(reg, cfg.GroupID), verify: v, lag: map[topicPart]int64{}, fetched: map[topicPart]time.Time{}}
	h.acl = chatacl.New(cfg.Kafka, log, h.m.aclBad.Inc)
	if reg != nil {
		// kafka-go's reader statistics and both pools' (pool="writer", "api").
		reg.MustRegister(
			observe.NewKafkaReaderCollector("history", func() []kafka.ReaderStats {
				if r := h.stats.Load(); r != nil {
					return []kafka.ReaderStats{r.Stats()}
				}
				return nil
			}),
			observe.NewPgxPoolCollector(func() map[string]*pgxpool.Pool {
				return map[string]*pgxpool.Pool{"writer": h.pool.Load(), "api": h.api.Load()}
			}))
		// The writers of edits and deletes, one per topic.
		for i, topic := range []string{cfg.Kafka.RoomsTopic, cfg.Kafka.DirectTopic} {
			reg.MustRegister(observe.NewKafkaWriterCollector("history-"+topic, func() []kafka.WriterStats {
				if !h.writersSet.Load() {
					return nil
				}
				w := h.rooms
				if i == 1 {
					w = h.direct
				}
				return []kafka.WriterStats{w.w.Stats()}
			}))
		}
		// chat.acl: the follower authorizing the API, the appender of its
		// conversation changes.
		reg.MustRegister(
			observe.NewKafkaReaderCollector("history-acl", h.acl.Stats),
			observe.NewKafkaWriterCollector("history-"+cfg.Kafka.ACLTopic, func() []kafka.WriterStats {
				if !h.writersSet.Load() {
					return nil
				}
				return []kafka.WriterStats{h.appender.Stats()}
			}))
	}
	return h, nil
}

// dbWait bounds Start's wait for a database that does not answer yet.
const dbWait = 60 * time.Second

// Name returns "history".
func (h *History) Name() string { return "history" }

// Start connects to PostgreSQL, applies migrations, makes sure the topics
// exist and joins the consumer group. The API answers 503 unavailable until
// it has connected and migrated.
func (h *History) Start(ctx context.Context) error {
	url := h.cfg.DatabaseURL
	// A database that is not up yet (starting alongside, restarting) is
	// waited for, up to dbWait, with the API answering 503 meanwhile; a
	// connection string that does not parse, a refused password or a
	// missing database are not worth waiting for.
	var pool *pgxpool.Pool
	var last error
	_, perr := pgxpool.ParseConfig(url)
	wctx, wcancel := context.WithTimeout(ctx, dbWait)
	err := kafkaio.Retry(wctx, 200*time.Millisecond, 5*time.Second, 0, func() error {
		pool, last = openPool(wctx, url, nil)
		var pe *pgconn.PgError
		if perr != nil || (errors.As(last, &pe) && (strings.HasPrefix(pe.Code, "28") || pe.Code == "3D000")) {
			return backoff.Permanent(last)
		}
		return last
	}, func(err error, wait time.Duration) {
		h.log.Warn("database not reachable yet; retrying", "retry_in", wait.Round(time.Millisecond), "err", err)
	})
	waited := wctx.Err() != nil
	wcancel()
	if err != nil {
		if last != nil && waited && ctx.Err() == nil {
			return fmt.Errorf("database not reachable within %v: %w", dbWait, last)
		}
		return err
	}
	// Then the rest of the start: migrations, topics, the ACL.
	sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := Migrate(sctx, pool); err != nil {
		pool.Close()
		return err
	}
	api, err := openPool(sctx, url, map[string]string{"statement_timeout": strconv.FormatInt(h.cfg.DBTimeout.Milliseconds(), 10)})
	if err != nil {
		pool.Close()
		return err
	}
	k := h.cfg.Kafka
	var specs []kafkaio.TopicSpec
	for _, s := range k.AllTopics() {
		if s.Name == k.RoomsTopic || s.Name == k.DirectTopic || s.Name == k.ACLTopic {
			specs = append(specs, s)
		}
	}
	counts, err := k.EnsureTopics(sctx, specs...)
	if err != nil {
		pool.Close()
		api.Close()
		return err
	}
	h.topics = counts
	// The authorization state is loaded before the API serves.
	if err := h.acl.Start(sctx); err != nil {
		pool.Close()
		api.Close()
		return err
	}
	h.appender = chatacl.NewAppender(k, h.acl)
	h.rooms, h.direct = newEventWriter(k, k.RoomsTopic), newEventWriter(k, k.DirectTopic)
	h.writersSet.Store(true) // after the two: the stats collector reads them then
	h.dbOK.Store(true)
	h.pool.Store(pool)
	h.api.Store(api)
	h.reader = kafka.NewReader(kafka.ReaderConfig{
		Brokers:         k.BrokerList(),
		GroupID:         h.cfg.GroupID,
		GroupTopics:     []string{k.RoomsTopic, k.DirectTopic, k.ACLTopic},
		StartOffset:     kafka.FirstOffset,
		MinBytes:        1,
		MaxBytes:        16 << 20,
		MaxWait:         time.Second, // a long poll: the broker answers as soon as records arrive
		CommitInterval:  0,           // commit synchronously, after the database commit
		ReadLagInterval: -1,
		// Keep retrying underneath rather than queue errors for
		// FetchMessage while the broker is away.
		MaxAttempts: 1 << 30,
		// A writer that died without leaving the group (a crash, a broker
		// restart) holds its partitions until its session times out:
		// keep that short (the usual broker minimum), and rejoin quickly.
		SessionTimeout:    6 * time.Second,
		HeartbeatInterval: time.Second,
		RebalanceTimeout:  6 * time.Second,
		JoinGroupBackoff:  500 * time.Millisecond,
		ErrorLogger: kafka.LoggerFunc(func(msg string, args ...any) {
			h.log.Debug("kafka reader", "msg", fmt.Sprintf(msg, args...))
		}),
	})
	h.stats.Store(h.reader)
	return nil
}

// openPool returns a pool for url after checking it answers. params are
// session settings of every connection. A query whose context ends is
// cancelled on the server (a cancel request) rather than by dropping the
// connection, which is dropped only if the server has not answered a
// second later.
func openPool(ctx context.Context, url string, params map[string]string) (*pgxpool.Pool, error) {
	return pgutil.OpenWith(ctx, url, func(cfg *pgxpool.Config) {
		for k, v := range params {
			cfg.ConnConfig.RuntimeParams[k] = v
		}
		cfg.ConnConfig.BuildContextWatcherHandler = func(c *pgconn.PgConn) ctxwatch.Handler {
			return &pgconn.CancelRequestContextWatcherHandler{Conn: c, DeadlineDelay: time.Second}
		}
	})
}

// Run consumes until ctx ends. Fetching and decoding the next batch overlap
// with writing the current one; batches are written and their offsets
// committed strictly in order, by one goroutine.
func (h *History) Run(ctx context.Context) error {
	batches := make(chan *decoded, 1)
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { h.lagLoop(ctx); return nil })
	g.Go(func() error {
		defer close(batches)
		for {
			msgs, err := h.fetchBatch(ctx)
			if err != nil {
				return nil // ctx ended or Stop closed the reader
			}
			select {
			case batches <- decode(msgs, h.cfg.Kafka.ACLTopic):
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

// decoded is a fetched batch split into rows to insert, operations to
// apply after them (edits, deletes, read positions, chat.acl records, in
// log order) and dead letters; traced are its records that carry a sampled
// trace context, in log order.
type decoded struct {
	msgs   []kafka.Message
	rows   []row
	ops    []op
	dead   []deadLetter
	traced []traced
}

func decode(msgs []kafka.Message, aclTopic string) *decoded {
	d := &decoded{msgs: msgs, rows: make([]row, 0, len(msgs))}
	for i := range msgs {
		m := &msgs[i]
		if id, ok := d.add(m, aclTopic); ok {
			if pctx, ok := kafkaio.SampledTraceContext(m); ok {
				d.traced = append(d.traced, traced{parent: pctx, topic: m.Topic, partition: m.Partition, offset: m.Offset, eventID: id})
			}
		}
	}
	return d
}

// add files m as a row, an op or a dead letter, returning its event id
// ("" when it has none) and whether it is written at all.
func (d *decoded) add(m *kafka.Message, aclTopic string) (string, bool) {
	src := source{topic: m.Topic, partition: m.Partition, offset: m.Offset, key: m.Key, value: m.Value, at: m.Time}
	if m.Topic == aclTopic {
		r, err := chatevent.DecodeACL(m.Value)
		if err != nil {
			d.dead = append(d.dead, src.dead(err.Error()))
			return "", true
		}
		d.ops = append(d.ops, op{source: src, acl: &r})
		return "", true
	}
	ev, err := chatevent.Decode(m.Value)
	if err != nil {
		d.dead = append(d.dead, src.dead(err.Error()))
		return "", true
	}
	switch ev.Type {
	case chatevent.TypeEdit, chatevent.TypeDelete, chatevent.TypeRead:
		d.ops = append(d.ops, op{source: src, ev: ev})
		return ev.ID, true
	}
	if chatevent.Conversation(&ev) == "" {
		return "", false // a broadcast announcement belongs to no conversation
	}
	d.rows = append(d.rows, row{ev: ev, topic: m.Topic, partition: m.Partition, offset: m.Offset, key: m.Key, value: m.Value})
	return ev.ID, true
}

// fetchBatch returns up to BatchSize records: it blocks for the first
// (riding out broker trouble: see fetch), then collects more for at most
// BatchWait. It fails only when ctx ends or Stop closed the reader.
func (h *History) fetchBatch(ctx context.Context) ([]kafka.Message, error) {
	first, err := kafkaio.Fetch(ctx, h.reader, h.stopping.Load, func(err error, wait time.Duration) {
		h.log.Warn("fetch from the log failed; retrying", "retry_in", wait, "err", err)
	})
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

// writeTimeout bounds one batch transaction: one that hangs (a locked
// table, a database that stopped answering) is cancelled and retried.
const writeTimeout = 30 * time.Second

// store writes a batch, retrying with backoff while the database is away.
// It returns only on success or when ctx ends.
func (h *History) store(ctx context.Context, b *decoded) error {
	rows, ops, dead, batch := b.rows, b.ops, b.dead, b.msgs
	pool := h.pool.Load()
	spans := h.startStoreSpans(b)
	err := retry(ctx, func() error {
		t0 := time.Now()
		wctx, cancel := context.WithTimeout(ctx, writeTimeout)
		defer cancel()
		n, refused, err := writeBatch(wctx, pool, rows, ops, dead)
		if err != nil {
			return err
		}
		refusedRows := 0
		for _, d := range refused {
			if !d.op {
				refusedRows++
			}
		}
		dead := append(dead[:len(dead):len(dead)], refused...)
		spans.end(b, dead)
		h.dbOK.Store(true)
		h.m.writeSecs.Observe(time.Since(t0).Seconds())
		h.m.batchSize.Observe(float64(len(batch)))
		h.m.rows.Add(float64(n))
		h.m.duplicates.Add(float64(int64(len(rows)-refusedRows) - n))
		h.m.ops.Add(float64(len(ops) - (len(refused) - refusedRows)))
		if len(dead) > 0 {
			h.m.dead.Add(float64(len(dead)))
			h.log.WarnContext(spans.of(b, dead[0].topic, dead[0].partition, dead[0].offset), "records moved to dead_letters", "count", len(dead), "topic", dead[0].topic, "partition", dead[0].partition, "offset", dead[0].offset, "err", dead[0].err)
		}
		return nil
	}, func(err error, wait time.Duration) {
		h.dbOK.Store(false)
		h.m.writeErrs.Inc()
		spans.retrying(err)
		h.log.WarnContext(observe.SpanContext(spans...), "history write failed; retrying", "records", len(batch), "retry_in", wait, "err", err)
	})
	if err != nil {
		spans.abandon(err)
	}
	return err
}

// commit commits the batch's offsets, retrying while the broker is away.
// A batch whose commit never lands is redelivered and stored idempotently.
func (h *History) commit(ctx context.Context, batch []kafka.Message) error {
	return retry(ctx, func() error {
		if err := h.reader.CommitMessages(ctx, batch...); err != nil {
			if h.stopping.Load() {
				return backoff.Permanent(err) // Stop closed the reader: redelivered to the next owner
			}
			return err
		}
		h.noteCommitted(batch)
		return nil
	}, func(err error, wait time.Duration) {
		h.log.Warn("offset commit failed; retrying", "retry_in", wait, "err", err)
	})
}

// retry runs op until it succeeds or ctx ends, waiting 100ms doubling up
// to 5s between attempts (±50%: writers that fail together do not retry
// together).
func retry(ctx context.Context, op func() error, notify func(err error, wait time.Duration)) error {
	return kafkaio.Retry(ctx, 100*time.Millisecond, 5*time.Second, 0, op, notify)
}

// topicPart names a partition of a topic.
type topicPart struct {
	topic     string
	partition int
}

// noteCommitted notes the partitions this instance just committed from.
func (h *History) noteCommitted(batch []kafka.Message) {
	now := time.Now()
	h.lagMu.Lock()
	defer h.lagMu.Unlock()
	var last topicPart
	for _, m := range batch {
		if tp := (topicPart{m.Topic, m.Partition}); tp != last {
			h.fetched[tp] = now
			last = tp
		}
	}
}

// lagInterval is how often lagLoop reads the group's lag from the broker;
// ownedFor is how long a partition counts as this instance's after its
// last commit from it (then it is idle, or another instance has it).
const (
	lagInterval = 5 * time.Second
	ownedFor    = 30 * time.Second
)

// lagLoop reads the group's lag from the broker (committed offsets against
// the partitions' ends) every lagInterval and exports it for every
// partition, so the gauge grows while the group is stalled, and no
// instance exports a partition it no longer reads at a stale value.
func (h *History) lagLoop(ctx context.Context) {
	t := time.NewTicker(lagInterval)
	defer t.Stop()
	failures := 0
	for {
		qctx, cancel := context.WithTimeout(ctx, lagInterval)
		lag, err := h.cfg.Kafka.GroupLag(qctx, h.cfg.GroupID, h.topics)
		cancel()
		switch {
		case err != nil && ctx.Err() != nil:
		case err != nil:
			failures++
			h.log.Debug("reading the group's lag", "err", err)
			if failures == 3 {
				// Stale values would keep lag alerts firing (or quiet)
				// and readiness wrong: export none until it answers.
				h.log.Warn("cannot read the group's lag from the broker; not exporting it until it answers", "err", err)
				h.lagMu.Lock()
				clear(h.lag)
				h.m.lag.Reset()
				h.lagMu.Unlock()
			}
		default:
			failures = 0
			h.lagMu.Lock()
			for topic, ps := range lag {
				for p, n := range ps {
					h.lag[topicPart{topic, p}] = n
					h.m.lag.WithLabelValues(topic, strconv.Itoa(p)).Set(float64(n))
				}
			}
			h.lagMu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Lag returns the group's lag summed over the partitions this instance
// consumes: those it committed from, until it has not for ownedFor and the
// partition's lag is 0 (a partition it stalled on keeps counting; one that
// moved to another instance counts until that one catches up).
func (h *History) Lag() int64 {
	h.lagMu.Lock()
	defer h.lagMu.Unlock()
	var sum int64
	for k, at := range h.fetched {
		if time.Since(at) > ownedFor && h.lag[k] == 0 {
			delete(h.fetched, k)
			continue
		}
		sum += h.lag[k]
	}
	return sum
}

// Ready reports whether the database answers within half of DBTimeout
// (a bounded read of the messages table, so a table locked against
// readers counts as not answering) and the consumer is caught up within
// ReadyMaxLag.
func (h *History) Ready(ctx context.Context) error {
	api := h.api.Load()
	if api == nil {
		return errors.New("not started: connecting to the database")
	}
	pctx, cancel := context.WithTimeout(ctx, h.cfg.DBTimeout/2)
	defer cancel()
	var exists bool
	if err := api.QueryRow(pctx, "SELECT EXISTS (SELECT 1 FROM messages)").Scan(&exists); err != nil {
		return fmt.Errorf("database does not answer within %v: %w", h.cfg.DBTimeout/2, err)
	}
	if !h.dbOK.Load() {
		return errors.New("database writes failing; retrying")
	}
	if lag := h.Lag(); lag > h.cfg.ReadyMaxLag {
		return fmt.Errorf("consumer lag %d above %d", lag, h.cfg.ReadyMaxLag)
	}
	return nil
}

// Stop leaves the consumer group and closes the database pools.
func (h *History) Stop(context.Context) error {
	h.stopping.Store(true)
	var errs []error
	if h.reader != nil {
		errs = append(errs, h.reader.Close())
	}
	if h.appender != nil {
		errs = append(errs, h.appender.Close(), h.rooms.Close(), h.direct.Close())
	}
	errs = append(errs, h.acl.Close())
	for _, p := range []*pgxpool.Pool{h.pool.Load(), h.api.Load()} {
		if p != nil {
			p.Close()
		}
	}
	return errors.Join(errs...)
}
