package main

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"math/bits"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// The load generator: one goroutine per connection reading into a reused
// buffer, no JSON decoding (a benchmark message carries its send time and
// step in its content, found with a byte search), latencies into lock-free
// histograms. It shares the machine with the system under test, so it must
// stay cheap; its own CPU is printed next to the system's.

var dialer = websocket.Dialer{
	HandshakeTimeout: 30 * time.Second,
	ReadBufferSize:   2048,
	WriteBufferSize:  1024,
	NetDial: func(network, addr string) (net.Conn, error) {
		return (&net.Dialer{Timeout: 30 * time.Second}).Dial(network, addr)
	},
}

// dialWS opens a WebSocket to s as user (with a token for the chat).
func dialWS(s *server, tok string) (*websocket.Conn, error) {
	var h http.Header
	if tok != "" {
		h = http.Header{"Authorization": {"Bearer " + tok}}
	}
	ws, resp, err := dialer.Dial("ws://"+s.addr+"/ws", h)
	if err != nil && resp != nil {
		err = fmt.Errorf("%w (HTTP %s)", err, resp.Status)
	}
	return ws, err
}

// closeAll closes connections with an RST (SO_LINGER 0), so that tens of
// thousands of closes leave no TIME_WAIT sockets behind on the loopback.
func closeAll(conns []*websocket.Conn) {
	for _, ws := range conns {
		if ws == nil {
			continue
		}
		if tc, ok := ws.NetConn().(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
		ws.Close()
	}
}

// readLoop reads messages until the connection fails and calls handle for
// each line of each message: the example's writePump coalesces queued
// messages into one frame separated by '\n'; the chat's JSON frames have
// no raw newline, so splitting is a no-op for them. now is when the
// message was read.
func readLoop(ws *websocket.Conn, handle func(line []byte, now time.Time)) error {
	buf := make([]byte, 0, 1024)
	for {
		_, r, err := ws.NextReader()
		if err != nil {
			return err
		}
		buf = buf[:0]
		for {
			if len(buf) == cap(buf) {
				buf = append(buf, 0)[:len(buf)]
			}
			n, err := r.Read(buf[len(buf):cap(buf)])
			buf = buf[:len(buf)+n]
			if err == io.EOF {
				break
			}
			if err != nil {
				return err
			}
		}
		now := time.Now()
		for b := buf; len(b) > 0; {
			i := bytes.IndexByte(b, '\n')
			if i < 0 {
				handle(b, now)
				break
			}
			handle(b[:i], now)
			b = b[i+1:]
		}
	}
}

// A stamp is "<send time, Unix ns>:<step>:" at the start of a message's
// content (then padding) or as a whole client_id.
var (
	contentKey  = []byte(`"content":"`)
	clientIDKey = []byte(`"client_id":"`)
)

func appendStamp(b []byte, t time.Time, step int) []byte {
	b = strconv.AppendInt(b, t.UnixNano(), 10)
	b = append(b, ':')
	b = strconv.AppendInt(b, int64(step), 10)
	return append(b, ':')
}

// parseStamp finds key in line and parses the stamp that follows it.
func parseStamp(line, key []byte) (sent int64, step int, ok bool) {
	i := bytes.Index(line, key)
	if i < 0 {
		return 0, 0, false
	}
	b := line[i+len(key):]
	j := 0
	for ; j < len(b) && b[j] >= '0' && b[j] <= '9'; j++ {
		sent = sent*10 + int64(b[j]-'0')
	}
	if j == 0 || j >= len(b) || b[j] != ':' {
		return 0, 0, false
	}
	k := j + 1
	for ; k < len(b) && b[k] >= '0' && b[k] <= '9'; k++ {
		step = step*10 + int(b[k]-'0')
	}
	if k == j+1 || k >= len(b) || b[k] != ':' {
		return 0, 0, false
	}
	return sent, step, true
}

// chatFrame is a chat frame for room with a stamped content padded to size
// bytes; the client_id is the stamp too. The example broadcasts it as is.
func chatFrame(room string, t time.Time, step, size int) []byte {
	b := make([]byte, 0, 96+2*size)
	b = append(b, `{"type":"chat","room":"`...)
	b = append(b, room...)
	b = append(b, `","content":"`...)
	n := len(b)
	b = appendStamp(b, t, step)
	for len(b)-n < size {
		b = append(b, 'x')
	}
	b = append(b, `","client_id":"`...)
	b = appendStamp(b, t, step)
	return append(b, `"}`...)
}

// hist is a lock-free latency histogram: log-linear buckets of 1/32 of a
// power of two of microseconds (about 3 % resolution), up to ~2^57 µs.
type hist struct {
	n      atomic.Int64
	bucket [64 * 32]atomic.Int64
}

func histIndex(us int64) int {
	if us < 32 {
		return int(max(us, 0))
	}
	e := bits.Len64(uint64(us)) - 6 // us>>e is in [32, 64)
	return (e+1)*32 + int(us>>e) - 32
}

func histValue(i int) time.Duration {
	if i < 32 {
		return time.Duration(i) * time.Microsecond
	}
	e := i/32 - 1
	m := int64(i%32 + 32)
	return time.Duration(m<<e+(int64(1)<<e)/2) * time.Microsecond
}

func (h *hist) add(d time.Duration) {
	h.n.Add(1)
	h.bucket[min(histIndex(d.Microseconds()), len(h.bucket)-1)].Add(1)
}

// q returns the q-quantile (0 when empty).
func (h *hist) q(q float64) time.Duration {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	want := int64(math.Ceil(q * float64(n)))
	var c int64
	for i := range h.bucket {
		c += h.bucket[i].Load()
		if c >= want {
			return histValue(i)
		}
	}
	return histValue(len(h.bucket) - 1)
}

// pace calls send rate times a second for d, catching up in bursts when a
// sleep overshoots, and returns after d; it returns how many sends were
// made, stopping early when send fails. The k-th send is due at
// (k+phase)/rate seconds, and every send due before d is made: publishers
// given phases i/n spread their sends over each period instead of all
// sending at the same instants.
func pace(rate float64, d time.Duration, phase float64, send func() error) (int, error) {
	t0 := time.Now()
	total := 0
	if rate > 0 {
		total = max(0, int(math.Ceil(d.Seconds()*rate-phase)))
	}
	sent := 0
	for sent < total {
		el := time.Since(t0)
		due := min(total, max(0, int(math.Floor(el.Seconds()*rate-phase))+1))
		for ; sent < due; sent++ {
			if err := send(); err != nil {
				return sent, err
			}
		}
		if sent < total {
			time.Sleep(time.Until(t0.Add(time.Duration((float64(sent) + phase) / rate * float64(time.Second)))))
		}
	}
	time.Sleep(time.Until(t0.Add(d)))
	return sent, nil
}

// dialMany opens n connections with conc concurrent dialers; user(i) names
// connection i; after (if not nil) runs on each new connection in its
// dialer's goroutine. Handshake latencies go to lat (if not nil).
func dialMany(s *server, n, conc int, user func(int) string, lat *hist, after func(int, *websocket.Conn) error) ([]*websocket.Conn, error) {
	toks := make([]string, n)
	if s.chat {
		for i := range toks {
			toks[i] = s.token(user(i))
		}
	}
	return dialEach(n, conc, func(i int) (*websocket.Conn, error) {
		t0 := time.Now()
		ws, err := dialWS(s, toks[i])
		if err == nil && lat != nil {
			lat.add(time.Since(t0))
		}
		if err == nil && after != nil {
			err = after(i, ws)
		}
		return ws, err
	})
}

// dialEach runs dial(i) for i in [0, n) on conc concurrent dialers. The
// first error stops them, closes every connection (also the failing one,
// when dial returned it) and is returned.
func dialEach(n, conc int, dial func(i int) (*websocket.Conn, error)) ([]*websocket.Conn, error) {
	conns := make([]*websocket.Conn, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for range min(conc, n) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				ws, err := dial(i)
				if err != nil {
					if ws != nil {
						ws.Close()
					}
					once.Do(func() { first = fmt.Errorf("connection %d of %d: %w", i, n, err) })
					next.Store(int64(n)) // stop the other dialers
					return
				}
				conns[i] = ws
			}
		})
	}
	wg.Wait()
	if first != nil {
		closeAll(conns)
		return nil, first
	}
	return conns, nil
}

