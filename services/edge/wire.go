package edge

import (
	"bufio"
	"encoding/binary"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// wireConn is the network connection under one WebSocket. The connection's
// writer goroutine encodes everything queued for the client (data frames, a
// due ping, the close frame) into one buffer and writes it with one system
// call; gorilla/websocket still writes the frames it owns (pongs, the echo
// of a client's close) through Write. Writes are serialised, so frames never
// interleave, and each write carries its own deadline.
type wireConn struct {
	net.Conn
	mu        sync.Mutex
	deadline  time.Time // set by gorilla before its own writes
	batchDL   time.Time // the socket's write deadline when a batch set it (zero otherwise)
	sockDL    time.Time // the socket's write deadline, whoever set it
	closeSent atomic.Bool
	raw       syscall.RawConn // for non-blocking writes; nil when not a TCP socket
	// hold keeps the first Write (gorilla's HTTP 101 response) in held
	// instead of sending it: writeHandshake sends it with the welcome frame,
	// one system call and one segment for both.
	hold bool
	held []byte
}

// writeHandshake writes the held handshake response followed by frame
// (a whole WebSocket frame) within timeout.
func (w *wireConn) writeHandshake(frame []byte, timeout time.Duration) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.hold = false
	b := append(w.held, frame...)
	w.held = nil
	if err := w.Conn.SetWriteDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	w.sockDL, w.batchDL = time.Time{}, time.Time{}
	_, err := w.Conn.Write(b)
	if err == nil {
		err = w.Conn.SetWriteDeadline(time.Time{})
	}
	return err
}

// tryWrite writes as much of b as the socket takes now, without waiting:
// n < len(b) with a nil error means the socket buffer is full.
func (w *wireConn) tryWrite(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.sockDL.IsZero() && time.Until(w.sockDL) < time.Second {
		// A write deadline left by an earlier blocking write would fail this
		// one; a write that never waits needs none.
		if err := w.Conn.SetWriteDeadline(time.Time{}); err != nil {
			return 0, err
		}
		w.sockDL, w.batchDL = time.Time{}, time.Time{}
	}
	var n int
	var werr error
	err := w.raw.Write(func(fd uintptr) bool {
		for n < len(b) {
			m, e := syscall.Write(int(fd), b[n:])
			if m > 0 {
				n += m
			}
			switch {
			case e == syscall.EINTR:
				continue
			case e == syscall.EAGAIN:
				return true
			case e != nil:
				werr = e
				return true
			case m <= 0:
				return true
			}
		}
		return true
	})
	if err != nil {
		return n, err
	}
	return n, werr
}

// SetWriteDeadline records gorilla's deadline for its next Write; the
// writer goroutine's batches carry their own.
func (w *wireConn) SetWriteDeadline(t time.Time) error {
	w.mu.Lock()
	w.deadline = t
	w.mu.Unlock()
	return nil
}

// Write writes one whole frame for gorilla/websocket.
func (w *wireConn) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.hold {
		w.hold = false
		w.held = append(make([]byte, 0, len(p)+64), p...) // p is gorilla's buffer: copy
		return len(p), nil
	}
	if len(p) > 0 && p[0] == finBit|opClose && w.closeSent.Swap(true) {
		return len(p), nil // one close frame per connection
	}
	w.batchDL = time.Time{} // the socket's deadline is gorilla's now
	w.sockDL = w.deadline
	if err := w.Conn.SetWriteDeadline(w.deadline); err != nil {
		return 0, err
	}
	return w.Conn.Write(p)
}

// writeFramesWithin writes a buffer of whole frames that must be written
// within timeout. Moving a socket's deadline costs a timer update, so the
// deadline set for an earlier batch is kept while at least half of timeout
// remains of it: a stuck client is still cut off within timeout.
func (w *wireConn) writeFramesWithin(b []byte, timeout time.Duration) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := time.Now()
	if w.batchDL.Sub(now) < timeout/2 {
		w.batchDL = now.Add(timeout)
		w.sockDL = w.batchDL
		if err := w.Conn.SetWriteDeadline(w.batchDL); err != nil {
			return err
		}
	}
	_, err := w.Conn.Write(b)
	return err
}

// closeWrite sends FIN after the close frame, so the client reads every
// byte before it and the close is orderly rather than a reset.
func (w *wireConn) closeWrite() {
	if cw, ok := w.Conn.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
}

// Frame opcodes and header bits (RFC 6455, section 5.2).
const (
	opText  = 0x1
	opClose = 0x8
	opPing  = 0x9
	finBit  = 0x80
)

// appendFrame appends one unmasked, unfragmented server frame (RFC 6455,
// section 5.2: servers never mask) to b.
func appendFrame(b []byte, opcode byte, payload []byte) []byte {
	b = append(b, finBit|opcode)
	switch n := len(payload); {
	case n <= 125:
		b = append(b, byte(n))
	case n <= 0xffff:
		b = append(b, 126, byte(n>>8), byte(n))
	default:
		b = append(b, 127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	return append(b, payload...)
}

// appendCloseFrame appends a close frame with code and reason (at most 123
// bytes, the control frame limit).
func appendCloseFrame(b []byte, code CloseCode, reason string) []byte {
	if len(reason) > 123 {
		reason = reason[:123]
	}
	payload := make([]byte, 2, 2+len(reason))
	binary.BigEndian.PutUint16(payload, uint16(code))
	return appendFrame(b, opClose, append(payload, reason...))
}

// wireBufs recycles the writer goroutines' batch buffers, so an idle
// connection holds none.
var wireBufs = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

// maxPooledWireBuf keeps buffers grown by a huge batch out of the pool.
const maxPooledWireBuf = 1 << 20

// hijacker hands gorilla's Upgrade the connection wrapped in a wireConn.
type hijacker struct {
	http.ResponseWriter
	wc *wireConn
}

func (h *hijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	h.wc = &wireConn{Conn: nc, hold: true}
	if sc, ok := nc.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			h.wc.raw = raw
		}
	}
	return h.wc, brw, nil
}
