package edge

import (
	"context"
	"net/netip"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/time/rate"

	"github.com/chatsys/chat/pkg/auth"
	"github.com/chatsys/chat/pkg/chatevent"
)

// CloseCode is a WebSocket close code the edge sends (the contract's,
// chatevent.CloseCode).
type CloseCode = chatevent.CloseCode

// Close codes: see chatevent. CloseCode.Reconnect tells a client whether
// reconnecting makes sense.
const (
	CloseGoingAway       = chatevent.CloseGoingAway       // 1001: edge shutting down; reconnect
	CloseUnsupportedData = chatevent.CloseUnsupportedData // 1003: binary frame
	CloseInvalidPayload  = chatevent.CloseInvalidPayload  // 1007: text frame not UTF-8
	CloseTokenExpired    = chatevent.CloseTokenExpired    // 1008: the token expired; reconnect with a new one
	CloseTooLarge        = chatevent.CloseTooLarge        // 1009: frame above the read limit
	CloseInternal        = chatevent.CloseInternal        // 1011: resume failed; reconnect with since
	CloseSlowClient      = chatevent.CloseSlowClient      // 4000: send queue overflowed; reconnect with since
)

// conn is one WebSocket connection. The handler goroutine reads. Writes go
// through a bounded queue; whoever holds the write token drains it: a
// flusher (the goroutine that queued, with non-blocking writes) or, for
// blocking work, the writer goroutine, which exists only while it has some
// (see flushOut and writeLoop). An idle connection costs one goroutine. A
// slow client never blocks the fan-out: when its queue overflows it is
// closed with CloseSlowClient.
type conn struct {
	e       *Edge
	seq     uint64 // the edge's count of connections when it opened (its ping slot)
	ws      *websocket.Conn
	wc      *wireConn // under ws: flushers and the writer goroutine write batches to it
	id      auth.Identity
	addr    netip.Addr // counted against MaxConnsPerIP (zero when off)
	limiter *rate.Limiter
	rooms   map[string]*sub // owned by the reader goroutine

	mu        sync.Mutex
	queue     [][]byte
	qBytes    int
	writing   bool     // someone holds the write token: a flusher or the writer goroutine
	writerG   bool     // the token holder is the writer goroutine
	rest      []byte   // bytes a flusher could not write; the writer goroutine writes them first
	spare     [][]byte // a drained queue's backing array, for the next one
	pingDue   bool
	closing   bool
	closeCode CloseCode
	closeText string
	flush     bool // on close, write the queue first (drain) or drop it (slow)
	// flushPending: frames were pushed and whoever pushed the first of
	// them will flush them (so a fan-out lists the connection once).
	flushPending bool

	typing   typingGate    // typing notices forwarded per conversation
	inFlight chan struct{} // appends awaiting the broker; made on first use
	relays   []func()      // edit and delete relays, in order, the first one running (under mu)
	expiry   *time.Timer   // closes the connection at the token's exp

	space    chan struct{} // cap 1: the writer took the queue
	dead     chan struct{} // closed by finish
	finished sync.Once
}

func newConn(e *Edge, ws *websocket.Conn, wc *wireConn, id auth.Identity, lim *rate.Limiter) *conn {
	return &conn{
		e: e, seq: e.connSeq.Add(1), ws: ws, wc: wc, id: id, limiter: lim,
		rooms: map[string]*sub{},
		space: make(chan struct{}, 1),
		dead:  make(chan struct{}),
	}
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// scheduleLocked starts the writer goroutine unless someone holds the write
// token: the holder (a flusher or the writer goroutine) checks the queue
// and what is due again before it lets the token go. c.mu must be held.
func (c *conn) scheduleLocked() {
	if !c.writing {
		c.writing, c.writerG = true, true
		go c.writeLoop()
	}
}

// takeFlush reports whether the caller (a fan-out) may flush c itself:
// nobody holds the write token and nothing but frames is due. It then
// holds the token.
func (c *conn) takeFlush() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.flushPending = false
	if c.closing || c.writing {
		return false
	}
	if c.pingDue || c.wc.raw == nil {
		c.scheduleLocked()
		return false
	}
	c.writing = true
	return true
}

// flushRounds bounds how many times a flusher writes one connection before
// it hands a busy connection to its writer goroutine.
const flushRounds = 4

