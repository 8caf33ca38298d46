// Package router owns presence and private-message targeting.
//
// Consumes chat.presence (every instance reads all of it, from the start,
// and rebuilds its tables) and chat.direct (instances share it as one
// consumer group, -router.group). Produces chat.deliveries (one record per
// edge holding the sender or the target of a private message, keyed by the
// edge id) and, when an edge's heartbeat stops, leave events on chat.rooms
// for the room members it held.
//
// HTTP (JWT-authenticated): GET /v1/presence?user=…, GET /v1/rooms/{room}/members.
package router

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"

	"github.com/chatsys/chat/pkg/auth"
	"github.com/chatsys/chat/pkg/chatevent"
	"github.com/chatsys/chat/pkg/kafkaio"
)

var tracer = otel.Tracer("github.com/chatsys/chat/services/router")

// Config configures a router.
type Config struct {
	Kafka kafkaio.Config
	Auth  auth.Config
	// GroupID is the consumer group over chat.direct (default chat-router).
	GroupID string
	// EdgeTimeout is how long an edge may stay silent before its users go
	// offline (default 10s; edges beat every 2s).
	EdgeTimeout time.Duration
}

// RegisterFlags registers the router.* flags.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.GroupID, "router.group", "chat-router", "consumer group over the private-message topic")
	fs.DurationVar(&c.EdgeTimeout, "router.edge-timeout", 10*time.Second, "an edge silent this long is expired: its users go offline")
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
	cfg     Config
	log     *slog.Logger
	verify  *auth.Verifier
	t       *table
	started time.Time

	caughtUp   atomic.Bool
	endAtStart []int64 // presence partition ends when Start ran
	remaining  atomic.Int64

	direct     *kafka.Reader
	deliveries *kafka.Writer
	rooms      *kafka.Writer
	stopping   atomic.Bool

	routed  prometheus.Counter
	records prometheus.Counter
	expired prometheus.Counter
}

// New returns a router for cfg.
func New(cfg Config, log *slog.Logger, reg prometheus.Registerer) (*Router, error) {
	if err := cfg.Kafka.Validate(); err != nil {
		return nil, err
	}
	if cfg.GroupID == "" || cfg.EdgeTimeout <= 0 {
		return nil, errors.New("router.group and router.edge-timeout must be set")
	}
	v, err := auth.NewVerifier(cfg.Auth)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f := promauto.With(reg)
	return &Router{cfg: cfg, log: log, verify: v, t: newTable(),
		routed:  f.NewCounter(prometheus.CounterOpts{Name: "chat_router_dms_routed_total", Help: "Private messages routed to edges."}),
		records: f.NewCounter(prometheus.CounterOpts{Name: "chat_router_deliveries_total", Help: "Delivery records written (one per edge per message)."}),
		expired: f.NewCounter(prometheus.CounterOpts{Name: "chat_router_edges_expired_total", Help: "Edges expired for a missed heartbeat."}),
	}, nil
}

// Name returns "router".
func (r *Router) Name() string { return "router" }

// Start creates the topics and fixes where catching up on presence ends.
func (r *Router) Start(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	k := r.cfg.Kafka
	counts, err := k.EnsureTopics(ctx, k.AllTopics()...)
	if err != nil {
		return err
	}
	r.started = time.Now()
	n := counts[k.PresenceTopic]
	r.endAtStart = make([]int64, n)
	var total int64
	for p := 0; p < n; p++ {
		first, next, err := k.Offsets(ctx, k.PresenceTopic, p)
		if err != nil {
			return err
		}
		r.endAtStart[p] = next
		total += next - first
	}
	r.remaining.Store(int64(n))
	if total == 0 {
		r.caughtUp.Store(true)
	}
	r.direct = kafka.NewReader(kafka.ReaderConfig{Brokers: k.BrokerList(), GroupID: r.cfg.GroupID, Topic: k.DirectTopic,
		StartOffset: kafka.LastOffset, MinBytes: 1, MaxBytes: 8 << 20, MaxWait: 100 * time.Millisecond, ReadLagInterval: -1})
	r.deliveries = k.NewWriter(k.DeliveriesTopic)
	r.deliveries.BatchTimeout = time.Millisecond // the second log hop of every DM: keep it short
	r.rooms = k.NewWriter(k.RoomsTopic)
	return nil
}

