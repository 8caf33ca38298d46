package analytics

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
	"golang.org/x/sync/errgroup"

	"github.com/chatsys/chat/pkg/kafkaio"
)

// progress counts records read, for the progress line.
type progress struct {
	records atomic.Int64
	bad     atomic.Int64
}

// chunkSize is how much of a JSON-lines input one worker parses at a time.
const chunkSize = 256 << 10

// readJSONLines reads archived logs: a file, a directory of *.jsonl files,
// or "-" for stdin. One goroutine cuts the input into chunks of whole lines;
// workers parse chunks in parallel.
func readJSONLines(ctx context.Context, path string, stdin io.Reader, ws []*worker, p *progress) error {
	var files []string
	switch st, err := os.Stat(path); {
	case path == "-":
	case err != nil:
		return fmt.Errorf("analytics.input: %w", err)
	case st.IsDir():
		files, _ = filepath.Glob(filepath.Join(path, "*.jsonl"))
		sort.Strings(files)
		if len(files) == 0 {
			return fmt.Errorf("analytics.input: no *.jsonl files in %s", path)
		}
	default:
		files = []string{path}
	}
	chunks := make(chan []byte, 2*len(ws))
	pool := sync.Pool{New: func() any { b := make([]byte, 0, chunkSize+4096); return &b }}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(chunks)
		emit := func(r io.Reader) error {
			br := bufio.NewReaderSize(r, 1<<20)
			for {
				buf := (*pool.Get().(*[]byte))[:0]
				// A chunk ends at a line's end: a line longer than the
				// reader's buffer is appended in pieces until its '\n'.
				for len(buf) < chunkSize || buf[len(buf)-1] != '\n' {
					line, err := br.ReadSlice('\n')
					buf = append(buf, line...)
					if errors.Is(err, bufio.ErrBufferFull) {
						continue // a line longer than the buffer: keep appending
					}
					if err == io.EOF {
						if len(buf) > 0 {
							if len(buf) > 0 && buf[len(buf)-1] != '\n' {
								buf = append(buf, '\n')
							}
							select {
							case chunks <- buf:
							case <-ctx.Done():
								return ctx.Err()
							}
						}
						return nil
					}
					if err != nil {
						return err
					}
				}
				select {
				case chunks <- buf:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
		}
		if path == "-" {
			return emit(stdin)
		}
		for _, f := range files {
			fh, err := os.Open(f)
			if err != nil {
				return err
			}
			err = emit(fh)
			fh.Close()
			if err != nil {
				return fmt.Errorf("%s: %w", f, err)
			}
		}
		return nil
	})
	for _, w := range ws {
		g.Go(func() error {
			var e Event
			for chunk := range chunks {
				rest := chunk
				var n, bad int64
				for len(rest) > 0 {
					i := bytes.IndexByte(rest, '\n')
					line := rest[:i]
					rest = rest[i+1:]
					if len(bytes.TrimSpace(line)) == 0 {
						continue
					}
					n++
					if parseEvent(line, &e) != nil || !w.add(&e) {
						bad++
					}
				}
				p.records.Add(n)
				p.bad.Add(bad)
				chunk = chunk[:0]
				pool.Put(&chunk)
			}
			return nil
		})
	}
	return g.Wait()
}

// partitionRange is the part of one partition to read.
type partitionRange struct {
	part       kafka.Partition // topic, id and leader
	start, end int64           // [start, end)
}

const (
	// logFetchWait is how long the broker may hold a fetch; the ranges end
	// at offsets that exist, so it only matters when the log is truncated.
	logFetchWait = 500 * time.Millisecond
	// logFetchTimeout bounds one fetch round trip.
	logFetchTimeout = 30 * time.Second
)

// Variables so that tests can make them small.
var (
	// logFetchBytes is the most one fetch asks for. The broker builds a
	// whole response before it sends it: a modest size lets the workers
	// parse one response while the broker prepares the next.
	logFetchBytes int32 = 2 << 20
	// minChunk is the fewest offsets a fetcher takes at a time: a large
	// partition is cut into chunks of at least this many offsets so that
	// several fetchers share it.
	minChunk int64 = 20_000
)

// logChunk is one fetch response's record batches, for a worker to parse.
type logChunk struct {
	buf      *[]byte // the pooled response buffer records is a view of
	records  []byte
	from, to int64 // the offsets to count
	where    string
}