// flushOut writes what is queued for c with non-blocking writes, on the
// caller's goroutine: a fan-out wakes a few flushers instead of one
// goroutine per connection, so a large room does not flood the run queue.
// What the socket does not take at once (a slow client), and anything but
// frames (a ping, a close), goes to the connection's writer goroutine. The
// caller holds the write token (takeFlush).
func (c *conn) flushOut() {
	for round := 0; ; round++ {
		c.mu.Lock()
		if c.closing || c.pingDue || round == flushRounds {
			c.writerG = true // hand the token over
			go c.writeLoop()
			c.mu.Unlock()
			return
		}
		batch := c.queue
		if len(batch) == 0 {
			c.writing = false
			c.mu.Unlock()
			return
		}
		c.queue, c.qBytes = c.spare, 0
		c.spare = nil
		c.mu.Unlock()
		signal(c.space)

		bp := wireBufs.Get().(*[]byte)
		b := (*bp)[:0]
		for _, f := range batch {
			b = appendFrame(b, opText, f)
		}
		n, err := c.wc.tryWrite(b)
		var rest []byte
		if err == nil && n < len(b) {
			rest = append([]byte(nil), b[n:]...)
		}
		if cap(b) <= maxPooledWireBuf {
			*bp = b[:0]
			wireBufs.Put(bp)
		}
		clear(batch)
		c.mu.Lock()
		if c.spare == nil {
			c.spare = batch[:0]
		}
		if err != nil {
			c.mu.Unlock()
			c.finish() // the token stays taken: nothing more is written
			return
		}
		if rest != nil { // the socket is full: the writer goroutine waits on it
			c.rest = rest
			c.writerG = true
			go c.writeLoop()
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
	}
}

// finish ends the connection: the socket is closed, so the reader returns.
func (c *conn) finish() {
	c.finished.Do(func() {
		c.ws.NetConn().Close()
		close(c.dead)
	})
}

// push queues a frame without blocking and without writing it. A full
// queue closes the connection. flush reports that the caller must flush c
// (flushNow, or kickAll for a fan-out) once it has queued everything it has
// for c, so that all of it goes out with one system call.
func (c *conn) push(frame []byte, typ string) (flush bool) {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return false
	}
	if len(c.queue) >= c.e.cfg.SendQueueMessages || c.qBytes+len(frame) > c.e.cfg.SendQueueBytes {
		c.closing, c.closeCode, c.closeText, c.flush = true, CloseSlowClient, "send queue overflow: reconnect with since", false
		c.scheduleLocked()
		c.mu.Unlock()
		c.e.m.slowDropped.Inc()
		return false
	}
	c.queue = append(c.queue, frame)
	c.qBytes += len(frame)
	flush = !c.flushPending
	c.flushPending = true
	c.mu.Unlock()
	c.e.m.frameOut(typ)
	return flush
}

// send queues a frame without blocking and writes it out (flushNow).
func (c *conn) send(frame []byte, typ string) {
	if c.push(frame, typ) {
		c.flushNow()
	}
}

// flushNow writes what is queued on the caller's goroutine, unless someone
// already holds the write token (they write it).
func (c *conn) flushNow() {
	if c.takeFlush() {
		c.flushOut()
	}
}

