// Package router owns presence and private-message targeting.
//
// Consumes chat.presence (every instance reads all of it, from the newest
// presence snapshot's positions, and rebuilds its tables) and chat.direct
// (instances share it as one consumer group, -router.group). Produces
// chat.deliveries (one record per edge holding the sender or the target of
// a private message, keyed by the edge id), presence snapshots, and, when
// an edge's heartbeat stops while the router reads presence without
// trouble, leave events on chat.rooms for the room members it held.
//
// Also follows chat.acl (rooms, memberships, blocks: chatacl.Follower) so
// that the member list of a private room is shown only to its members.
//
// HTTP (JWT-authenticated): GET /v1/presence?user=…, GET /v1/rooms/{room}/members.
package router

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel"
	"golang.org/x/sync/errgroup"

	"github.com/chatsys/chat/pkg/auth"
	"github.com/chatsys/chat/pkg/chatacl"
	"github.com/chatsys/chat/pkg/chatevent"
	"github.com/chatsys/chat/pkg/httperr"
	"github.com/chatsys/chat/pkg/kafkaio"
	"github.com/chatsys/chat/pkg/observe"
)

var tracer = otel.Tracer("github.com/chatsys/chat/services/router")

// Config configures a router.
type Config struct {
	Kafka kafkaio.Config
	Auth  auth.Config
	// GroupID is the consumer group over chat.direct (default chat-router).
	GroupID string
	// EdgeTimeout is how long an edge may stay silent, while the router
	// reads chat.presence without trouble, before its users go offline
	// (default 10s; edges beat every 2s).
	EdgeTimeout time.Duration
	// SessionTimeout is the consumer-group session timeout over
	// chat.direct: the partitions of a router that died without leaving
	// the group move to the others (or to its restart) after this long
	// (default 6s, the usual broker minimum).
	SessionTimeout time.Duration
	// SnapshotRecords: a router writes a presence snapshot once it has
	// applied this many presence records since its last one, and at least
	// as many as the snapshot has entries (default 10000; 0 writes none).
	SnapshotRecords int
	// ForgetAfter is how long the last-seen time of a user who is not
	// connected is kept (default 720h; 0 keeps it forever).
	ForgetAfter time.Duration
}

// RegisterFlags registers the router.* flags.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.GroupID, "router.group", "chat-router", "consumer group over the private-message topic")
	fs.DurationVar(&c.EdgeTimeout, "router.edge-timeout", 10*time.Second, "an edge silent this long (while the router reads presence without trouble) is expired: its users go offline")
	fs.DurationVar(&c.SessionTimeout, "router.session-timeout", 6*time.Second, "consumer-group session timeout: a crashed router's private-message partitions move on after this long")
	fs.IntVar(&c.SnapshotRecords, "router.snapshot-records", 10000, "write a presence snapshot after this many presence records (and at least the snapshot's size); 0 writes none")
	fs.DurationVar(&c.ForgetAfter, "router.forget-after", 30*24*time.Hour, "forget the last-seen time of users not connected for this long (0 = never)")
}

// Defaults returns a Config with the defaults of RegisterFlags.
func Defaults() Config {
	var c Config
	fs := flag.NewFlagSet("router", flag.ContinueOnError)
	c.RegisterFlags(fs)
	c.Kafka.RegisterFlags(fs)
	return c
}

// Router is one router instance. Create it with New; it does no I/O until Start.
type Router struct {
	cfg    Config
	log    *slog.Logger
	verify *auth.Verifier
	t      *table
	acl    *chatacl.Follower

	// Set by Start, read-only after.
	started      time.Time
	directParts  int     // partitions of chat.direct
	firstAtStart []int64 // presence partition starts when Start ran
	endAtStart   []int64 // presence partition ends when Start ran
	admin        *kafka.Client
	direct       *kafka.Reader
	deliveries   *kafka.Writer
	rooms        *kafka.Writer
	snapshots    *kafka.Writer
	// clients is what the kafka-go statistics collectors read; set by
	// Start, which a scrape may run concurrently with.
	clients atomic.Pointer[kafkaClients]
	// presenceReaders are the readers of chat.presence's partitions (for
	// the statistics collector), added by tailPresence.
	presenceMu      sync.Mutex
	presenceReaders []*kafka.Reader

	// Set by loadPresence before the partition readers start.
	startAt      []int64
	fromSnapshot bool
	toReplay     int64
	catchUp      time.Duration // set when caughtUp turns true

	caughtUp     atomic.Bool
	caughtUpCh   chan struct{}
	lastSnapshot atomic.Int64 // unix nanoseconds of the last snapshot written (or of the start)
	remaining    atomic.Int64
	health       health
	stopping     atomic.Bool

	probeEvery    time.Duration // presence health probe and expiry check
	snapshotCheck time.Duration // how often to consider writing a snapshot

	// Recently routed events, for a user's connection on a new edge (see
	// late.go), and the arrivals the presence readers queue for lateLoop.
	late     lateRoutes
	arrivals chan arrival

	routed           prometheus.Counter
	aclBad           prometheus.Counter
	records          prometheus.Counter
	lateRecords      prometheus.Counter
	lateDropped      prometheus.Counter
	expired          prometheus.Counter
	snapshotsWritten prometheus.Counter
	healthy          prometheus.Gauge
	lag              *prometheus.GaugeVec
}

