// Package edge is the WebSocket edge of the chat: it authenticates clients,
// validates their frames, appends messages durably to the log before it
// acknowledges them, and fans the log's room events out to the local
// connections that joined each room, resuming without gaps from a log
// position.
//
// Consumes chat.rooms (every partition, from the end; on resume from a
// position). Produces chat.rooms (key: room). HTTP: GET /ws (WebSocket),
// POST /v1/admin/announce, GET / (the web client).
package edge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel"
	"golang.org/x/sync/errgroup"

	"github.com/chatsys/chat/pkg/auth"
	"github.com/chatsys/chat/pkg/chatacl"
	"github.com/chatsys/chat/pkg/chatevent"
	"github.com/chatsys/chat/pkg/httperr"
	"github.com/chatsys/chat/pkg/observe"
)

var tracer = otel.Tracer("github.com/chatsys/chat/services/edge")

// Edge is one edge node. Create it with New; it does no I/O until Start.
type Edge struct {
	cfg    Config
	log    *slog.Logger
	m      *metrics
	verify *auth.Verifier
	hub    *hub
	up     websocket.Upgrader

	src      source
	writer   *appender // rooms topic
	direct   *appender // private messages
	dsrc     *deliveriesSource
	presence *presence
	// ends caches partition ends for read positions (see handleRead).
	ends partitionEnds
	// presenceW is presence's writer, for the stats collector (set in Start).
	presenceW atomic.Pointer[kafka.Writer]
	// aclF is the chat.acl follower once started, for the stats collector.
	aclF atomic.Pointer[chatacl.Follower]

	draining  atomic.Bool
	connSeq   atomic.Uint64 // connections opened (each conn's seq)
	drainOnce sync.Once
	drainMu   sync.Mutex     // orders wg.Add in handshakes before the drain's Wait
	wg        sync.WaitGroup // connection handlers

	acl           *chatacl.Follower // rooms, memberships, blocks (chat.acl)
	loading       atomic.Bool       // the ACL is loading: no member frames yet
	typingSrc     *typingSource
	typingOut     *appender // chat.typing, acks=1
	historyClient *http.Client
	// The page's API requests forwarded by an edge running alone (nil:
	// not configured).
	historyAPI, routerAPI http.Handler

	sends       *sends        // recent sends by (username, client_id)
	replaySlots chan struct{} // one per resume reading the log

	limMu    sync.Mutex
	limiters map[string]*userLimiter // per user: rate limiter and open connections
	ipConns  map[netip.Addr]int      // open connections per client address (MaxConnsPerIP > 0)
}

// New returns an edge for cfg, registering its metrics with reg.
func New(cfg Config, log *slog.Logger, reg prometheus.Registerer) (*Edge, error) {
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
	e := &Edge{cfg: cfg, log: log, m: newMetrics(reg), verify: v, hub: newHub(), limiters: map[string]*userLimiter{}, ipConns: map[netip.Addr]int{},
		sends: newSends(cfg.DedupeWindow, maxRememberedSends), replaySlots: make(chan struct{}, cfg.MaxReplays)}
	if reg != nil {
		// kafka-go's statistics of the presence writer and of the chat.acl
		// follower's readers (the appends and the tails use their own
		// produce and fetch requests: see appender, tail and their metrics).
		reg.MustRegister(
			observe.NewKafkaWriterCollector("edge-presence", func() []kafka.WriterStats {
				if w := e.presenceW.Load(); w != nil {
					return []kafka.WriterStats{w.Stats()}
				}
				return nil
			}),
			observe.NewKafkaReaderCollector("edge-acl", func() []kafka.ReaderStats {
				if f := e.aclF.Load(); f != nil {
					return f.Stats()
				}
				return nil
			}))
	}
	e.up = websocket.Upgrader{
		ReadBufferSize:    1024,
		WriteBufferPool:   &sync.Pool{},
		Subprotocols:      []string{auth.Subprotocol},
		CheckOrigin:       e.checkOrigin,
		Error:             upgradeError,
		HandshakeTimeout:  10 * time.Second,
		EnableCompression: false,
	}
	e.newAPIProxies()
	return e, nil
}

// Name returns "edge".
func (e *Edge) Name() string { return "edge" }

// Start ensures chat.rooms exists, fixes the tail's start offsets and opens
// the producer.
func (e *Edge) Start(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	k := e.cfg.Kafka
	counts, err := k.EnsureTopics(ctx, k.AllTopics()...)
	if err != nil {
		return fmt.Errorf("edge: %w", err)
	}
	src, err := newLogSource(ctx, k, k.RoomsTopic, e.cfg.MaxReplay, e.log, e.m)
	if err != nil {
		return fmt.Errorf("edge: %w", err)
	}
	src.serves = e.hub.serves
	src.recipients = e.hub.recipients
	src.seen = e.sends.seen
	e.src = src
	if e.dsrc, err = newDeliveriesSource(ctx, k, e.cfg.ID, e.log, e.m); err != nil {
		return fmt.Errorf("edge: %w", err)
	}
	e.writer = newAppender(k, k.RoomsTopic, src.partitions)
	e.direct = newAppender(k, k.DirectTopic, counts[k.DirectTopic])
	e.presence = newPresence(e, k)
	e.presenceW.Store(e.presence.w)
	if err := e.startConversations(ctx, counts); err != nil {
		return fmt.Errorf("edge: %w", err)
	}
	return nil
}

