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
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"
	"golang.org/x/time/rate"

	"github.com/chatsys/chat/pkg/auth"
	"github.com/chatsys/chat/pkg/chatevent"
	"github.com/chatsys/chat/pkg/kafkaio"
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

	draining atomic.Bool
	drainMu  sync.Mutex     // orders wg.Add in handshakes before the drain's Wait
	wg       sync.WaitGroup // connection handlers

	sends       *sends        // recent sends by (username, client_id)
	replaySlots chan struct{} // one per resume reading the log

	limMu    sync.Mutex
	limiters map[string]*userLimiter // per user: rate limiter and open connections
	ipConns  map[netip.Addr]int      // open connections per client address (MaxConnsPerIP > 0)
}

type userLimiter struct {
	lim  *rate.Limiter
	refs int
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
	e.up = websocket.Upgrader{
		ReadBufferSize:    1024,
		WriteBufferPool:   &sync.Pool{},
		Subprotocols:      []string{auth.Subprotocol},
		CheckOrigin:       e.checkOrigin,
		HandshakeTimeout:  10 * time.Second,
		EnableCompression: false,
	}
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
	src.seen = func(ev *chatevent.Event) {
		if e.hub.hasUser(ev.Username) {
			e.sends.seen(ev)
		}
	}
	e.src = src
	if e.dsrc, err = newDeliveriesSource(ctx, k, e.cfg.ID, e.log, e.m); err != nil {
		return fmt.Errorf("edge: %w", err)
	}
	e.writer = newAppender(k, k.RoomsTopic, src.partitions)
	e.direct = newAppender(k, k.DirectTopic, counts[k.DirectTopic])
	e.presence = newPresence(e, k)
	return nil
}

// Run tails the log and pings clients until ctx ends.
func (e *Edge) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { e.pingLoop(ctx); return nil })
	g.Go(func() error { e.presence.beat(ctx, e.cfg.Heartbeat); return nil })
	g.Go(func() error { return e.dsrc.Run(ctx, e.hub.deliverDirect) })
	g.Go(func() error { return e.src.Run(ctx, e.hub.deliver) })
	return g.Wait()
}

// pingLoop pings every connection each PingInterval; a client that sends
// nothing (not even the pong) for PingInterval+PongTimeout is closed by its
// reader's deadline.
func (e *Edge) pingLoop(ctx context.Context) {
	t := time.NewTicker(e.cfg.PingInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			for _, c := range e.hub.snapshotConns() {
				c.ping()
			}
		}
	}
}

