package analytics

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/compress"
)

// The log is read with a minimal Kafka fetch client of its own: one
// request, one partition, Fetch v4 (Kafka 0.11 and later, the oldest
// version Kafka 4 still serves; Redpanda and the embedded broker serve it
// too). Each response is read whole into a pooled buffer and its record
// batches are handed to the workers as they are, so a record's value is
// parsed where it lies: no copy, no allocation, no channel send per record,
// unlike kafka-go's Reader and Batch, which cost more than the JSON parsing
// of the same records. kafka-go still finds the partitions, their leaders
// and offsets, and decompresses compressed batches.

const (
	apiFetch         = 1
	fetchAPIVersion  = 4
	fetchClientID    = "chat-analytics"
	maxResponseBytes = 256 << 20 // a larger size prefix means a broken stream
	// batchHeaderLen is the size of a v2 record batch header: base offset,
	// length, leader epoch, magic, CRC, attributes, last offset delta, base
	// and max timestamps, producer id and epoch, base sequence, count.
	batchHeaderLen = 61
)

var errCorrupt = errors.New("corrupt record batch")

// fetchConn is one connection to a broker, used by one goroutine at a time.
type fetchConn struct {
	c    net.Conn
	corr int32
	req  []byte
}

// fetched is one partition's part of a fetch response.
type fetched struct {
	errCode int16
	hwm     int64  // high watermark
	records []byte // record batches; the last may be cut short
}

// fetch asks for the records of topic/partition from offset on, at most
// maxBytes of them, and reads the response into *buf (grown as needed).
// The records are a view of *buf.
func (fc *fetchConn) fetch(topic string, partition int, offset int64, maxBytes int32, maxWait time.Duration, buf *[]byte) (fetched, error) {
	fc.corr++
	fc.req = appendFetchRequest(fc.req[:0], fc.corr, topic, int32(partition), offset, maxBytes, maxWait)
	if _, err := fc.c.Write(fc.req); err != nil {
		return fetched{}, err
	}
	var size [4]byte
	if _, err := io.ReadFull(fc.c, size[:]); err != nil {
		return fetched{}, err
	}
	n := int(int32(binary.BigEndian.Uint32(size[:])))
	if n < 4 || n > maxResponseBytes {
		return fetched{}, fmt.Errorf("fetch response of %d bytes", n)
	}
	if cap(*buf) < n {
		*buf = make([]byte, n, n+n/4)
	}
	b := (*buf)[:n]
	if _, err := io.ReadFull(fc.c, b); err != nil {
		return fetched{}, err
	}
	return parseFetchResponse(b, fc.corr, topic, int32(partition))
}

func appendFetchRequest(b []byte, corr int32, topic string, partition int32, offset int64, maxBytes int32, maxWait time.Duration) []byte {
	be := binary.BigEndian
	b = append(b, 0, 0, 0, 0) // size, set below
	b = be.AppendUint16(b, apiFetch)
	b = be.AppendUint16(b, fetchAPIVersion)
	b = be.AppendUint32(b, uint32(corr))
	b = appendString(b, fetchClientID)
	b = be.AppendUint32(b, 0xffffffff) // replica id -1: a consumer
	b = be.AppendUint32(b, uint32(maxWait.Milliseconds()))
	b = be.AppendUint32(b, 1) // min bytes
	b = be.AppendUint32(b, uint32(maxBytes))
	b = append(b, 0)          // isolation level: read uncommitted, as kafka-go's Reader
	b = be.AppendUint32(b, 1) // one topic
	b = appendString(b, topic)
	b = be.AppendUint32(b, 1) // one partition
	b = be.AppendUint32(b, uint32(partition))
	b = be.AppendUint64(b, uint64(offset))
	b = be.AppendUint32(b, uint32(maxBytes))
	be.PutUint32(b, uint32(len(b)-4))
	return b
}

func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

// wire reads big-endian protocol fields; a read past the end sets bad.
type wire struct {
	b   []byte
	bad bool
}

func (w *wire) take(n int) []byte {
	if n < 0 || n > len(w.b) {
		w.bad, w.b = true, nil
		return nil
	}
	v := w.b[:n:n]
	w.b = w.b[n:]
	return v
}

func (w *wire) int16() int16 {
	if b := w.take(2); b != nil {
		return int16(binary.BigEndian.Uint16(b))
	}
	return 0
}

func (w *wire) int32() int32 {
	if b := w.take(4); b != nil {
		return int32(binary.BigEndian.Uint32(b))
	}
	return 0
}

func (w *wire) int64() int64 {
	if b := w.take(8); b != nil {
		return int64(binary.BigEndian.Uint64(b))
	}
	return 0
}

func (w *wire) string() string { return string(w.take(int(w.int16()))) }

// parseFetchResponse reads a Fetch v4 response (after its size) for one
// topic and partition.
func parseFetchResponse(b []byte, corr int32, topic string, partition int32) (fetched, error) {
	w := &wire{b: b}
	if got := w.int32(); got != corr {
		return fetched{}, fmt.Errorf("fetch response for request %d, want %d", got, corr)
	}
	w.int32() // throttle time
	var f fetched
	found := false
	for range w.int32() {
		t := w.string()
		for range w.int32() {
			p := w.int32()
			errCode, hwm := w.int16(), w.int64()
			w.int64() // last stable offset
			if n := w.int32(); n > 0 {
				w.take(int(n) * 16) // aborted transactions: read uncommitted ignores them
			}
			var records []byte
			if n := w.int32(); n > 0 {
				records = w.take(int(n))
			}
			if w.bad {
				break
			}
			if t == topic && p == partition {
				f, found = fetched{errCode: errCode, hwm: hwm, records: records}, true
			}
		}
		if w.bad {
			break
		}
	}
	if w.bad {
		return fetched{}, errors.New("malformed fetch response")
	}
	if !found {
		return fetched{}, fmt.Errorf("fetch response without %s/%d", topic, partition)
	}
	return f, nil
}

