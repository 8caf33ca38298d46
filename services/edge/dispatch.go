package edge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"

	"github.com/chatsys/chat/pkg/chatevent"
)

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
			delete(c.rooms, f.Room)
			if !s.revoked.Load() {
				e.hub.removeSub(s)
				e.presence.left(c.id.Username, f.Room)
			}
		}
		c.sendWait(ctx, chatevent.LeftFrame{Room: f.Room}.Encode(), chatevent.TypeLeft)
	case chatevent.TypeTyping:
		e.handleTyping(ctx, c, f)
	case chatevent.TypeRead:
		e.handleRead(ctx, c, f)
	case chatevent.TypeEdit, chatevent.TypeDelete:
		c.relay(func() { e.handleEdit(ctx, c, f) }, func() {
			e.sendError(ctx, c, chatevent.CodeUnavailable, fmt.Sprintf("more than %d edits and deletes are waiting for history; retry", maxRelays), f.ClientID)
		})
	case chatevent.TypeChat, chatevent.TypePrivate:
		if !c.id.Expires.IsZero() && !time.Now().Before(c.id.Expires) {
			return // the expiry timer is closing the connection: nothing more is appended
		}
		cid := f.ClientID
		answer := e.answerer(c, cid, "the message log did not acknowledge the message; it was not sent, retry")
		// A resend of a known client_id is answered from the first send
		// (and costs no rate): see sends. It is not authorized again: a
		// message acknowledged before a mute, ban or block keeps its ack,
		// and nothing is appended for it.
		ev, action := e.sends.begin(c.id.Username, cid, fingerprint(f.Type, f.Room, f.Target, f.Content), func() chatevent.Event {
			return chatevent.Event{
				ID: chatevent.NewID(), Type: f.Type, Room: f.Room, Target: f.Target, Username: c.id.Username,
				Content: f.Content, Timestamp: chatevent.FormatTime(time.Now()), ClientID: cid,
			}
		}, answer)
		switch action {
		case sendConflict:
			e.refuseReusedClientID(ctx, c, cid)
			return
		case sendWait:
			e.m.resends.Inc()
			return
		case sendAcked:
			e.m.resends.Inc()
			answer(ev.ID, nil)
			return
		}
		// refuse ends this attempt unappended. A new send is forgotten (a
		// later resend is a new send); a retry keeps its event, which an
		// earlier attempt may have appended, so the next resend writes the
		// same id again.
		retry := action == sendRetry
		refuse := func(err error) {
			if retry {
				e.sends.finish(c.id.Username, cid, err)
			} else {
				e.sends.forget(c.id.Username, cid, err)
			}
		}
		if retry {
			e.m.resends.Inc()
		}
		// What is appended is ev (a retry's is the first attempt's event,
		// whatever the resend's frame says): it is what is authorized.
		var r *refusal
		switch {
		case ev.Type == chatevent.TypePrivate && !e.allowed(ctx, c, func() bool { return chatevent.MayMessage(c.id.Username, ev.Target, e.aclState()) }):
			r = &refusal{chatevent.CodeForbidden, fmt.Sprintf("you may not send private messages to %q", ev.Target)}
		case ev.Type == chatevent.TypeChat && !e.allowed(ctx, c, func() bool { return e.aclState().MayWrite(ev.Room, c.id.Username, c.id.Admin) }):
			r = &refusal{chatevent.CodeForbidden, fmt.Sprintf("you may not write in room %q", ev.Room)}
		case !retry && !c.limiter.Allow(): // a resend is not counted by the rate limit (README, Resending)
			r = e.rateLimited()
		}
		if r != nil {
			refuse(r)
			e.sendError(ctx, c, r.code, r.msg, cid)
			return
		}
		// Appends are pipelined: the next frame is read while this one is
		// in flight, up to maxInFlight per connection; the ack (or the
		// error) follows the broker's answer.
		if err := c.acquireInFlight(ctx); err != nil {
			refuse(err)
			return
		}
		e.appendAsync(ctx, &ev, func(err error) {
			c.releaseInFlight() // a failure is logged by the appender
			answer(ev.ID, err)
			e.sends.finish(c.id.Username, cid, err)
		})
	}
}

// refuseReusedClientID answers a chat, private, edit or delete whose
// client_id this user used for a different one within the dedupe window.
func (e *Edge) refuseReusedClientID(ctx context.Context, c *conn, cid string) {
	e.sendError(ctx, c, chatevent.CodeInvalidMessage, fmt.Sprintf("client_id %q was already used for a different message; give each message its own client_id", cid), cid)
}

// refusal ends a send, edit or delete that was refused (by the ACL, the
// rate limit, history): nothing was appended or changed by it, a resend
// that waited on it gets the same answer, and a later resend is a new
// attempt.
type refusal struct{ code, msg string }

func (r *refusal) Error() string { return r.code + ": " + r.msg }

func (e *Edge) rateLimited() *refusal {
	return &refusal{chatevent.CodeRateLimited, fmt.Sprintf("more than %g messages per second; slow down", e.cfg.RatePerSecond)}
}

// answerer returns what answers the sends of cid on c: the ack, or the
// error (a *refusal's code and message; any other error is unavailable,
// with unknown as its message). It never blocks: it also runs for a resend
// that waited on an attempt made on another connection.
func (e *Edge) answerer(c *conn, cid, unknown string) func(id string, err error) {
	return func(id string, err error) {
		if err == nil {
			c.send(chatevent.AckFrame{ClientID: cid, ID: id}.Encode(), chatevent.TypeAck)
			return
		}
		code, msg := chatevent.CodeUnavailable, unknown
		if r := (*refusal)(nil); errors.As(err, &r) {
			code, msg = r.code, r.msg
		}
		e.m.errors.WithLabelValues(code).Inc()
		c.send(chatevent.ErrorFrame{Code: code, Message: msg, ClientID: cid}.Encode(), chatevent.TypeError)
	}
}