// Run tails the log and pings clients until ctx ends.
func (e *Edge) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { e.pingLoop(ctx); return nil })
	g.Go(func() error { e.presence.beat(ctx, e.cfg.Heartbeat); return nil })
	g.Go(func() error {
		return e.dsrc.Run(ctx, func(ds []*delivery) {
			for _, d := range ds {
				// A DM routed here answers its sender's resend on this
				// edge too (the first send went through another edge).
				e.sends.seen(&d.ev)
				// A read receipt does not reach a peer who blocked the
				// reader (as their messages and typing do not); the
				// reader's own devices still get it.
				if d.ev.Type == chatevent.TypeRead && d.ev.Target != "" && !chatevent.MayMessage(d.ev.Username, d.ev.Target, e.aclState()) {
					d.ev.Target = d.ev.Username
				}
			}
			e.hub.deliverDirect(ds)
		})
	})
	g.Go(func() error { return e.src.Run(ctx, e.hub.deliver) })
	g.Go(func() error { return e.runTyping(ctx) })
	return g.Wait()
}

// pingLoop pings every connection each PingInterval; a client that sends
// nothing (not even the pong) for PingInterval+PongTimeout is closed by its
// reader's deadline. The pings are spread over the interval: connection i
// is pinged in slot i mod n of n ticks (one every pingTick), so 10 000
// connections cost 40 pings a tick instead of a burst of 10 000 writes (and
// 10 000 pongs) that would hold up every append and delivery behind it.
func (e *Edge) pingLoop(ctx context.Context) {
	slots := pingSlots(e.cfg.PingInterval)
	t := time.NewTicker(e.cfg.PingInterval / time.Duration(slots))
	defer t.Stop()
	var due []*conn
	for slot := 0; ; slot = (slot + 1) % slots {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			due = e.hub.connsInSlot(due[:0], uint64(slot), uint64(slots))
			for i, c := range due {
				c.ping()
				due[i] = nil
			}
		}
	}
}

// pingTick is the spacing of the ping slots (at most pingMaxSlots of them).
const (
	pingTick     = 100 * time.Millisecond
	pingMaxSlots = 250
)

// pingSlots is how many slots PingInterval is cut into.
func pingSlots(interval time.Duration) int {
	return max(1, min(pingMaxSlots, int(interval/pingTick)))
}

// Drain winds the edge down while it still delivers (the lifecycle runner
// calls it before cancelling Run): new upgrades are refused, every
// connection gets close 1001 ("going away, reconnect") at its moment in
// DrainDuration, and the ones still open at the deadline (or ctx's) are
// closed. Until its close, a connection keeps receiving its rooms' events.
func (e *Edge) Drain(ctx context.Context) error {
	e.drainOnce.Do(func() { e.drain(ctx) })
	return nil
}

func (e *Edge) drain(ctx context.Context) {
	e.drainMu.Lock()
	e.draining.Store(true)
	e.drainMu.Unlock()
	conns := e.hub.snapshotConns()
	window := e.cfg.DrainDuration
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < window {
		window = time.Until(dl) / 2
	}
	if len(conns) > 0 {
		e.log.Info("draining connections", "connections", len(conns), "window", window)
		// Connection i is told to go away at i/n of the window, so clients
		// do not all reconnect elsewhere at the same instant. The moments
		// are absolute: a late wake-up closes the connections that are
		// due at once rather than pushing the rest past the window.
		start := time.Now()
		timer := time.NewTimer(0)
		defer timer.Stop()
		for i, c := range conns {
			due := start.Add(window * time.Duration(i) / time.Duration(len(conns)))
			if wait := time.Until(due); wait > time.Millisecond && ctx.Err() == nil {
				timer.Reset(wait)
				select {
				case <-timer.C:
				case <-ctx.Done():
				}
			}
			c.close(CloseGoingAway, "server shutting down: reconnect", true)
		}
	}
	done := make(chan struct{})
	go func() { e.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		for _, c := range e.hub.snapshotConns() {
			c.ws.NetConn().Close()
		}
	}
}

// Stop drains (if Drain was not called) and closes the producers.
func (e *Edge) Stop(ctx context.Context) error {
	e.Drain(ctx)
	var errs []error
	if e.acl != nil {
		errs = append(errs, e.acl.Close())
	}
	for _, a := range []*appender{e.writer, e.direct, e.typingOut} {
		if a != nil {
			a.close()
		}
	}
	if e.presence != nil {
		errs = append(errs, e.presence.close())
	}
	return errors.Join(errs...)
}

// Ready reports whether the edge accepts connections.
func (e *Edge) Ready(context.Context) error {
	if e.draining.Load() {
		return errors.New("draining")
	}
	return nil
}

// Routes registers the edge's HTTP handlers on mux.
func (e *Edge) Routes(mux *http.ServeMux) {
	mux.HandleFunc("GET /ws", e.serveWS)
	mux.HandleFunc("POST /v1/admin/announce", e.serveAnnounce)
	mux.Handle("GET /", webHandler())
	e.apiProxyRoutes(mux)
}

// httpError writes {"error":{"code","message"}}.
// upgradeError answers a request to /ws that is not a valid WebSocket
// upgrade, or comes from an origin not allowed, in the APIs' error format:
// 403 forbidden for the origin, invalid_request otherwise.
func upgradeError(w http.ResponseWriter, _ *http.Request, status int, reason error) {
	code := "invalid_request"
	if status == http.StatusForbidden {
		code = chatevent.CodeForbidden
	}
	w.Header().Set("Sec-WebSocket-Version", "13")
	httpError(w, status, code, reason.Error())
}

func httpError(w http.ResponseWriter, status int, code, msg string) {
	httperr.Write(w, status, code, msg)
}