// Stop drains: new upgrades are refused, every connection gets close 1001
// ("going away, reconnect") at a moment spread over DrainDuration, and the
// ones still open at the deadline (or ctx's) are closed.
func (e *Edge) Stop(ctx context.Context) error {
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
		// do not all reconnect elsewhere at the same instant.
		step := window / time.Duration(len(conns))
		for i, c := range conns {
			if i > 0 && step > 0 {
				select {
				case <-time.After(step):
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
	var errs []error
	for _, a := range []*appender{e.writer, e.direct} {
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
}

func (e *Edge) checkOrigin(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true // not a browser
	}
	for _, o := range e.cfg.AllowedOrigins {
		if o == "*" || strings.EqualFold(o, origin) {
			return true
		}
	}
	u, err := url.Parse(origin)
	return err == nil && strings.EqualFold(u.Host, r.Host)
}

// httpError writes {"error":{"code","message"}}.
func httpError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": code, "message": msg}})
}

func (e *Edge) serveWS(w http.ResponseWriter, r *http.Request) {
	if e.draining.Load() {
		e.m.handshakes.WithLabelValues("draining").Inc()
		w.Header().Set("Retry-After", "1")
		httpError(w, http.StatusServiceUnavailable, chatevent.CodeUnavailable, "edge is shutting down; reconnect")
		return
	}
	id, err := e.verify.VerifyRequest(r)
	if err != nil {
		e.m.handshakes.WithLabelValues("unauthorized").Inc()
		w.Header().Set("WWW-Authenticate", `Bearer realm="chat"`)
		httpError(w, http.StatusUnauthorized, "unauthorized", err.Error())
		return
	}
	addr := e.clientAddr(r)
	lim, err := e.admit(id.Username, addr)
	if err != nil {
		e.m.handshakes.WithLabelValues("too_many_connections").Inc()
		w.Header().Set("Retry-After", "5")
		httpError(w, http.StatusTooManyRequests, chatevent.CodeTooManyConnections, err.Error())
		return
	}
	e.drainMu.Lock()
	if e.draining.Load() {
		e.drainMu.Unlock()
		e.release(id.Username, addr)
		httpError(w, http.StatusServiceUnavailable, chatevent.CodeUnavailable, "edge is shutting down; reconnect")
		return
	}
	e.wg.Add(1)
	e.drainMu.Unlock()
	hj := &hijacker{ResponseWriter: w}
	ws, err := e.up.Upgrade(hj, r, nil)
	if err != nil {
		e.release(id.Username, addr)
		e.wg.Done()
		e.m.handshakes.WithLabelValues("bad_handshake").Inc()
		return // Upgrade wrote the HTTP error
	}
	e.m.handshakes.WithLabelValues("ok").Inc()
	c := newConn(e, ws, hj.wc, id, lim)
	c.addr = addr
	e.hub.addConn(c)
	e.presence.connected(id.Username)
	e.m.connections.Inc()
	if e.draining.Load() { // raced with Stop's snapshot
		c.close(CloseGoingAway, "server shutting down: reconnect", false)
	}
	if !id.Expires.IsZero() {
		c.expiry = time.AfterFunc(time.Until(id.Expires), func() {
			c.close(CloseTokenExpired, "token expired: reconnect with a new token and since", true)
		})
	}
	c.sendWait(context.Background(), chatevent.WelcomeFrame{Username: id.Username}.Encode(), chatevent.TypeWelcome)
	// The connection lives on in its own goroutine: returning lets net/http
	// free the request and its 4 KiB buffers, which it holds for as long as
	// the handler runs.
	go e.connLoop(c)
}

// connLoop reads c until it ends, then releases it.
func (e *Edge) connLoop(c *conn) {
	defer e.wg.Done()
	defer func() {
		if c.expiry != nil {
			c.expiry.Stop()
		}
		rooms := make([]string, 0, len(c.rooms))
		for room, s := range c.rooms {
			e.hub.removeSub(s)
			rooms = append(rooms, room)
		}
		e.hub.removeConn(c)
		e.presence.disconnected(c.id.Username, rooms)
		c.mu.Lock()
		c.closing = true // nothing more is queued
		c.mu.Unlock()
		c.finish()
		e.release(c.id.Username, c.addr)
		e.m.connections.Dec()
	}()
	e.readLoop(c)
}

// errTooManyConns is a handshake refused by a connection limit.
var errTooManyConns = errors.New("too many connections")

// admit counts a new connection of user from addr against the connection
// limits and returns the user's rate limiter; release undoes it.
func (e *Edge) admit(user string, addr netip.Addr) (*rate.Limiter, error) {
	e.limMu.Lock()
	defer e.limMu.Unlock()
	ul := e.limiters[user]
	if ul != nil && ul.refs >= e.cfg.MaxConnsPerUser {
		return nil, fmt.Errorf("%w: user %s already has %d open connections on this edge", errTooManyConns, user, ul.refs)
	}
	if e.cfg.MaxConnsPerIP > 0 && addr.IsValid() && e.ipConns[addr] >= e.cfg.MaxConnsPerIP {
		return nil, fmt.Errorf("%w: %d open connections from your address", errTooManyConns, e.ipConns[addr])
	}
	if ul == nil {
		ul = &userLimiter{lim: rate.NewLimiter(rate.Limit(e.cfg.RatePerSecond), e.cfg.RateBurst)}
		e.limiters[user] = ul
	}
	ul.refs++
	if e.cfg.MaxConnsPerIP > 0 && addr.IsValid() {
		e.ipConns[addr]++
	}
	return ul.lim, nil
}

func (e *Edge) release(user string, addr netip.Addr) {
	e.limMu.Lock()
	defer e.limMu.Unlock()
	if ul := e.limiters[user]; ul != nil {
		if ul.refs--; ul.refs <= 0 {
			delete(e.limiters, user)
		}
	}
	if e.cfg.MaxConnsPerIP > 0 && addr.IsValid() {
		if e.ipConns[addr]--; e.ipConns[addr] <= 0 {
			delete(e.ipConns, addr)
		}
	}
}

// clientAddr returns the client's address for the per-address limit: the
// TCP peer, or, when the peer is a trusted proxy, the rightmost
// X-Forwarded-For entry that is not itself a trusted proxy.
func (e *Edge) clientAddr(r *http.Request) netip.Addr {
	if e.cfg.MaxConnsPerIP == 0 {
		return netip.Addr{}
	}
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	addr := ap.Addr().Unmap()
	trusted := func(a netip.Addr) bool {
		for _, p := range e.cfg.TrustedProxies {
			if p.Contains(a) {
				return true
			}
		}
		return false
	}
	if !trusted(addr) {
		return addr
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			return addr // a malformed chain: count the proxy itself
		}
		if a = a.Unmap(); !trusted(a) {
			return a
		}
	}
	return addr
}

// readLoop reads frames until the connection ends.
func (e *Edge) readLoop(c *conn) {
	ws := c.ws
	ws.SetReadLimit(e.cfg.ReadLimit)
	deadline := func() time.Time { return time.Now().Add(e.cfg.PingInterval + e.cfg.PongTimeout) }
	ws.SetReadDeadline(deadline())
	ws.SetPongHandler(func(string) error { return ws.SetReadDeadline(deadline()) })
	ctx := context.Background() // waits on the connection also end at c.dead
	for {
		mt, data, err := ws.ReadMessage()
		if err != nil {
			if errors.Is(err, websocket.ErrReadLimit) {
				// The frame's payload may still be arriving: answer 1009
				// and drain, so the close frame is not lost to a reset.
				e.m.framesIn.WithLabelValues("too_large").Inc()
				e.closeAndDrain(c, CloseTooLarge, fmt.Sprintf("frame larger than %d bytes", e.cfg.ReadLimit))
			}
			return
		}
		ws.SetReadDeadline(deadline())
		if c.isClosing() {
			continue // closing: read only to see the client's close
		}
		if mt != websocket.TextMessage {
			e.m.framesIn.WithLabelValues("binary").Inc()
			e.closeAndDrain(c, CloseUnsupportedData, "binary frames are not supported; send JSON text frames")
			return
		}
		if !utf8.Valid(data) {
			e.m.framesIn.WithLabelValues("invalid").Inc()
			e.closeAndDrain(c, CloseInvalidPayload, "text frame is not valid UTF-8")
			return
		}
		// Frames are handled one at a time, in order, on a short-lived
		// goroutine: decoding and appending need a deep stack, and run here
		// it would stay with the connection for its whole idle life
		// (8 KiB of the 16 KiB budget per connection).
		done := make(chan struct{})
		go func() {
			defer close(done)
			e.handleFrame(ctx, c, data)
		}()
		<-done
	}
}

// closeAndDrain closes c with code after a protocol violation, reading and
// discarding whatever the client still sends until it closes its side or
// the linger ends, so the close frame reaches it.
func (e *Edge) closeAndDrain(c *conn, code CloseCode, text string) {
	c.kill(code, text)
	c.wc.Conn.SetReadDeadline(time.Now().Add(closeLinger))
	io.Copy(io.Discard, c.wc.Conn)
}

func (e *Edge) sendError(ctx context.Context, c *conn, code, msg, clientID string) {
	e.m.errors.WithLabelValues(code).Inc()
	c.sendWait(ctx, chatevent.ErrorFrame{Code: code, Message: msg, ClientID: clientID}.Encode(), chatevent.TypeError)
}

func (e *Edge) handleFrame(ctx context.Context, c *conn, data []byte) {
	f, err := chatevent.DecodeFrame(data, chatevent.Limits{MaxContentChars: e.cfg.MaxContentChars})
	if err != nil {
		e.m.framesIn.WithLabelValues("invalid").Inc()
		var fe *chatevent.FrameError
		if errors.As(err, &fe) {
			e.sendError(ctx, c, fe.Code, fe.Message, fe.ClientID)
		}
		return
	}
	e.m.framesIn.WithLabelValues(f.Type).Inc()
	switch f.Type {
	case chatevent.TypeJoin:
		e.join(ctx, c, f)
	case chatevent.TypeLeave:
		if s := c.rooms[f.Room]; s != nil {
			e.hub.removeSub(s)
			delete(c.rooms, f.Room)
			e.presence.left(c.id.Username, f.Room)
		}
		c.sendWait(ctx, chatevent.LeftFrame{Room: f.Room}.Encode(), chatevent.TypeLeft)
	case chatevent.TypeChat, chatevent.TypePrivate:
		if !c.id.Expires.IsZero() && !time.Now().Before(c.id.Expires) {
			return // the expiry timer is closing the connection: nothing more is appended
		}
		if f.Type == chatevent.TypePrivate && !chatevent.MayMessage(c.id.Username, f.Target) {
			e.sendError(ctx, c, chatevent.CodeForbidden, fmt.Sprintf("you may not send private messages to %q", f.Target), f.ClientID)
			return
		}
		cid := f.ClientID
		answer := func(id string, err error) {
			if err != nil {
				e.m.errors.WithLabelValues(chatevent.CodeUnavailable).Inc()
				c.send(chatevent.ErrorFrame{Code: chatevent.CodeUnavailable,
					Message: "the message log did not acknowledge the message; it was not sent, retry", ClientID: cid}.Encode(), chatevent.TypeError)
				return
			}
			c.send(chatevent.AckFrame{ClientID: cid, ID: id}.Encode(), chatevent.TypeAck)
		}
		// A resend of a known client_id is answered from the first send
		// (and costs no rate): see sends.
		ev, action := e.sends.begin(c.id.Username, cid, func() chatevent.Event {
			return chatevent.Event{
				ID: chatevent.NewID(), Type: f.Type, Room: f.Room, Target: f.Target, Username: c.id.Username,
				Content: f.Content, Timestamp: chatevent.FormatTime(time.Now()), ClientID: cid,
			}
		}, answer)
		switch action {
		case sendWait:
			e.m.resends.Inc()
			return
		case sendAcked:
			e.m.resends.Inc()
			answer(ev.ID, nil)
			return
		}
		if !c.limiter.Allow() {
			e.sends.forget(c.id.Username, cid, errRateLimited)
			e.sendError(ctx, c, chatevent.CodeRateLimited, fmt.Sprintf("more than %g messages per second; slow down", e.cfg.RatePerSecond), cid)
			return
		}
		// Appends are pipelined: the next frame is read while this one is
		// in flight, up to maxInFlight per connection; the ack (or the
		// error) follows the broker's answer.
		if err := c.acquireInFlight(ctx); err != nil {
			e.sends.forget(c.id.Username, cid, err)
			return
		}
		e.appendAsync(ctx, &ev, func(err error) {
			c.releaseInFlight()
			if err != nil {
				e.log.Warn("append failed", "type", ev.Type, "err", err)
			}
			answer(ev.ID, err)
			e.sends.finish(c.id.Username, cid, err)
		})
	}
}

// errRateLimited ends a send refused by the rate limit: nothing was
// appended, so a later resend of its client_id is a new send.
var errRateLimited = errors.New("rate limited")

// pendingAppend travels with a record through the appender to its
// completion.
type pendingAppend struct {
	t0   time.Time
	span trace.Span
	done func(error)
}

// appendAsync queues ev for a durable write to the rooms topic (or, for a
// private message, the direct topic). done is called exactly once, from the
// appender's goroutine, after the broker acknowledged the write (all
// in-sync replicas) or the write failed; it must not block. Appends of one
// partition are written and completed in the order they were queued.
func (e *Edge) appendAsync(ctx context.Context, ev *chatevent.Event, done func(error)) {
	ap, topic, key := e.writer, e.cfg.Kafka.RoomsTopic, chatevent.RoomKey(ev.Room)
	if ev.Type == chatevent.TypePrivate {
		ap, topic, key = e.direct, e.cfg.Kafka.DirectTopic, chatevent.DMKey(ev.Username, ev.Target)
	}
	ctx, span := tracer.Start(ctx, "publish "+topic, trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(attribute.String("messaging.system", "kafka"), attribute.String("chat.event_id", ev.ID)))
	p := &pendingAppend{t0: time.Now(), span: span, done: done}
	value, err := ev.Encode()
	if err != nil {
		e.completeOne(p, err)
		return
	}
	headers := []kafka.Header{{Key: chatevent.HeaderSchema, Value: schemaHeader}}
	otel.GetTextMapPropagator().Inject(ctx, kafkaio.HeaderCarrier{Headers: &headers})
	ap.append([]byte(key), value, headers, func(_ int64, err error) { e.completeOne(p, err) })
}

var schemaHeader = []byte(strconv.Itoa(chatevent.SchemaVersion))

func (e *Edge) completeOne(p *pendingAppend, err error) {
	if err != nil {
		p.span.SetStatus(codes.Error, err.Error())
		e.m.appendSeconds.WithLabelValues("error").Observe(time.Since(p.t0).Seconds())
	} else {
		e.m.appendSeconds.WithLabelValues("ok").Observe(time.Since(p.t0).Seconds())
	}
	p.span.End()
	p.done(err)
}

// append writes ev durably and waits for the outcome.
func (e *Edge) append(ctx context.Context, ev *chatevent.Event) error {
	res := make(chan error, 1)
	e.appendAsync(ctx, ev, func(err error) { res <- err })
	select {
	case err := <-res:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// join subscribes c to a room. With since, the room's events after that
// position are replayed from the log before live ones, with no gap and no
// duplicate: the subscription is registered first and buffers live events
// while the replay runs, then drops every event at or before the last one
// replayed.
func (e *Edge) join(ctx context.Context, c *conn, f chatevent.Frame) {
	if old := c.rooms[f.Room]; old != nil {
		e.hub.removeSub(old) // a re-join: the membership stays
	} else if len(c.rooms) >= e.cfg.MaxRooms {
		e.sendError(ctx, c, chatevent.CodeTooManyRooms, fmt.Sprintf("a connection may join at most %d rooms", e.cfg.MaxRooms), f.ClientID)
		return
	}
	s := &sub{c: c, room: f.Room, last: -1, replaying: f.Since != ""}
	e.hub.addSub(s)
	if c.rooms[f.Room] == nil {
		e.presence.joined(c.id.Username, f.Room)
	}
	c.rooms[f.Room] = s
	if f.Since == "" {
		c.sendWait(ctx, chatevent.JoinedFrame{Room: f.Room}.Encode(), chatevent.TypeJoined)
		return
	}
	after, _ := chatevent.ParsePos(f.Since) // validated by DecodeFrame
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	// At most MaxReplays resumes read the log at once; the others queue
	// here (their live events buffer meanwhile), so a reconnect storm
	// after a drain does not turn into thousands of concurrent log scans.
	e.m.replaysWaiting.Inc()
	var slotErr error
	select {
	case e.replaySlots <- struct{}{}:
	case <-c.dead:
		slotErr = errClosed
	case <-rctx.Done():
		slotErr = rctx.Err()
	}
	e.m.replaysWaiting.Dec()
	if slotErr == nil {
		defer func() { <-e.replaySlots }()
	}
	var end chatevent.Pos
	var ok bool
	err := slotErr
	if err == nil {
		end, ok, err = e.src.Resume(rctx, f.Room, after)
	}
	if err != nil {
		e.hub.removeSub(s)
		delete(c.rooms, f.Room)
		e.presence.left(c.id.Username, f.Room)
		e.sendError(ctx, c, chatevent.CodeUnavailable, "cannot read the log to resume; join again", f.ClientID)
		return
	}
	c.sendWait(ctx, chatevent.JoinedFrame{Room: f.Room, Recovered: &ok}.Encode(), chatevent.TypeJoined)
	if ok {
		err = e.src.Replay(rctx, f.Room, after, end, func(d *delivery) error {
			s.mu.Lock()
			s.last = d.pos.Offset
			s.mu.Unlock()
			return c.sendWait(rctx, d.frame, d.ev.Type)
		})
		if err != nil {
			if !errors.Is(err, errClosed) {
				e.log.Warn("replay failed", "room", f.Room, "err", err)
				c.kill(CloseInternal, "resume failed: reconnect and join with since")
			}
			return
		}
	}
	for {
		p := s.takePending()
		if len(p) == 0 {
			return
		}
		for _, d := range p {
			s.mu.Lock()
			fresh := d.pos.Offset > s.last
			if fresh {
				s.last = d.pos.Offset
			}
			s.mu.Unlock()
			if fresh {
				if err := c.sendWait(rctx, d.frame, d.ev.Type); err != nil {
					return
				}
			}
		}
	}
}

// Announce request and response bodies of POST /v1/admin/announce.
type announceRequest struct {
	Content string `json:"content"`
	Room    string `json:"room,omitempty"`
}

func (e *Edge) serveAnnounce(w http.ResponseWriter, r *http.Request) {
	id, err := e.verify.VerifyRequest(r)
	if err != nil {
		w.Header().Set("WWW-Authenticate", `Bearer realm="chat"`)
		httpError(w, http.StatusUnauthorized, "unauthorized", err.Error())
		return
	}
	if !id.Admin {
		httpError(w, http.StatusForbidden, chatevent.CodeForbidden, "announce needs a token with the admin role")
		return
	}
	var req announceRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, e.cfg.ReadLimit))
	if err := dec.Decode(&req); err != nil {
		httpError(w, http.StatusBadRequest, chatevent.CodeInvalidMessage, "body must be a JSON object {content, room?}: "+err.Error())
		return
	}
	if n := utf8.RuneCountInString(req.Content); n == 0 || n > e.cfg.MaxContentChars || strings.IndexByte(req.Content, 0) >= 0 {
		httpError(w, http.StatusBadRequest, chatevent.CodeInvalidMessage, fmt.Sprintf("content must be 1..%d characters of text without NUL", e.cfg.MaxContentChars))
		return
	}
	if req.Room != "" && !chatevent.ValidRoom(req.Room) {
		httpError(w, http.StatusBadRequest, chatevent.CodeInvalidMessage, fmt.Sprintf("room %q is not valid", req.Room))
		return
	}
	ev := chatevent.Event{ID: chatevent.NewID(), Type: chatevent.TypeSystem, Room: req.Room, Username: id.Username,
		Content: req.Content, Timestamp: chatevent.FormatTime(time.Now())}
	if err := e.append(r.Context(), &ev); err != nil {
		httpError(w, http.StatusServiceUnavailable, chatevent.CodeUnavailable, "the message log did not acknowledge the announcement")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(ev)
}