// sendWait queues a frame, waiting for room in the queue: for replays and
// replies, where the producer can be slowed instead of the client dropped.
func (c *conn) sendWait(ctx context.Context, frame []byte, typ string) error {
	for {
		c.mu.Lock()
		if c.closing {
			c.mu.Unlock()
			return errClosed
		}
		if len(c.queue) < c.e.cfg.SendQueueMessages && c.qBytes+len(frame) <= c.e.cfg.SendQueueBytes {
			c.queue = append(c.queue, frame)
			c.qBytes += len(frame)
			c.mu.Unlock()
			c.e.m.frameOut(typ)
			c.flushNow()
			return nil
		}
		c.mu.Unlock()
		select {
		case <-c.space:
		case <-c.dead:
			return errClosed
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// maxInFlight bounds the appends of one connection awaiting the broker;
// beyond it the reader waits.
const maxInFlight = 64

// acquireInFlight waits for an append slot. Only the reader goroutine calls it.
func (c *conn) acquireInFlight(ctx context.Context) error {
	if c.inFlight == nil {
		c.inFlight = make(chan struct{}, maxInFlight)
	}
	select {
	case c.inFlight <- struct{}{}:
		return nil
	case <-c.dead:
		return errClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *conn) releaseInFlight() { <-c.inFlight }

// maxRelays bounds the edits and deletes of one connection waiting for
// history; beyond it they are refused at once (unavailable), so a slow
// history never holds up the connection's reader.
const maxRelays = 8

// relay runs fn (an edit or delete relayed to history) after the relays the
// connection queued before it, on another goroutine: a slow or stopped
// history holds up neither the connection's other frames nor its pongs,
// and two edits of one message still apply in the order they were sent.
// With maxRelays waiting already it calls full instead.
func (c *conn) relay(fn, full func()) {
	c.mu.Lock()
	if len(c.relays) >= maxRelays {
		c.mu.Unlock()
		full()
		return
	}
	c.relays = append(c.relays, fn)
	start := len(c.relays) == 1 // else the goroutine running the first one runs it
	c.mu.Unlock()
	if start {
		go c.runRelays()
	}
}

// runRelays runs the queued relays, each staying first in the queue while
// it runs, until the queue is empty.
func (c *conn) runRelays() {
	c.mu.Lock()
	for len(c.relays) > 0 {
		fn := c.relays[0]
		c.mu.Unlock()
		select {
		case <-c.dead:
			// Closed before its turn: unanswered, as if the frame had been
			// lost; the client resends it after reconnecting.
		default:
			fn()
		}
		c.mu.Lock()
		c.relays[0] = nil
		c.relays = c.relays[1:]
	}
	c.relays = nil
	c.mu.Unlock()
}

// isClosing reports whether a close was requested.
func (c *conn) isClosing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closing
}

// ping asks the writer to send a ping.
func (c *conn) ping() {
	c.mu.Lock()
	if !c.closing {
		c.pingDue = true
		c.scheduleLocked()
	}
	c.mu.Unlock()
}

// kill closes the connection with code, dropping what is queued.
func (c *conn) kill(code CloseCode, text string) { c.close(code, text, false) }

// close asks the writer to send a close frame and end the connection. With
// flush the queued frames are written first.
func (c *conn) close(code CloseCode, text string, flush bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return
	}
	c.closing, c.closeCode, c.closeText, c.flush = true, code, text, flush
	c.scheduleLocked()
}

// closeLinger bounds how long a closed connection waits for the client to
// read the close frame and answer it before the socket is closed.
const closeLinger = 3 * time.Second

// writeLoop is the connection's writer goroutine: it runs while something
// needs a blocking write (the rest of what a flusher could not write, a
// ping, a close, a busy connection handed over) and exits when the queue is
// empty. It holds the write token (c.writing, c.writerG). Each pass takes
// everything queued and writes it with one system call: every frame still
// holds exactly one JSON event, in queue order.
func (c *conn) writeLoop() {
	for {
		c.mu.Lock()
		rest := c.rest
		c.rest = nil
		batch := c.queue
		c.queue, c.qBytes = c.spare, 0
		c.spare = nil
		ping := c.pingDue
		c.pingDue = false
		closing, code, text, flush := c.closing, c.closeCode, c.closeText, c.flush
		if len(batch) == 0 && len(rest) == 0 && !ping && !closing {
			c.spare = batch[:0]
			c.writing, c.writerG = false, false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		signal(c.space)

		bp := wireBufs.Get().(*[]byte)
		b := append((*bp)[:0], rest...) // the tail of a flusher's frame comes first
		if ping && !closing {
			b = appendFrame(b, opPing, nil)
		}
		if !closing || flush {
			for _, f := range batch {
				b = appendFrame(b, opText, f)
			}
		}
		if closing && !c.wc.closeSent.Swap(true) {
			b = appendCloseFrame(b, code, text)
		}
		// A slow client's close frame waits, like any write, up to the
		// write timeout for room in the socket: it is all that is left to
		// send, and it tells the client to resume rather than just retry.
		err := c.wc.writeFramesWithin(b, c.e.cfg.WriteTimeout)
		if cap(b) <= maxPooledWireBuf {
			*bp = b[:0]
			wireBufs.Put(bp)
		}
		clear(batch) // the frames are shared with other connections: drop the references
		c.mu.Lock()
		if c.spare == nil {
			c.spare = batch[:0]
		}
		c.mu.Unlock()
		if err != nil {
			c.finish()
			return
		}
		if closing {
			c.e.m.closes.WithLabelValues(code.Label()).Inc()
			// FIN after the close frame; the reader sees the client's
			// answer (or the linger ends) and closes the socket. Closing
			// at once would reset a connection with unread input, and
			// the client would lose the close frame.
			c.wc.closeWrite()
			time.AfterFunc(closeLinger, c.finish)
			return
		}
	}
}