// readLog reads every partition of the topics from the offset of the
// range's first timestamp (less slack, since producers stamp records a
// little after the event) to the end the partition had when the run began.
// Partitions are cut into chunks of offsets; fetchers (twice as many as
// workers) each fetch a chunk's records with requests of up to
// logFetchBytes and pass the responses as they are to the workers, which
// parse the records in place, as they parse chunks of JSON lines.
func readLog(ctx context.Context, k kafkaio.Config, topics []string, rng Range, ws []*worker, p *progress, expect func(records int64)) error {
	from := rng.Start().Add(-5 * time.Minute)
	if from.Before(time.UnixMilli(0)) {
		from = time.Time{} // before any record timestamp: read from the first record
	}
	parts, err := logRanges(ctx, k, topics, from)
	if err != nil {
		return err
	}
	var total int64
	for _, pr := range parts {
		total += pr.end - pr.start
	}
	expect(total)
	nf := 2 * len(ws)
	chunks := splitRanges(parts, max(total/int64(4*nf), minChunk))
	queue := make(chan partitionRange, len(chunks))
	for _, c := range chunks {
		queue <- c
	}
	close(queue)
	nf = min(nf, len(chunks))
	pool := sync.Pool{New: func() any { b := make([]byte, 0, logFetchBytes+64<<10); return &b }}
	fetchedCh := make(chan logChunk, len(ws))
	g, ctx := errgroup.WithContext(ctx)
	var fetchers sync.WaitGroup
	for range nf {
		fetchers.Add(1)
		g.Go(func() error {
			defer fetchers.Done()
			var cs fetchConns
			cs.dialer.Timeout = 10 * time.Second
			stop := context.AfterFunc(ctx, cs.close)
			defer func() { stop(); cs.close() }()
			for pr := range queue {
				if err := fetchRange(ctx, &cs, pr, &pool, fetchedCh); err != nil {
					if ctx.Err() != nil {
						return ctx.Err()
					}
					return err
				}
			}
			return nil
		})
	}
	go func() { fetchers.Wait(); close(fetchedCh) }()
	for _, w := range ws {
		g.Go(func() error {
			var e Event
			var scratch []byte
			for c := range fetchedCh {
				var n, bad int64
				err := eachRecord(c.records, c.from, c.to, &scratch, func(v []byte) {
					n++
					if parseEvent(v, &e) != nil || !w.add(&e) {
						bad++
					}
				})
				pool.Put(c.buf)
				p.records.Add(n)
				p.bad.Add(bad)
				if err != nil {
					// The group's context ends: the fetchers stop
					// rather than wait for this worker.
					return fmt.Errorf("%s: %w", c.where, err)
				}
			}
			return nil
		})
	}
	return g.Wait()
}

// fetchRange fetches the records of pr and sends them to out, a response
// at a time.
func fetchRange(ctx context.Context, cs *fetchConns, pr partitionRange, pool *sync.Pool, out chan<- logChunk) error {
	where := fmt.Sprintf("read %s/%d", pr.part.Topic, pr.part.ID)
	off, stalls := pr.start, 0
	for off < pr.end {
		fc, err := cs.get(ctx, pr.part.Leader)
		if err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
		buf := pool.Get().(*[]byte)
		fc.c.SetDeadline(time.Now().Add(logFetchTimeout))
		f, err := fc.fetch(pr.part.Topic, pr.part.ID, off, logFetchBytes, logFetchWait, buf)
		if err != nil {
			pool.Put(buf)
			cs.drop(fc)
			return fmt.Errorf("%s at offset %d: %w", where, off, err)
		}
		if f.errCode != 0 {
			pool.Put(buf)
			return fmt.Errorf("%s at offset %d: %w", where, off, kafka.Error(f.errCode))
		}
		records, next := completeBatches(f.records)
		if next <= off {
			// Nothing at or after off: the log was truncated below the
			// end the run started with, or compacted.
			pool.Put(buf)
			if f.hwm <= off {
				return nil
			}
			if stalls++; stalls == 3 {
				return fmt.Errorf("%s: no records at offset %d below the high watermark %d", where, off, f.hwm)
			}
			continue
		}
		stalls = 0
		select {
		case out <- logChunk{buf: buf, records: records, from: off, to: pr.end, where: where}:
		case <-ctx.Done():
			pool.Put(buf)
			return ctx.Err()
		}
		off = next
	}
	return nil
}

