package analytics

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
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
				for len(buf) < chunkSize {
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
					if err := parseEvent(line, &e); err != nil {
						bad++
						continue
					}
					w.add(&e)
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
	topic      string
	partition  int
	start, end int64 // [start, end)
}

// readLog reads every partition of the topics from the offset of the
// range's first timestamp (less slack, since producers stamp records a
// little after the event) to the end the partition had when the run began.
func readLog(ctx context.Context, k kafkaio.Config, topics []string, rng Range, ws []*worker, p *progress, expect func(records int64)) error {
	cl := k.Client()
	var parts []partitionRange
	for _, topic := range topics {
		md, err := cl.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
		if err != nil {
			return fmt.Errorf("metadata: %w", err)
		}
		for _, t := range md.Topics {
			if t.Error != nil {
				continue // a topic that does not exist yet has nothing to read
			}
			for _, pt := range t.Partitions {
				parts = append(parts, partitionRange{topic: topic, partition: pt.ID})
			}
		}
	}
	from := rng.Start().Add(-5 * time.Minute)
	for i := range parts {
		pr := &parts[i]
		req := map[string][]kafka.OffsetRequest{pr.topic: {kafka.FirstOffsetOf(pr.partition), kafka.LastOffsetOf(pr.partition), kafka.TimeOffsetOf(pr.partition, from)}}
		res, err := cl.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: req})
		if err != nil {
			return fmt.Errorf("list offsets: %w", err)
		}
		for _, po := range res.Topics[pr.topic] {
			if po.Partition != pr.partition {
				continue
			}
			if po.Error != nil {
				return fmt.Errorf("list offsets %s/%d: %w", pr.topic, pr.partition, po.Error)
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
	queue := make(chan partitionRange, len(parts))
	var total int64
	for _, pr := range parts {
		if pr.start < pr.end {
			queue <- pr
			total += pr.end - pr.start
		}
	}
	expect(total)
	close(queue)
	g, ctx := errgroup.WithContext(ctx)
	for _, w := range ws {
		g.Go(func() error {
			var e Event
			for pr := range queue {
				r := kafka.NewReader(kafka.ReaderConfig{Brokers: k.BrokerList(), Topic: pr.topic, Partition: pr.partition,
					MinBytes: 1, MaxBytes: 16 << 20, MaxWait: 200 * time.Millisecond, ReadLagInterval: -1, QueueCapacity: 1000})
				if err := r.SetOffset(pr.start); err != nil {
					r.Close()
					return err
				}
				for {
					m, err := r.ReadMessage(ctx)
					if err != nil {
						r.Close()
						return fmt.Errorf("read %s/%d: %w", pr.topic, pr.partition, err)
					}
					p.records.Add(1)
					if err := parseEvent(m.Value, &e); err != nil {
						p.bad.Add(1)
					} else {
						w.add(&e)
					}
					if m.Offset >= pr.end-1 {
						break
					}
				}
				r.Close()
			}
			return nil
		})
	}
	return g.Wait()
}