// completeBatches returns the whole record batches at the start of b and
// the offset after the last of them (-1 when there is none).
func completeBatches(b []byte) ([]byte, int64) {
	next, n := int64(-1), 0
	for len(b)-n >= 12 {
		size := int(int32(binary.BigEndian.Uint32(b[n+8:])))
		if size < 0 || 12+size > len(b)-n {
			break
		}
		base := int64(binary.BigEndian.Uint64(b[n:]))
		if size >= batchHeaderLen-12 && b[n+16] == 2 {
			next = base + int64(int32(binary.BigEndian.Uint32(b[n+23:]))) + 1
		} else {
			next = base + 1 // an old-format message; eachRecord rejects it
		}
		n += 12 + size
	}
	return b[:n], next
}

// eachRecord calls fn with the value of every record in the v2 record
// batches b whose offset is in [from, to), skipping control batches. The
// value is a view of b (or of *scratch for a compressed batch), valid only
// during the call; a null value is passed as nil.
func eachRecord(b []byte, from, to int64, scratch *[]byte, fn func(value []byte)) error {
	be := binary.BigEndian
	for len(b) > 0 {
		if len(b) < batchHeaderLen {
			return errCorrupt
		}
		size := int(int32(be.Uint32(b[8:])))
		if size < batchHeaderLen-12 || 12+size > len(b) {
			return errCorrupt
		}
		batch := b[:12+size]
		b = b[12+size:]
		if magic := batch[16]; magic != 2 {
			return fmt.Errorf("record batch format v%d: only v2 (Kafka 0.11 and later) is read", magic)
		}
		base := int64(be.Uint64(batch))
		attrs := be.Uint16(batch[21:])
		last := base + int64(int32(be.Uint32(batch[23:])))
		if last < from || base >= to || attrs&0x20 != 0 { // outside, or a transaction marker
			continue
		}
		count := int(int32(be.Uint32(batch[57:])))
		recs := batch[batchHeaderLen:]
		if codec := compress.Compression(attrs & 7); codec != compress.None {
			var err error
			if recs, err = decompress(codec, recs, scratch); err != nil {
				return err
			}
		}
		for range count {
			l, ok := varint(&recs)
			if !ok || l < 0 || l > int64(len(recs)) {
				return errCorrupt
			}
			rec := recs[:l]
			recs = recs[l:]
			if len(rec) == 0 {
				return errCorrupt
			}
			rec = rec[1:]          // attributes
			_, ok1 := varint(&rec) // timestamp delta
			delta, ok2 := varint(&rec)
			kl, ok3 := varint(&rec)
			if !ok1 || !ok2 || !ok3 || kl > int64(len(rec)) {
				return errCorrupt
			}
			if kl > 0 {
				rec = rec[kl:]
			}
			vl, ok := varint(&rec)
			if !ok || vl > int64(len(rec)) {
				return errCorrupt
			}
			if off := base + delta; off < from || off >= to {
				continue
			}
			if vl < 0 {
				fn(nil)
			} else {
				fn(rec[:vl])
			}
		}
	}
	return nil
}

// varint reads a zigzag varint (Kafka's record fields) off the front of *b.
func varint(b *[]byte) (int64, bool) {
	if len(*b) > 0 && (*b)[0] < 0x80 { // one byte: the common case
		u := uint64((*b)[0])
		*b = (*b)[1:]
		return int64(u>>1) ^ -int64(u&1), true
	}
	v, n := binary.Varint(*b)
	if n <= 0 {
		return 0, false
	}
	*b = (*b)[n:]
	return v, true
}

func decompress(codec compress.Compression, b []byte, scratch *[]byte) ([]byte, error) {
	c := codec.Codec()
	if c == nil {
		return nil, fmt.Errorf("record batch compression %d unknown", codec)
	}
	r := c.NewReader(bytes.NewReader(b))
	out := bytes.NewBuffer((*scratch)[:0])
	_, err := out.ReadFrom(r)
	r.Close()
	if err != nil {
		return nil, fmt.Errorf("%s record batch: %w", codec, err)
	}
	*scratch = out.Bytes()
	return *scratch, nil
}

// fetchConns are one goroutine's connections, one per broker; closing
// them (when the run's context ends) unblocks a fetch in flight.
type fetchConns struct {
	dialer net.Dialer
	mu     sync.Mutex
	conns  map[string]*fetchConn
	closed bool
}

func (cs *fetchConns) get(ctx context.Context, leader kafka.Broker) (*fetchConn, error) {
	addr := net.JoinHostPort(leader.Host, strconv.Itoa(leader.Port))
	cs.mu.Lock()
	fc := cs.conns[addr]
	cs.mu.Unlock()
	if fc != nil {
		return fc, nil
	}
	c, err := cs.dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.closed {
		c.Close()
		return nil, net.ErrClosed
	}
	if cs.conns == nil {
		cs.conns = map[string]*fetchConn{}
	}
	fc = &fetchConn{c: c}
	cs.conns[addr] = fc
	return fc, nil
}

// drop closes and forgets a connection after an error left it unusable.
func (cs *fetchConns) drop(fc *fetchConn) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for a, c := range cs.conns {
		if c == fc {
			delete(cs.conns, a)
		}
	}
	fc.c.Close()
}

func (cs *fetchConns) close() {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	cs.closed = true
	for _, c := range cs.conns {
		c.c.Close()
	}
}