// kafkaClients are the kafka-go clients whose statistics are exported.
type kafkaClients struct {
	direct  *kafka.Reader
	writers map[string]*kafka.Writer // by topic
}

// New returns a router for cfg.
func New(cfg Config, log *slog.Logger, reg prometheus.Registerer) (*Router, error) {
	if err := cfg.Kafka.Validate(); err != nil {
		return nil, err
	}
	if cfg.GroupID == "" || cfg.EdgeTimeout <= 0 || cfg.SessionTimeout <= 0 {
		return nil, errors.New("router.group, router.edge-timeout and router.session-timeout must be set")
	}
	if cfg.SnapshotRecords < 0 || cfg.ForgetAfter < 0 {
		return nil, errors.New("router.snapshot-records and router.forget-after must not be negative")
	}
	v, err := auth.NewVerifier(cfg.Auth)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f := promauto.With(reg)
	r := &Router{cfg: cfg, log: log, verify: v, t: newTable(), caughtUpCh: make(chan struct{}), arrivals: make(chan arrival, 4096),
		probeEvery:       min(max(cfg.EdgeTimeout/10, 100*time.Millisecond), time.Second),
		snapshotCheck:    5 * time.Second,
		routed:           f.NewCounter(prometheus.CounterOpts{Name: "chat_router_dms_routed_total", Help: "chat.direct events (private messages, their edits and deletes, read positions) routed to edges."}),
		aclBad:           f.NewCounter(prometheus.CounterOpts{Name: "chat_router_acl_bad_records_total", Help: "chat.acl records skipped because they do not decode."}),
		records:          f.NewCounter(prometheus.CounterOpts{Name: "chat_router_deliveries_total", Help: "Delivery records written (one per edge per message)."}),
		lateRecords:      f.NewCounter(prometheus.CounterOpts{Name: "chat_router_late_deliveries_total", Help: "Delivery records written to an edge where a recipient connected just after the event was routed (included in chat_router_deliveries_total)."}),
		lateDropped:      f.NewCounter(prometheus.CounterOpts{Name: "chat_router_late_arrivals_dropped_total", Help: "Connects not checked for late deliveries because too many were waiting (those events are in history)."}),
		expired:          f.NewCounter(prometheus.CounterOpts{Name: "chat_router_edges_expired_total", Help: "Edges expired for a missed heartbeat."}),
		snapshotsWritten: f.NewCounter(prometheus.CounterOpts{Name: "chat_router_presence_snapshots_total", Help: "Presence snapshots written."}),
		healthy:          f.NewGauge(prometheus.GaugeOpts{Name: "chat_router_presence_current", Help: "1 while the router reads chat.presence without trouble (edges can be expired), else 0."}),
		lag: f.NewGaugeVec(prometheus.GaugeOpts{Name: "chat_router_consumer_lag_records", Help: "Records of chat.direct between the group's committed offset and each partition's end, read from the broker every 5s (every partition, the same from every instance).",
			ConstLabels: prometheus.Labels{"group": cfg.GroupID}}, []string{"topic", "partition"}),
	}
	if reg != nil {
		reg.MustRegister(
			observe.NewKafkaReaderCollector("router-direct", func() []kafka.ReaderStats {
				if c := r.clients.Load(); c != nil {
					return []kafka.ReaderStats{c.direct.Stats()}
				}
				return nil
			}))
		k := cfg.Kafka
		for _, topic := range []string{k.DeliveriesTopic, k.RoomsTopic, snapshotTopic(k.PresenceTopic)} {
			reg.MustRegister(observe.NewKafkaWriterCollector("router-"+topic, func() []kafka.WriterStats {
				if c := r.clients.Load(); c != nil {
					return []kafka.WriterStats{c.writers[topic].Stats()}
				}
				return nil
			}))
		}
	}
	r.acl = chatacl.New(cfg.Kafka, log, r.aclBad.Inc)
	if reg != nil {
		reg.MustRegister(
			observe.NewKafkaReaderCollector("router-presence", r.presenceStats),
			observe.NewKafkaReaderCollector("router-acl", r.acl.Stats))
	}
	return r, nil
}