// subscribers are connections that each run readLoop in a goroutine;
// dropped counts those that ended.
type subscribers struct {
	conns   []*websocket.Conn
	dropped atomic.Int64
}

var joinedType = []byte(`"type":"joined"`)

// subscribe opens n connections; on the chat each joins room(i) (unless
// "") and is waited for until its joined frame (the example has one room
// that everyone is in). handle gets every later line.
func subscribe(s *server, n, conc int, user func(int) string, room func(int) string, handle func(line []byte, now time.Time)) (*subscribers, error) {
	subs := &subscribers{}
	var joined sync.WaitGroup
	joined.Add(n)
	conns, err := dialMany(s, n, conc, user, nil, func(i int, ws *websocket.Conn) error {
		waiting := s.chat && room(i) != ""
		if waiting {
			if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"join","room":"`+room(i)+`"}`)); err != nil {
				return err
			}
		}
		if !waiting {
			joined.Done()
		}
		go func() {
			err := readLoop(ws, func(line []byte, now time.Time) {
				if waiting && bytes.Contains(line, joinedType) {
					waiting = false
					joined.Done()
					return
				}
				handle(line, now)
			})
			_ = err
			subs.dropped.Add(1)
			if waiting {
				joined.Done()
			}
		}()
		return nil
	})
	if err != nil {
		return nil, err
	}
	subs.conns = conns
	if !waitFor(&joined, 120*time.Second) {
		closeAll(conns)
		return nil, fmt.Errorf("not every subscriber got joined within 120s")
	}
	if d := subs.dropped.Load(); d > 0 {
		closeAll(conns)
		return nil, fmt.Errorf("%d subscribers were disconnected while joining", d)
	}
	return subs, nil
}

func (subs *subscribers) close() { closeAll(subs.conns) }

// waitFor waits for wg, at most d; false when d passed first.
func waitFor(wg *sync.WaitGroup, d time.Duration) bool {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

func fmtDur(d time.Duration) string {
	switch {
	case d == 0:
		return "-"
	case d < time.Millisecond:
		return fmt.Sprintf("%dµs", d.Microseconds())
	case d < time.Second:
		return fmt.Sprintf("%.1fms", float64(d)/1e6)
	}
	return fmt.Sprintf("%.2fs", d.Seconds())
}

func ratio(a, b float64) string {
	if b == 0 || math.IsNaN(a) || math.IsNaN(b) {
		return "-"
	}
	return fmt.Sprintf("%.2f", a/b)
}
