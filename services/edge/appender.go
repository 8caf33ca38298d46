package edge

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/chatsys/chat/pkg/chatevent"
	"github.com/chatsys/chat/pkg/kafkaio"
)

// appender writes records durably to one topic, batching by partition the
// way a group commit does: each partition has at most one produce request
// in flight, and every record that arrives meanwhile goes into the next
// one. A lone record is sent at once (no batching window to wait out);
// under load, batches grow with the load. Records of one partition are
// written, and acknowledged, in the order they were appended.
//
// kafka-go's Writer cuts batches by a timer and keeps one batch in flight
// per partition, so under load every batch holds only what arrived within
// the timer's window: throughput per partition is capped at roughly one
// window's worth of records per round trip. The appender sends what
// accumulated during the whole round trip instead.
type appender struct {
	client  *kafka.Client
	topic   string
	timeout time.Duration // one produce attempt
	acks    kafka.RequiredAcks
	parts   []*partAppender
}

// maxBatchRecords and maxBatchBytes bound one produce request.
const (
	maxBatchRecords = 4096
	maxBatchBytes   = 4 << 20
	appendAttempts  = 3
)

// appendReq is one record waiting for its produce request.
type appendReq struct {
	key, value []byte
	headers    []kafka.Header
	at         time.Time
	size       int
	done       func(offset int64, err error)
}

type partAppender struct {
	a         *appender
	partition int
	mu        sync.Mutex
	queue     []appendReq
	bytes     int
	busy      bool // a goroutine is producing this partition's queue
	closed    bool
}

var errAppenderClosed = errors.New("appender closed")

func newAppender(k kafkaio.Config, topic string, partitions int) *appender {
	a := &appender{client: k.Client(), topic: topic, timeout: k.WriteTimeout, acks: kafka.RequireAll}
	a.client.Timeout = k.WriteTimeout
	for p := 0; p < partitions; p++ {
		a.parts = append(a.parts, &partAppender{a: a, partition: p})
	}
	return a
}

// append queues a record for the partition of key. done is called exactly
// once, from a producing goroutine, with the record's offset after the
// broker acknowledged it (all in-sync replicas), or with the error after
// the last attempt; it must not block.
func (a *appender) append(key, value []byte, headers []kafka.Header, done func(offset int64, err error)) {
	pa := a.parts[kafkaio.PartitionFor(string(key), len(a.parts))]
	pa.mu.Lock()
	if pa.closed {
		pa.mu.Unlock()
		done(-1, errAppenderClosed)
		return
	}
	pa.queue = append(pa.queue, appendReq{key: key, value: value, headers: headers, at: time.Now(), size: len(key) + len(value) + 64, done: done})
	pa.bytes += len(key) + len(value) + 64
	if !pa.busy {
		pa.busy = true
		go pa.run()
	}
	pa.mu.Unlock()
}

// run produces the queue, a batch at a time, until it is empty.
func (pa *partAppender) run() {
	var batch []appendReq
	for {
		pa.mu.Lock()
		if len(pa.queue) == 0 {
			pa.busy = false
			pa.mu.Unlock()
			return
		}
		n, size := 0, 0
		for n < len(pa.queue) && n < maxBatchRecords && (n == 0 || size+pa.queue[n].size <= maxBatchBytes) {
			size += pa.queue[n].size
			n++
		}
		batch = append(batch[:0], pa.queue[:n]...)
		rest := copy(pa.queue, pa.queue[n:])
		clear(pa.queue[rest:])
		pa.queue = pa.queue[:rest]
		pa.bytes -= size
		pa.mu.Unlock()

		base, err := pa.produce(batch)
		for i := range batch {
			if err != nil {
				batch[i].done(-1, err)
			} else {
				batch[i].done(base+int64(i), nil)
			}
		}
		clear(batch)
	}
}