// Ready reports whether the presence tables are caught up with the log.
func (r *Router) Ready(context.Context) error {
	if !r.caughtUp.Load() {
		return errors.New("rebuilding presence from the log")
	}
	return nil
}

// Run reads presence, expires silent edges and routes private messages.
func (r *Router) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	for p := range r.endAtStart {
		g.Go(func() error { return r.tailPresence(ctx, p) })
	}
	g.Go(func() error { return r.expireLoop(ctx) })
	g.Go(func() error { return r.route(ctx) })
	return g.Wait()
}

func (r *Router) tailPresence(ctx context.Context, p int) error {
	k := r.cfg.Kafka
	rd := kafka.NewReader(kafka.ReaderConfig{Brokers: k.BrokerList(), Topic: k.PresenceTopic, Partition: p, MinBytes: 1, MaxBytes: 8 << 20, MaxWait: 250 * time.Millisecond, ReadLagInterval: -1, MaxAttempts: 1 << 30})
	defer rd.Close()
	rd.SetOffset(kafka.FirstOffset)
	end := r.endAtStart[p]
	done := end == 0
	if done {
		r.partCaughtUp()
	}
	for {
		m, err := rd.ReadMessage(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("presence %d: %w", p, err)
		}
		var pr chatevent.Presence
		if err := json.Unmarshal(m.Value, &pr); err == nil && pr.Edge != "" {
			at := m.Time
			if r.caughtUp.Load() {
				at = time.Now() // liveness by our clock, not the edge's
			}
			r.t.apply(&pr, at)
		}
		if !done && m.Offset >= end-1 {
			done = true
			r.partCaughtUp()
		}
	}
}

func (r *Router) partCaughtUp() {
	if r.remaining.Add(-1) <= 0 {
		r.caughtUp.Store(true)
		r.log.Info("presence caught up")
	}
}

// expireLoop expires silent edges and appends leave events for their room
// members. Leave events have ids derived from (edge, last heartbeat, user,
// room), so router instances that all expire the same edge append
// duplicates that history and clients drop.
func (r *Router) expireLoop(ctx context.Context) error {
	tick := time.NewTicker(r.cfg.EdgeTimeout / 4)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		if !r.caughtUp.Load() {
			continue
		}
		for id, e := range r.t.expire(time.Now().Add(-r.cfg.EdgeTimeout)) {
			r.expired.Inc()
			if e.lastBeat.Before(r.started.Add(-r.cfg.EdgeTimeout)) {
				continue // died before we started: its leaves were announced then
			}
			r.log.Warn("edge expired", "edge", id, "users", len(e.users))
			var msgs []kafka.Message
			for room, users := range e.rooms {
				for u := range users {
					ev := chatevent.Event{ID: leaveID(id, e.lastBeat, u, room), Type: chatevent.TypeLeave, Room: room, Username: u,
						Timestamp: chatevent.FormatTime(time.Now())}
					b, _ := ev.Encode()
					msgs = append(msgs, kafka.Message{Key: []byte(chatevent.RoomKey(room)), Value: b})
				}
			}
			if len(msgs) > 0 {
				wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				if err := r.rooms.WriteMessages(wctx, msgs...); err != nil {
					r.log.Error("append leave events", "edge", id, "err", err)
				}
				cancel()
			}
		}
	}
}

func leaveID(edge string, beat time.Time, user, room string) string {
	h := sha256.Sum256([]byte(edge + "\x00" + beat.String() + "\x00" + user + "\x00" + room))
	var u uuid.UUID
	copy(u[:], h[:16])
	// Keep the UUIDv7 shape: 48-bit millisecond time, version 7, variant 10.
	ms := uint64(beat.UnixMilli())
	for i := 0; i < 6; i++ {
		u[i] = byte(ms >> (40 - 8*i))
	}
	u[6] = u[6]&0x0f | 0x70
	u[8] = u[8]&0x3f | 0x80
	return u.String()
}

