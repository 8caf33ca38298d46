package analytics

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"

	"github.com/segmentio/kafka-go/compress"
)

// testBatch encodes a v2 record batch at base: one record per value (nil:
// a null value), each with a key and a header; attrs as given (codec in
// the low bits, 0x20 for a control batch).
func testBatch(t testing.TB, base int64, attrs uint16, values ...[]byte) []byte {
	var recs []byte
	for i, v := range values {
		var r []byte
		r = append(r, 0)                     // attributes
		r = binary.AppendVarint(r, int64(i)) // timestamp delta
		r = binary.AppendVarint(r, int64(i)) // offset delta
		r = binary.AppendVarint(r, 3)        // key length
		r = append(r, "key"...)              // key
		if v == nil {
			r = binary.AppendVarint(r, -1)
		} else {
			r = binary.AppendVarint(r, int64(len(v)))
			r = append(r, v...)
		}
		r = binary.AppendVarint(r, 1) // one header
		r = binary.AppendVarint(r, 1)
		r = append(r, 'h')
		r = binary.AppendVarint(r, -1) // null header value
		recs = binary.AppendVarint(recs, int64(len(r)))
		recs = append(recs, r...)
	}
	if codec := compress.Compression(attrs & 7); codec != compress.None {
		var buf bytes.Buffer
		w := codec.Codec().NewWriter(&buf)
		if _, err := w.Write(recs); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		recs = buf.Bytes()
	}
	be := binary.BigEndian
	b := be.AppendUint64(nil, uint64(base))
	b = be.AppendUint32(b, uint32(batchHeaderLen-12+len(recs)))
	b = be.AppendUint32(b, 0) // leader epoch
	b = append(b, 2)          // magic
	b = be.AppendUint32(b, 0) // CRC, not checked
	b = be.AppendUint16(b, attrs)
	b = be.AppendUint32(b, uint32(len(values)-1))
	b = be.AppendUint64(b, 0)
	b = be.AppendUint64(b, 0)
	b = be.AppendUint64(b, ^uint64(0)) // producer id -1
	b = be.AppendUint16(b, 0xffff)
	b = be.AppendUint32(b, 0xffffffff)
	b = be.AppendUint32(b, uint32(len(values)))
	return append(b, recs...)
}

func readAll(t *testing.T, b []byte, from, to int64) string {
	t.Helper()
	var got []string
	var scratch []byte
	if err := eachRecord(b, from, to, &scratch, func(v []byte) {
		if v == nil {
			got = append(got, "<nil>")
		} else {
			got = append(got, string(v))
		}
	}); err != nil {
		t.Fatal(err)
	}
	return strings.Join(got, " ")
}

func TestEachRecord(t *testing.T) {
	var log []byte
	log = append(log, testBatch(t, 100, 0, []byte("a"), []byte("b"), nil, []byte(""), []byte("e"))...)
	log = append(log, testBatch(t, 105, 0x20, []byte("marker"))...) // a control batch
	log = append(log, testBatch(t, 106, uint16(compress.Zstd), []byte("g"), []byte(strings.Repeat("h", 300)))...)
	log = append(log, testBatch(t, 108, uint16(compress.Gzip), []byte("i"))...)
	if got, want := readAll(t, log, 0, 1000), "a b <nil>  e g "+strings.Repeat("h", 300)+" i"; got != want {
		t.Fatalf("all records: %q, want %q", got, want)
	}
	if got := readAll(t, log, 101, 107); got != "b <nil>  e g" {
		t.Fatalf("offsets [101, 107): %q", got)
	}
	// A response cut inside its last batch.
	whole, next := completeBatches(log[:len(log)-3])
	if next != 108 || len(whole) != len(log)-len(testBatch(t, 108, uint16(compress.Gzip), []byte("i"))) {
		t.Fatalf("completeBatches of a cut response: %d bytes, next %d; want the first three batches, next 108", len(whole), next)
	}
	if _, next := completeBatches(log[:30]); next != -1 {
		t.Fatalf("completeBatches of a cut first batch: next %d, want -1", next)
	}
	// Damage is an error, never a panic.
	for i := 0; i < len(log); i++ {
		var scratch []byte
		eachRecord(log[:i], 0, 1000, &scratch, func([]byte) {})
		bad := bytes.Clone(log)
		bad[i] ^= 0xff
		eachRecord(bad, 0, 1000, &scratch, func([]byte) {})
	}
}

func TestParseFetchResponse(t *testing.T) {
	batch := testBatch(t, 7, 0, []byte("x"))
	be := binary.BigEndian
	b := be.AppendUint32(nil, 42) // correlation id
	b = be.AppendUint32(b, 0)     // throttle
	b = be.AppendUint32(b, 1)     // topics
	b = appendString(b, "rooms")
	b = be.AppendUint32(b, 2) // partitions: another one first
	for _, p := range []int32{3, 5} {
		b = be.AppendUint32(b, uint32(p))
		b = be.AppendUint16(b, 0)
		b = be.AppendUint64(b, 8)          // high watermark
		b = be.AppendUint64(b, 8)          // last stable offset
		b = be.AppendUint32(b, 1)          // one aborted transaction
		b = append(b, make([]byte, 16)...) // producer id, first offset
		b = be.AppendUint32(b, uint32(len(batch)))
		b = append(b, batch...)
	}
	f, err := parseFetchResponse(b, 42, "rooms", 5)
	if err != nil || f.errCode != 0 || f.hwm != 8 || !bytes.Equal(f.records, batch) {
		t.Fatalf("parseFetchResponse = %+v, %v", f, err)
	}
	if _, err := parseFetchResponse(b, 41, "rooms", 5); err == nil {
		t.Fatal("a response to another request: no error")
	}
	if _, err := parseFetchResponse(b, 42, "rooms", 4); err == nil {
		t.Fatal("a response without the partition: no error")
	}
	for i := range b {
		parseFetchResponse(b[:i], 42, "rooms", 5) // must not panic
	}
}

// FuzzEachRecord feeds damaged batches and responses to the parsers: errors
// are fine, panics are not.
func FuzzEachRecord(f *testing.F) {
	f.Add(testBatch(f, 0, 0, []byte(`{"id":"1"}`), nil))
	f.Add(testBatch(f, 5, uint16(compress.Snappy), []byte("abc"), []byte("de")))
	f.Fuzz(func(t *testing.T, b []byte) {
		var scratch []byte
		whole, _ := completeBatches(b)
		eachRecord(whole, 0, 1<<62, &scratch, func([]byte) {})
		eachRecord(b, 0, 1<<62, &scratch, func([]byte) {})
		parseFetchResponse(b, 1, "t", 0)
	})
}
