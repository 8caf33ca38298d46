package edge

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/time/rate"

	"github.com/chatsys/chat/pkg/auth"
)

// CloseCode is a WebSocket close code the edge sends.
type CloseCode int

// Close codes. Reconnect tells a client whether reconnecting makes sense.
const (
	CloseGoingAway       CloseCode = websocket.CloseGoingAway               // 1001: edge shutting down; reconnect
	CloseUnsupportedData CloseCode = websocket.CloseUnsupportedData         // 1003: binary frame
	CloseInvalidPayload  CloseCode = websocket.CloseInvalidFramePayloadData // 1007: text frame not UTF-8
	CloseTooLarge        CloseCode = websocket.CloseMessageTooBig           // 1009: frame above the read limit
	CloseInternal        CloseCode = websocket.CloseInternalServerErr       // 1011: resume failed; reconnect with since
	CloseSlowClient      CloseCode = 4000                                   // send queue overflowed; reconnect with since
)

// Reconnect reports whether a client should reconnect after this close.
func (c CloseCode) Reconnect() bool {
	switch c {
	case CloseGoingAway, CloseInternal, CloseSlowClient:
		return true
	}
	return false
}

// conn is one WebSocket connection. The handler goroutine reads; one writer
// goroutine writes from a bounded queue, so a slow client never blocks the
// fan-out: when its queue overflows it is closed with CloseSlowClient.
type conn struct {
	e       *Edge
	ws      *websocket.Conn
	id      auth.Identity
	limiter *rate.Limiter
	rooms   map[string]*sub // owned by the reader goroutine

	mu        sync.Mutex
	queue     [][]byte
	spare     [][]byte
	qBytes    int
	closing   bool
	closeCode CloseCode
	closeText string
	flush     bool // on close, write the queue first (drain) or drop it (slow)

	wake  chan struct{} // cap 1: the writer has work
	space chan struct{} // cap 1: the writer emptied the queue
	done  chan struct{} // closed when the reader exits
	wdone chan struct{} // closed when the writer exits
}

func newConn(e *Edge, ws *websocket.Conn, id auth.Identity, lim *rate.Limiter) *conn {
	return &conn{
		e: e, ws: ws, id: id, limiter: lim,
		rooms: map[string]*sub{},
		wake:  make(chan struct{}, 1),
		space: make(chan struct{}, 1),
		done:  make(chan struct{}),
		wdone: make(chan struct{}),
	}
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// send queues a frame without blocking. A full queue closes the connection.
func (c *conn) send(frame []byte, typ string) bool {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return false
	}
	if len(c.queue) >= c.e.cfg.SendQueueMessages || c.qBytes+len(frame) > c.e.cfg.SendQueueBytes {
		c.closing, c.closeCode, c.closeText, c.flush = true, CloseSlowClient, "send queue overflow: reconnect with since", false
		c.mu.Unlock()
		c.e.m.slowDropped.Inc()
		signal(c.wake)
		return false
	}
	c.queue = append(c.queue, frame)
	c.qBytes += len(frame)
	c.mu.Unlock()
	c.e.m.framesOut.WithLabelValues(typ).Inc()
	signal(c.wake)
	return true
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
			c.e.m.framesOut.WithLabelValues(typ).Inc()
			signal(c.wake)
			return nil
		}
		c.mu.Unlock()
		select {
		case <-c.space:
		case <-c.wdone:
			return errClosed
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// sendJSON encodes v and queues it with sendWait.
func (c *conn) sendJSON(ctx context.Context, typ string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return c.sendWait(ctx, b, typ)
}

// kill closes the connection with code, dropping what is queued.
func (c *conn) kill(code CloseCode, text string) { c.close(code, text, false) }

// close asks the writer to send a close frame and end the connection. With
// flush the queued frames are written first.
func (c *conn) close(code CloseCode, text string, flush bool) {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return
	}
	c.closing, c.closeCode, c.closeText, c.flush = true, code, text, flush
	c.mu.Unlock()
	signal(c.wake)
}

// writeLoop is the connection's only writer of data frames.
func (c *conn) writeLoop() {
	defer close(c.wdone)
	defer c.ws.Close()
	ping := time.NewTicker(c.e.cfg.PingInterval)
	defer ping.Stop()
	for {
		select {
		case <-c.wake:
		case <-ping.C:
			if err := c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(c.e.cfg.WriteTimeout)); err != nil {
				return
			}
			continue
		case <-c.done:
			return
		}
		c.mu.Lock()
		batch := c.queue
		c.queue, c.spare = c.spare[:0], nil
		c.qBytes = 0
		closing, code, text, flush := c.closing, c.closeCode, c.closeText, c.flush
		c.mu.Unlock()
		signal(c.space)
		if !closing || flush {
			for i, f := range batch {
				c.ws.SetWriteDeadline(time.Now().Add(c.e.cfg.WriteTimeout))
				if err := c.ws.WriteMessage(websocket.TextMessage, f); err != nil {
					return
				}
				batch[i] = nil
			}
		}
		c.mu.Lock()
		if c.spare == nil && cap(batch) <= 2*c.e.cfg.SendQueueMessages {
			c.spare = batch[:0]
		}
		c.mu.Unlock()
		if closing {
			c.e.m.closes.WithLabelValues(closeLabel(code)).Inc()
			c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(int(code), text), time.Now().Add(time.Second))
			return
		}
	}
}

func closeLabel(c CloseCode) string {
	switch c {
	case CloseGoingAway:
		return "1001"
	case CloseUnsupportedData:
		return "1003"
	case CloseInvalidPayload:
		return "1007"
	case CloseTooLarge:
		return "1009"
	case CloseInternal:
		return "1011"
	case CloseSlowClient:
		return "4000"
	}
	return "other"
}