// route consumes chat.direct and writes a delivery record per edge that
// holds the sender or the target. Offsets are committed after the
// deliveries are acknowledged; a redelivery duplicates records that clients
// drop by id.
func (r *Router) route(ctx context.Context) error {
	for {
		m, err := r.direct.FetchMessage(ctx)
		if err != nil {
			if ctx.Err() != nil || r.stopping.Load() {
				return nil
			}
			return fmt.Errorf("fetch direct: %w", err)
		}
		batch := []kafka.Message{m}
		for len(batch) < 500 { // whatever else is already here
			fctx, cancel := context.WithTimeout(ctx, 200*time.Microsecond)
			m, err := r.direct.FetchMessage(fctx)
			cancel()
			if err != nil {
				break
			}
			batch = append(batch, m)
		}
		var out []kafka.Message
		var spans []trace.Span
		for _, m := range batch {
			ev, err := chatevent.Decode(m.Value)
			if err != nil || ev.Type != chatevent.TypePrivate || !chatevent.MayMessage(ev.Username, ev.Target) {
				continue
			}
			// Continue the sender's trace: this span's context travels on
			// in the delivery records' headers.
			mctx := otel.GetTextMapPropagator().Extract(ctx, kafkaio.HeaderCarrier{Headers: &m.Headers})
			mctx, span := tracer.Start(mctx, "route "+m.Topic, trace.WithSpanKind(trace.SpanKindConsumer),
				trace.WithAttributes(attribute.String("messaging.system", "kafka"), attribute.String("chat.event_id", ev.ID)))
			spans = append(spans, span)
			headers := []kafka.Header{{Key: chatevent.HeaderSchema, Value: []byte(strconv.Itoa(chatevent.SchemaVersion))}}
			otel.GetTextMapPropagator().Inject(mctx, kafkaio.HeaderCarrier{Headers: &headers})
			ev.Pos = chatevent.Pos{Partition: m.Partition, Offset: m.Offset}.String()
			b, _ := json.Marshal(&ev)
			edges := r.t.edgesOf(ev.Username, ev.Target)
			span.SetAttributes(attribute.Int("chat.edges", len(edges)))
			for _, edge := range edges {
				out = append(out, kafka.Message{Key: []byte(edge), Value: b, Headers: headers})
			}
			r.routed.Inc()
		}

		for len(out) > 0 {
			if err := r.deliveries.WriteMessages(ctx, out...); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				r.log.Warn("write deliveries; retrying", "err", err)
				time.Sleep(200 * time.Millisecond)
				continue
			}
			r.records.Add(float64(len(out)))
			break
		}
		for _, sp := range spans {
			sp.End()
		}
		if err := r.direct.CommitMessages(ctx, batch...); err != nil && ctx.Err() == nil {
			r.log.Warn("commit direct offsets", "err", err)
		}
	}
}

// Stop leaves the group and flushes the writers.
func (r *Router) Stop(context.Context) error {
	r.stopping.Store(true)
	var errs []error
	for _, c := range []interface{ Close() error }{r.direct, r.deliveries, r.rooms} {
		if c != nil {
			errs = append(errs, c.Close())
		}
	}
	return errors.Join(errs...)
}

// Routes registers the presence API on mux.
func (r *Router) Routes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/presence", r.authed(func(w http.ResponseWriter, req *http.Request) {
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
	mux.HandleFunc("GET /v1/rooms/{room}/members", r.authed(func(w http.ResponseWriter, req *http.Request) {
		room := req.PathValue("room")
		if !chatevent.ValidRoom(room) {
			httpError(w, http.StatusBadRequest, "invalid_room", strconv.Quote(room)+" is not a valid room name")
			return
		}
		writeJSON(w, map[string]any{"room": room, "members": r.t.members(room)})
	}))
}

func (r *Router) authed(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, req *http.Request) {
		if _, err := r.verify.VerifyRequest(req); err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="chat"`)
			httpError(w, http.StatusUnauthorized, "unauthorized", "missing or invalid token")
			return
		}
		if !r.caughtUp.Load() {
			httpError(w, http.StatusServiceUnavailable, "unavailable", "presence is still being rebuilt from the log")
			return
		}
		h(w, req)
	}
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

func httpError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": code, "message": msg}})
}