// Name returns "router".
func (r *Router) Name() string { return "router" }

// Start creates the topics, loads chat.acl (and keeps following it), fixes
// where catching up on presence ends, makes sure the group has offsets for
// every private-message partition and joins the group.
func (r *Router) Start(ctx context.Context) (err error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	k := r.cfg.Kafka
	specs := append(k.AllTopics(), kafkaio.TopicSpec{Name: snapshotTopic(k.PresenceTopic), Partitions: 1})
	counts, err := k.EnsureTopics(ctx, specs...)
	if err != nil {
		return err
	}
	if err := r.acl.Start(ctx); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			r.acl.Close()
		}
	}()
	r.started = time.Now()
	r.lastSnapshot.Store(r.started.UnixNano())
	n := counts[k.PresenceTopic]
	r.firstAtStart, r.endAtStart = make([]int64, n), make([]int64, n)
	for p := 0; p < n; p++ {
		if r.firstAtStart[p], r.endAtStart[p], err = k.Offsets(ctx, k.PresenceTopic, p); err != nil {
			return err
		}
	}
	r.remaining.Store(int64(n))
	r.directParts = counts[k.DirectTopic]
	start, err := r.initGroupOffsets(ctx, counts[k.DirectTopic])
	if err != nil {
		r.log.Warn("could not initialize the group's offsets: partitions without a committed offset start at their end", "err", err)
	}
	r.admin = k.Client()
	r.direct = r.newDirectReader(start)
	r.deliveries = k.NewWriter(k.DeliveriesTopic)
	// The second log hop of every DM: route() hands the writer everything
	// that queued during its previous write in one call, so there is
	// nothing to wait for. (kafka-go adds all of one call's records of a
	// partition to one batch before its timer can cut it.)
	r.deliveries.BatchTimeout = time.Microsecond
	// A delivery is a copy of a chat.direct event, which is durable (and in
	// history): it needs no fsync of its own. acks=1 is answered once the
	// leader has it (the embedded broker: in the page cache, safe from a
	// process crash), so a DM waits for one fsync, not two. A delivery lost
	// to a machine crash after its offset was committed is not delivered
	// live; the recipient finds it in history (GET /v1/dm?since=).
	r.deliveries.RequiredAcks = kafka.RequireOne
	r.rooms = k.NewWriter(k.RoomsTopic)
	r.snapshots = k.NewWriter(snapshotTopic(k.PresenceTopic))
	r.snapshots.BatchSize = 16
	r.clients.Store(&kafkaClients{direct: r.direct, writers: map[string]*kafka.Writer{
		k.DeliveriesTopic: r.deliveries, k.RoomsTopic: r.rooms, snapshotTopic(k.PresenceTopic): r.snapshots}})
	return nil
}

// Ready reports whether the presence tables are caught up with the log.
func (r *Router) Ready(context.Context) error {
	if !r.caughtUp.Load() {
		return errors.New("rebuilding presence from the log")
	}
	return nil
}

// Run loads the newest presence snapshot, reads presence from there,
// expires silent edges, writes snapshots and routes private messages.
func (r *Router) Run(ctx context.Context) error {
	r.loadPresence(ctx)
	g, ctx := errgroup.WithContext(ctx)
	for p := range r.endAtStart {
		g.Go(func() error { return r.tailPresence(ctx, p) })
	}
	g.Go(func() error { return r.probeLoop(ctx) })
	g.Go(func() error { return r.expireLoop(ctx) })
	g.Go(func() error { return r.snapshotLoop(ctx) })
	g.Go(func() error { return r.forgetLoop(ctx) })
	g.Go(func() error { return r.route(ctx) })
	g.Go(func() error { return r.lateLoop(ctx) })
	g.Go(func() error { r.lagLoop(ctx); return nil })
	return g.Wait()
}

