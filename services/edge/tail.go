package edge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/segmentio/kafka-go"

	"github.com/chatsys/chat/pkg/kafkaio"
)

// tailWait is how long the broker holds a fetch open for new records.
const tailWait = 2 * time.Second

// tailPartition reads one partition from offset until ctx ends, calling fn
// with each fetched batch of records, in log order. It works on the fetch
// batches themselves (kafka-go's Conn.ReadBatch), not one message at a
// time: the caller fans a batch out and then wakes each recipient once, so
// a connection that gets several events from one fetch writes them with one
// system call. A broken connection (the broker restarting) is redialled with
// backoff, resuming after the last record handed to fn.
func tailPartition(ctx context.Context, k kafkaio.Config, topic string, partition int, offset int64, log *slog.Logger, m *metrics, fn func([]kafka.Message)) error {
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval, bo.MaxInterval = 50*time.Millisecond, 2*time.Second
	var msgs []kafka.Message
	for ctx.Err() == nil {
		next, err := tailConn(ctx, k, topic, partition, offset, &msgs, fn, bo.Reset)
		offset = next
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, kafka.OffsetOutOfRange) {
			// Retention removed what this tail had not read yet (it was
			// behind, or the broker away, longer than the retention):
			// go on from the oldest record still held.
			if first, _, oerr := k.Offsets(ctx, topic, partition); oerr == nil {
				log.Warn("log tail fell behind the retention; skipping ahead", "topic", topic, "partition", partition, "from", offset, "to", first)
				if first > offset {
					m.tailSkipped.WithLabelValues(topic).Add(float64(first - offset))
				}
				offset = first
				continue
			}
		}
		wait := bo.NextBackOff()
		m.tailInterrupts.WithLabelValues(topic).Inc()
		log.Debug("log tail interrupted; reconnecting", "topic", topic, "partition", partition, "offset", offset, "retry_in", wait, "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
	}
	return nil
}

// tailConn reads on one connection until it fails, returning the next offset
// to read.
func tailConn(ctx context.Context, k kafkaio.Config, topic string, partition int, offset int64, msgs *[]kafka.Message, fn func([]kafka.Message), healthy func()) (int64, error) {
	var conn *kafka.Conn
	var err error
	for _, b := range k.BrokerList() {
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		conn, err = kafka.DialLeader(dctx, "tcp", b, topic, partition)
		cancel()
		if err == nil {
			break
		}
	}
	if err != nil {
		return offset, err
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer func() {
		stop()
		conn.Close()
	}()
	if _, err := conn.Seek(offset, kafka.SeekAbsolute|kafka.SeekDontCheck); err != nil {
		return offset, err
	}
	for {
		conn.SetReadDeadline(time.Now().Add(tailWait + 10*time.Second))
		batch := conn.ReadBatchWith(kafka.ReadBatchConfig{MinBytes: 1, MaxBytes: 8 << 20, MaxWait: tailWait})
		*msgs = (*msgs)[:0]
		var rerr error
		for {
			m, err := batch.ReadMessage()
			if err != nil {
				rerr = err
				break
			}
			*msgs = append(*msgs, m)
		}
		cerr := batch.Close()
		if errors.Is(cerr, kafka.RequestTimedOut) || errors.Is(rerr, kafka.RequestTimedOut) {
			// The fetch's MaxWait passed with nothing new: not an error.
			cerr, rerr = nil, io.EOF
		}
		if n := len(*msgs); n > 0 {
			fn(*msgs)
			offset = (*msgs)[n-1].Offset + 1
			clear(*msgs) // drop references to the records' bytes
		}
		if cerr != nil {
			return offset, cerr
		}
		if rerr != nil && !errors.Is(rerr, io.EOF) {
			return offset, fmt.Errorf("read %s/%d: %w", topic, partition, rerr)
		}
		healthy()
	}
}