// logRanges finds the partitions of the topics and, for each, the offsets
// from the first record stamped at or after from (the first record when
// from is zero) to the end.
func logRanges(ctx context.Context, k kafkaio.Config, topics []string, from time.Time) ([]partitionRange, error) {
	cl := k.Client()
	var parts []partitionRange
	for _, topic := range topics {
		md, err := cl.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
		if err != nil {
			return nil, fmt.Errorf("metadata: %w", err)
		}
		for _, t := range md.Topics {
			if t.Error != nil {
				continue // a topic that does not exist yet has nothing to read
			}
			for _, pt := range t.Partitions {
				parts = append(parts, partitionRange{part: pt})
			}
		}
	}
	for i := range parts {
		pr := &parts[i]
		topic, id := pr.part.Topic, pr.part.ID
		offs := []kafka.OffsetRequest{kafka.FirstOffsetOf(id), kafka.LastOffsetOf(id)}
		if !from.IsZero() {
			offs = append(offs, kafka.TimeOffsetOf(id, from))
		}
		req := map[string][]kafka.OffsetRequest{topic: offs}
		res, err := cl.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: req})
		if err != nil {
			return nil, fmt.Errorf("list offsets: %w", err)
		}
		for _, po := range res.Topics[topic] {
			if po.Partition != id {
				continue
			}
			if po.Error != nil {
				return nil, fmt.Errorf("list offsets %s/%d: %w", topic, id, po.Error)
			}
			pr.start, pr.end = po.FirstOffset, po.LastOffset
			for off := range po.Offsets { // the time lookup: -1 when every record is older
				if off >= 0 && off > pr.start {
					pr.start = off
				} else if off < 0 {
					pr.start = pr.end
				}
			}
		}
	}
	return parts, nil
}

// splitRanges cuts the non-empty ranges into chunks of at most size
// offsets, the largest ranges' chunks first so that the long tail of a big
// partition does not start last.
func splitRanges(parts []partitionRange, size int64) []partitionRange {
	sorted := slices.Clone(parts)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].end-sorted[i].start > sorted[j].end-sorted[j].start })
	var out []partitionRange
	for _, pr := range sorted {
		for s := pr.start; s < pr.end; s += size {
			c := pr
			c.start, c.end = s, min(s+size, pr.end)
			out = append(out, c)
		}
	}
	return out
}

// probeLogDates returns the dates of the messages in the first and the last
// record batches of every partition of the topics: where the log starts
// and ends, for a run whose range matched nothing.
func probeLogDates(ctx context.Context, k kafkaio.Config, topics []string) ([]string, error) {
	parts, err := logRanges(ctx, k, topics, time.Time{})
	if err != nil {
		return nil, err
	}
	var cs fetchConns
	cs.dialer.Timeout = 10 * time.Second
	stop := context.AfterFunc(ctx, cs.close)
	defer func() { stop(); cs.close() }()
	dates := map[string]struct{}{}
	var e Event
	var buf, scratch []byte
	for _, pr := range parts {
		if pr.start >= pr.end {
			continue
		}
		for _, off := range []int64{pr.start, pr.end - 1} {
			fc, err := cs.get(ctx, pr.part.Leader)
			if err != nil {
				return nil, err
			}
			fc.c.SetDeadline(time.Now().Add(logFetchTimeout))
			f, err := fc.fetch(pr.part.Topic, pr.part.ID, off, 64<<10, logFetchWait, &buf)
			if err != nil {
				cs.drop(fc)
				return nil, err
			}
			if f.errCode != 0 {
				return nil, kafka.Error(f.errCode)
			}
			records, _ := completeBatches(f.records)
			err = eachRecord(records, pr.start, pr.end, &scratch, func(v []byte) {
				if parseEvent(v, &e) != nil || e.Type != "chat" && e.Type != "private" {
					return
				}
				if d, ok := dateOf(e.Timestamp); ok {
					dates[strings.Clone(d)] = struct{}{}
				}
			})
			if err != nil {
				return nil, err
			}
		}
	}
	return slices.Sorted(maps.Keys(dates)), nil
}