// produce sends one batch, retrying a failed attempt with backoff, and
// returns the offset of its first record.
func (pa *partAppender) produce(batch []appendReq) (int64, error) {
	a := pa.a
	recs := make([]kafka.Record, len(batch))
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval, bo.MaxInterval = 100*time.Millisecond, time.Second
	base, err := backoff.Retry(context.Background(), func() (int64, error) {
		for i := range batch { // fresh readers: an attempt consumes them
			r := &batch[i]
			recs[i] = kafka.Record{Time: r.at, Key: kafka.NewBytes(r.key), Value: kafka.NewBytes(r.value), Headers: r.headers}
		}
		ctx, cancel := context.WithTimeout(context.Background(), a.timeout)
		defer cancel()
		res, err := a.client.Produce(ctx, &kafka.ProduceRequest{
			Topic: a.topic, Partition: pa.partition, RequiredAcks: a.acks,
			Records: kafka.NewRecordReader(recs...),
		})
		if err == nil && res.Error != nil {
			err = res.Error
		}
		if err != nil {
			return -1, err
		}
		return res.BaseOffset, nil
	}, backoff.WithBackOff(bo), backoff.WithMaxTries(appendAttempts), backoff.WithMaxElapsedTime(0))
	if err != nil {
		return -1, fmt.Errorf("produce to %s/%d (%d attempts): %w", a.topic, pa.partition, appendAttempts, err)
	}
	return base, nil
}

// close fails what is queued from now on; batches in flight complete.
func (a *appender) close() {
	for _, pa := range a.parts {
		pa.mu.Lock()
		pa.closed = true
		pa.mu.Unlock()
	}
}

// pendingAppend travels with a record through the appender to its
// completion.
type pendingAppend struct {
	t0    time.Time
	span  trace.Span
	typ   string
	id    string
	topic string
	done  func(error)
}

// appendAsync queues ev for a durable write to the rooms topic (or, for a
// private message, the direct topic). done is called exactly once, from the
// appender's goroutine, after the broker acknowledged the write (all
// in-sync replicas) or the write failed; it must not block. Appends of one
// partition are written and completed in the order they were queued.
func (e *Edge) appendAsync(ctx context.Context, ev *chatevent.Event, done func(error)) {
	ap, topic, key := e.writer, e.cfg.Kafka.RoomsTopic, chatevent.RoomKey(ev.Room)
	switch {
	case ev.Type == chatevent.TypeRead && ev.Room != "":
		ap, topic, key = e.direct, e.cfg.Kafka.DirectTopic, chatevent.ReadKey(ev.Username)
	case ev.Target != "":
		ap, topic, key = e.direct, e.cfg.Kafka.DirectTopic, chatevent.DMKey(ev.Username, ev.Target)
	}
	ctx, span := tracer.Start(ctx, "publish "+topic, trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(attribute.String("messaging.system", "kafka"), attribute.String("chat.event_id", ev.ID)))
	p := &pendingAppend{t0: time.Now(), span: span, typ: ev.Type, id: ev.ID, topic: topic, done: done}
	value, err := ev.Encode()
	if err != nil {
		e.completeOne(p, err)
		return
	}
	headers := []kafka.Header{{Key: chatevent.HeaderSchema, Value: schemaHeader}}
	otel.GetTextMapPropagator().Inject(ctx, kafkaio.HeaderCarrier{Headers: &headers})
	ap.append([]byte(key), value, headers, func(_ int64, err error) { e.completeOne(p, err) })
}

var schemaHeader = []byte(strconv.Itoa(chatevent.SchemaVersion))

func (e *Edge) completeOne(p *pendingAppend, err error) {
	if err != nil {
		p.span.SetStatus(codes.Error, err.Error())
		e.m.appendSeconds.WithLabelValues("error").Observe(time.Since(p.t0).Seconds())
		// Logged with the publish span's context: trace_id and span_id
		// join the line to the message's trace.
		e.log.WarnContext(trace.ContextWithSpan(context.Background(), p.span), "append failed",
			"type", p.typ, "event_id", p.id, "topic", p.topic, "err", err)
	} else {
		e.m.appendSeconds.WithLabelValues("ok").Observe(time.Since(p.t0).Seconds())
	}
	p.span.End()
	p.done(err)
}

// append writes ev durably and waits for the outcome.
func (e *Edge) append(ctx context.Context, ev *chatevent.Event) error {
	res := make(chan error, 1)
	e.appendAsync(ctx, ev, func(err error) { res <- err })
	select {
	case err := <-res:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}