// Stop writes a last presence snapshot (when caught up and something
// changed), leaves the group and flushes the writers.
func (r *Router) Stop(ctx context.Context) error {
	r.stopping.Store(true)
	var errs []error
	if r.caughtUp.Load() && r.cfg.SnapshotRecords > 0 && r.t.appliedSinceSnapshot() > 0 {
		if _, err := r.writeSnapshot(ctx, true); err != nil {
			r.log.Warn("presence snapshot at stop failed", "err", err)
		}
	}
	if r.direct != nil {
		errs = append(errs, r.direct.Close())
	}
	for _, w := range []*kafka.Writer{r.deliveries, r.rooms, r.snapshots} {
		if w != nil {
			errs = append(errs, w.Close())
		}
	}
	errs = append(errs, r.acl.Close())
	return errors.Join(errs...)
}

// Routes registers the presence API on mux.
func (r *Router) Routes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/presence", r.authed(func(w http.ResponseWriter, req *http.Request, _ auth.Identity) {
		users := req.URL.Query()["user"]
		if len(users) == 0 || len(users) > 200 {
			httpError(w, http.StatusBadRequest, "invalid_user", "give 1 to 200 user parameters")
			return
		}
		out := make([]UserPresence, 0, len(users))
		for _, u := range users {
			if !chatevent.ValidUsername(u) {
				httpError(w, http.StatusBadRequest, "invalid_user", strconv.Quote(u)+" is not a valid username")
				return
			}
			out = append(out, r.t.presence(u))
		}
		writeJSON(w, map[string]any{"users": out})
	}))
	mux.HandleFunc("GET /v1/rooms/{room}/members", r.authed(func(w http.ResponseWriter, req *http.Request, id auth.Identity) {
		room := req.PathValue("room")
		if !chatevent.ValidRoom(room) {
			httpError(w, http.StatusBadRequest, "invalid_room", strconv.Quote(room)+" is not a valid room name")
			return
		}
		members, ok := r.roomMembers(room, id)
		if !ok { // the state may lag: sync before refusing, then look again
			r.acl.SyncBriefly(req.Context(), 2*time.Second)
			members, ok = r.roomMembers(room, id)
		}
		if !ok {
			httpError(w, http.StatusNotFound, "not_found", "room not found") // the same for every room: no hint
			return
		}
		writeJSON(w, map[string]any{"room": room, "members": members})
	}))
}

// roomMembers returns the users online in room, and false when id may not
// read it (a private room id is not a member of) or it does not exist (no
// room record and nobody online in it): the two look the same.
func (r *Router) roomMembers(room string, id auth.Identity) ([]string, bool) {
	acl := r.acl.ACL()
	if !acl.MayRead(room, id.Username, id.Admin) {
		return nil, false
	}
	members := r.t.members(room)
	if _, ok := acl.Room(room); !ok && len(members) == 0 {
		return nil, false
	}
	return members, true
}

func (r *Router) authed(h func(http.ResponseWriter, *http.Request, auth.Identity)) http.HandlerFunc {
	return func(w http.ResponseWriter, req *http.Request) {
		id, err := r.verify.VerifyAPIRequest(req)
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="chat"`)
			httpError(w, http.StatusUnauthorized, "unauthorized", err.Error())
			return
		}
		if !r.caughtUp.Load() {
			httpError(w, http.StatusServiceUnavailable, "unavailable", "presence is still being rebuilt from the log")
			return
		}
		h(w, req, id)
	}
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

func httpError(w http.ResponseWriter, status int, code, msg string) {
	httperr.Write(w, status, code, msg)
}

// lagInterval is how often lagLoop reads the group's lag.
const lagInterval = 5 * time.Second

// lagLoop exports the group's lag read from the broker (committed offsets
// against partition ends, kafkaio.GroupLag), every partition of
// chat.direct: it grows while routing is stalled, and no instance exports
// a partition it no longer reads at a stale value. After three failed
// reads it exports none until the broker answers.
func (r *Router) lagLoop(ctx context.Context) {
	t := time.NewTicker(lagInterval)
	defer t.Stop()
	topics := map[string]int{r.cfg.Kafka.DirectTopic: r.directParts}
	failures := 0
	for {
		qctx, cancel := context.WithTimeout(ctx, lagInterval)
		lag, err := r.cfg.Kafka.GroupLag(qctx, r.cfg.GroupID, topics)
		cancel()
		switch {
		case err != nil && ctx.Err() != nil:
		case err != nil:
			if failures++; failures == 3 {
				r.log.Warn("cannot read the group's lag from the broker; not exporting it until it answers", "err", err)
				r.lag.Reset()
			}
		default:
			failures = 0
			for topic, ps := range lag {
				for p, n := range ps {
					r.lag.WithLabelValues(topic, strconv.Itoa(p)).Set(float64(n))
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
