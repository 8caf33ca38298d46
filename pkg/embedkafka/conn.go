package embedkafka

import (
	"encoding/binary"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// The connection wrapper sits between kfake and each client socket. kfake
// reads a request as io.ReadFull of the 4-byte size, then of the body, and
// writes each response with one Write (client_conn.go); it handles one
// request per connection at a time. The wrapper follows both byte streams'
// framing (size, then key/version/correlation id for requests, correlation
// id for responses). A response to a request that wrote something that must
// survive a machine crash (a produce with acks != 0, an offset commit, ...)
// is held in Write until a group fsync round that started after the Write
// call has finished: kfake wrote the data before it built the response, so
// that round covers it. Holding blocks only this connection's writer, never
// kfake's cluster goroutine, and keeps the connection's responses in order.

// Kafka API keys the wrapper acts on.
const (
	keyProduce            = 0
	keyMetadata           = 3
	keyOffsetCommit       = 8
	keyCreateTopics       = 19
	keyDeleteTopics       = 20
	keyInitProducerID     = 22
	keyAddPartitionsToTxn = 24
	keyAddOffsetsToTxn    = 25
	keyEndTxn             = 26
	keyTxnOffsetCommit    = 28
	keyOffsetDelete       = 47 // kfake persists the deletion to groups.log
	keyAlterConfigs       = 33
	keyCreatePartitions   = 37
	keyIncrementalAlter   = 44
)

type listener struct {
	net.Listener
	gc  *committer
	log *slog.Logger
}

func (l *listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &conn{Conn: c, gc: l.gc, log: l.log, closed: make(chan struct{})}, nil
}

// pending is a request that will get a response, in arrival order.
type pending struct {
	corr    int32
	key     int16
	version int16
	durable bool
	w       work
	ids     []idPart // produce v13+: partitions named by topic id
}

type idPart struct {
	id   [16]byte
	part int32
}

type conn struct {
	net.Conn
	gc        *committer
	log       *slog.Logger
	closeOnce sync.Once
	closed    chan struct{}
	warned    atomic.Bool

	// Read side: used by one reader at a time (kfake reads a request
	// only after the previous one was handed over).
	rsize  [4]byte
	rsizeN int
	rrem   int    // body bytes still to come
	rbody  []byte // body so far (header only unless captured)
	rcap   bool   // capture the whole body
	rknown bool   // header seen, rcap decided

	mu      sync.Mutex
	pending []pending

	// Write side.
	wmu   sync.Mutex
	whdr  [8]byte
	whdrN int
	wrem  int // bytes of the current response still to forward
}

func (c *conn) Close() error {
	c.closeOnce.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

func (c *conn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.feed(p[:n])
	}
	return n, err
}

// feed follows the request stream.
func (c *conn) feed(b []byte) {
	for len(b) > 0 {
		if c.rrem == 0 {
			k := copy(c.rsize[c.rsizeN:], b)
			c.rsizeN += k
			b = b[k:]
			if c.rsizeN < 4 {
				return
			}
			c.rsizeN = 0
			c.rrem = int(binary.BigEndian.Uint32(c.rsize[:]))
			c.rbody, c.rcap, c.rknown = c.rbody[:0], false, false
			if c.rrem == 0 {
				continue
			}
		}
		k := min(len(b), c.rrem)
		chunk := b[:k]
		b = b[k:]
		c.rrem -= k
		if !c.rknown {
			t := min(8-len(c.rbody), len(chunk))
			c.rbody = append(c.rbody, chunk[:t]...)
			chunk = chunk[t:]
			if len(c.rbody) == 8 {
				c.rknown = true
				c.rcap = capturesBody(int16(binary.BigEndian.Uint16(c.rbody)))
			}
		}
		if c.rcap {
			c.rbody = append(c.rbody, chunk...)
		}
		if c.rrem == 0 && c.rknown {
			c.request(c.rbody)
		}
	}
	if cap(c.rbody) > 1<<20 && c.rrem == 0 {
		c.rbody = nil // do not keep a large produce's buffer
	}
}

func capturesBody(key int16) bool { return key == keyProduce }

// request classifies a whole request (its body is complete only when
// capturesBody) and queues what its response owes the disk.
func (c *conn) request(body []byte) {
	p := pending{
		key:     int16(binary.BigEndian.Uint16(body[0:2])),
		version: int16(binary.BigEndian.Uint16(body[2:4])),
		corr:    int32(binary.BigEndian.Uint32(body[4:8])),
	}
	switch p.key {
	case keyProduce:
		req := kmsg.NewPtrProduceRequest()
		req.SetVersion(p.version)
		rest, ok := skipRequestHeader(body, req.IsFlexible())
		if ok && req.ReadFrom(rest) == nil {
			if req.Acks == 0 {
				return // kfake sends no response
			}
			if req.Acks == 1 {
				// acks=1 asks only that the leader has the batch (as with
				// Kafka, which never fsyncs per write): answered at once,
				// synced by the next round that covers its partition or
				// by the page cache's writeback. Typing notices use it.
				break
			}
			p.durable = true
			for _, t := range req.Topics {
				for _, pt := range t.Partitions {
					if t.Topic == "" && t.TopicID != ([16]byte{}) {
						p.ids = append(p.ids, idPart{t.TopicID, pt.Partition})
					} else {
						p.w.parts = append(p.w.parts, partDirName(t.Topic, pt.Partition))
					}
					p.w.batches++
				}
			}
		} else {
			// kfake fails to parse it too and closes the connection.
			p.durable, p.w.all = true, true
		}
	case keyOffsetCommit, keyTxnOffsetCommit, keyOffsetDelete:
		p.durable, p.w.groups = true, true
	case keyInitProducerID, keyAddPartitionsToTxn, keyAddOffsetsToTxn:
		p.durable, p.w.pids = true, true
	case keyEndTxn:
		// Control batches go to every partition of the transaction and
		// committed offsets to groups.log.
		p.durable, p.w.pids, p.w.groups, p.w.all = true, true, true, true
	case keyCreateTopics, keyDeleteTopics, keyCreatePartitions, keyAlterConfigs, keyIncrementalAlter:
		p.durable, p.w.meta = true, true
	}
	c.mu.Lock()
	c.pending = append(c.pending, p)
	c.mu.Unlock()
}

// skipRequestHeader returns the request after its header (key, version,
// correlation id, client id and, for flexible versions, tagged fields).
func skipRequestHeader(body []byte, flexible bool) ([]byte, bool) {
	if len(body) < 10 {
		return nil, false
	}
	n := int(int16(binary.BigEndian.Uint16(body[8:10])))
	b := body[10:]
	if n > 0 {
		if len(b) < n {
			return nil, false
		}
		b = b[n:]
	}
	if flexible {
		return skipTags(b)
	}
	return b, true
}

func skipTags(b []byte) ([]byte, bool) {
	num, n := binary.Uvarint(b)
	if n <= 0 {
		return nil, false
	}
	b = b[n:]
	for range num {
		_, n := binary.Uvarint(b)
		if n <= 0 {
			return nil, false
		}
		b = b[n:]
		size, n := binary.Uvarint(b)
		if n <= 0 || uint64(len(b)-n) < size {
			return nil, false
		}
		b = b[n+int(size):]
	}
	return b, true
}

func (c *conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	written := 0
	for len(p) > 0 {
		if c.wrem > 0 {
			k := min(len(p), c.wrem)
			n, err := c.Conn.Write(p[:k])
			written += n
			c.wrem -= n
			if err != nil {
				return written, err
			}
			p = p[k:]
			continue
		}
		if c.whdrN == 0 && len(p) >= 8 {
			// The usual case: the response starts here, whole.
			frame := 4 + int(binary.BigEndian.Uint32(p))
			var resp []byte
			if len(p) >= frame {
				resp = p[4:frame]
			}
			if err := c.beforeResponse(int32(binary.BigEndian.Uint32(p[4:8])), resp); err != nil {
				return written, err
			}
			c.wrem = frame
			continue
		}
		k := copy(c.whdr[c.whdrN:], p)
		c.whdrN += k
		p = p[k:]
		written += k
		if c.whdrN < 8 {
			return written, nil
		}
		c.whdrN = 0
		if err := c.beforeResponse(int32(binary.BigEndian.Uint32(c.whdr[4:8])), nil); err != nil {
			return written, err
		}
		if _, err := c.Conn.Write(c.whdr[:]); err != nil {
			return written, err
		}
		c.wrem = 4 + int(binary.BigEndian.Uint32(c.whdr[:4])) - 8
	}
	return written, nil
}

// beforeResponse holds the response with correlation id corr until the
// disk has what it acknowledges. resp is the response after its size field
// when the whole response is at hand, else nil.
func (c *conn) beforeResponse(corr int32, resp []byte) error {
	var writeEv uint64
	if c.gc.t != nil {
		writeEv = c.gc.t.event()
	}
	c.mu.Lock()
	var p pending
	ok := len(c.pending) > 0
	if ok {
		p = c.pending[0]
		c.pending = c.pending[1:]
	}
	c.mu.Unlock()
	if !ok || p.corr != corr {
		// Cannot happen with kfake's one-request-at-a-time connections;
		// if it does, be safe rather than fast.
		if !c.warned.Swap(true) {
			c.log.Warn("embedded broker: response does not match the request stream; syncing everything for it", "corr", corr, "expected", p.corr, "remote", c.RemoteAddr())
		}
		p = pending{corr: corr, durable: true, w: work{all: true, groups: true, pids: true, meta: true}}
	} else if resp != nil {
		c.learn(p.key, p.version, resp)
	}
	if !p.durable {
		return nil
	}
	w := p.w
	for _, ip := range p.ids {
		if name, ok := c.gc.topicName(ip.id); ok {
			w.parts = append(w.parts, partDirName(name, ip.part))
		} else {
			w.all = true
		}
	}
	if w.empty() {
		return nil
	}
	start := time.Now()
	r := c.gc.enqueue(&w)
	select {
	case <-r.done:
	case <-c.closed:
		return net.ErrClosed
	}
	if r.err != nil {
		c.log.Debug("embedded broker: closing a connection whose acknowledgement could not be made durable", "remote", c.RemoteAddr(), "err", r.err)
		c.Close()
		return r.err
	}
	c.gc.met.observeHeld(time.Since(start))
	if c.gc.t != nil {
		c.gc.t.released(releaseEvent{Key: p.key, Corr: corr, Round: r.seq, WriteEv: writeEv, RoundStartEv: r.startEv, RoundEndEv: r.endEv, ReleaseEv: c.gc.t.event(), Parts: w.parts, ByID: len(p.ids), All: w.all})
	}
	return nil
}

// learn records topic ids from Metadata and CreateTopics responses, so a
// produce that names its topics by id (v13+) syncs only those partitions.
func (c *conn) learn(key, version int16, resp []byte) {
	if !(key == keyMetadata && version >= 10) && !(key == keyCreateTopics && version >= 7) {
		return
	}
	r := kmsg.ResponseForKey(key)
	if r == nil || len(resp) < 4 {
		return
	}
	r.SetVersion(version)
	b := resp[4:]
	if r.IsFlexible() {
		var ok bool
		if b, ok = skipTags(b); !ok {
			return
		}
	}
	if err := r.ReadFrom(b); err != nil {
		return
	}
	switch r := r.(type) {
	case *kmsg.MetadataResponse:
		for _, t := range r.Topics {
			if t.Topic != nil {
				c.gc.setTopicID(t.TopicID, *t.Topic)
			}
		}
	case *kmsg.CreateTopicsResponse:
		for _, t := range r.Topics {
			c.gc.setTopicID(t.TopicID, t.Topic)
		}
	}
}
