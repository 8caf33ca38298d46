package edge

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"

	"github.com/chatsys/chat/pkg/chatevent"
	"github.com/chatsys/chat/pkg/kafkaio"
)

// delivery is one event ready for fan-out: decoded, positioned, and encoded
// once as the frame every recipient gets.
type delivery struct {
	ev    chatevent.Event
	pos   chatevent.Pos
	frame []byte
}

// source is where an edge's room events come from. Today it tails every
// partition of chat.rooms; at larger scale it becomes this edge's partition
// of chat.deliveries. Connection code sees only this interface.
type source interface {
	// Run calls deliver with every new event, in log order per partition,
	// a fetched batch at a time, until ctx ends. deliver must not block.
	Run(ctx context.Context, deliver func([]*delivery)) error
	// Resume reports whether the log still holds every event of room after
	// pos. If it does, end is the position to replay up to (exclusive).
	Resume(ctx context.Context, room string, after chatevent.Pos) (end chatevent.Pos, ok bool, err error)
	// Replay calls fn, in order, for the events of room strictly between
	// after and end.
	Replay(ctx context.Context, room string, after, end chatevent.Pos, fn func(*delivery) error) error
}

// logSource tails every partition of chat.rooms from the end.
type logSource struct {
	kafka      kafkaio.Config
	topic      string
	partitions int
	start      []int64 // per partition: first offset to tail, fixed at Start
	maxReplay  int64
	log        *slog.Logger
	m          *metrics
	// serves reports whether a record key (a room, or the broadcast key)
	// has a local subscriber; records it refuses are dropped undecoded.
	client *kafka.Client // resumes' fetches, on pooled connections
	serves func(key []byte) bool
	// recipients counts a room's local subscriptions (for traces).
	recipients func(room string) int
	// seen is told of every event decoded for delivery (resend detection).
	seen func(*chatevent.Event)
}

// newLogSource resolves the topic's partitions and their current ends, so
// no event appended after it returns is missed by Run.
func newLogSource(ctx context.Context, k kafkaio.Config, topic string, maxReplay int64, log *slog.Logger, m *metrics) (*logSource, error) {
	counts, err := k.EnsureTopics(ctx, kafkaio.TopicSpec{Name: topic, Partitions: k.RoomsPartitions})
	if err != nil {
		return nil, err
	}
	s := &logSource{kafka: k, topic: topic, partitions: counts[topic], maxReplay: maxReplay, log: log, m: m, client: k.Client()}
	s.start = make([]int64, s.partitions)
	for p := range s.start {
		_, next, err := k.Offsets(ctx, topic, p)
		if err != nil {
			return nil, err
		}
		s.start[p] = next
	}
	return s, nil
}

// decode turns a record into a delivery; bad records are counted and skipped.
func (s *logSource) decode(m kafka.Message) *delivery {
	ev, err := chatevent.Decode(m.Value)
	if err != nil {
		s.m.badRecords.Inc()
		s.log.Warn("skipping undecodable record", "topic", m.Topic, "partition", m.Partition, "offset", m.Offset, "err", err)
		return nil
	}
	pos := chatevent.Pos{Partition: m.Partition, Offset: m.Offset}
	ev.Pos = pos.String()
	frame, err := json.Marshal(&ev)
	if err != nil {
		return nil
	}
	return &delivery{ev: ev, pos: pos, frame: frame}
}

// deliverySpan continues the trace of a record that carries a sampled
// trace context (its producer's): a consumer span covering the record's
// fan-out on this edge. It returns nil (costing a header scan) otherwise.
func deliverySpan(m *kafka.Message, ev *chatevent.Event) trace.Span {
	pctx, ok := kafkaio.SampledTraceContext(m)
	if !ok {
		return nil
	}
	_, span := tracer.Start(pctx, "deliver "+m.Topic, trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(attribute.String("messaging.system", "kafka"), attribute.String("messaging.destination.name", m.Topic),
			attribute.Int("messaging.destination.partition.id", m.Partition), attribute.Int64("messaging.kafka.offset", m.Offset),
			attribute.String("chat.event_id", ev.ID)))
	return span
}

// Run tails every partition from the offsets fixed at construction. Records
// whose key (the room) has no local subscriber are dropped undecoded.
func (s *logSource) Run(ctx context.Context, deliver func([]*delivery)) error {
	g, ctx := errgroup.WithContext(ctx)
	for p := 0; p < s.partitions; p++ {
		g.Go(func() error {
			var ds []*delivery
			var spans []trace.Span
			once := newOnceFilter()
			return tailPartition(ctx, s.kafka, s.topic, p, s.start[p], s.log, s.m, func(msgs []kafka.Message) {
				ds = ds[:0]
				for i := range msgs {
					m := &msgs[i]
					if s.serves != nil && !s.serves(m.Key) {
						continue // no local subscriber: not worth decoding
					}
					if d := s.decode(*m); d != nil {
						if !once.keep(&d.ev) {
							s.m.duplicates.Inc()
							continue
						}
						if sp := deliverySpan(m, &d.ev); sp != nil {
							sp.SetAttributes(attribute.Int("chat.recipients", s.recipients(d.ev.Room)))
							spans = append(spans, sp)
						}
						if t, err := d.ev.Time(); err == nil {
							s.m.deliverySecs.Observe(time.Since(t).Seconds())
						}
						if s.seen != nil {
							s.seen(&d.ev)
						}
						ds = append(ds, d)
					}
				}
				if len(ds) > 0 {
					deliver(ds)
					clear(ds)
				}
				for _, sp := range spans { // the frames are queued
					sp.End()
				}
				clear(spans)
				spans = spans[:0]
			})
		})
	}
	return g.Wait()
}

// Resume checks that room's partition still holds every offset after pos.
func (s *logSource) Resume(ctx context.Context, room string, after chatevent.Pos) (chatevent.Pos, bool, error) {
	p := kafkaio.PartitionFor(chatevent.RoomKey(room), s.partitions)
	if after.Partition != p {
		return chatevent.Pos{}, false, nil
	}
	first, next, err := s.kafka.Offsets(ctx, s.topic, p)
	if err != nil {
		return chatevent.Pos{}, false, err
	}
	if after.Offset+1 < first || after.Offset >= next || next-after.Offset-1 > s.maxReplay {
		return chatevent.Pos{}, false, nil
	}
	return chatevent.Pos{Partition: p, Offset: next}, true, nil
}

// recentIDWindow is how many event ids per partition are remembered to
// drop a retried append's second copy.
const recentIDWindow = 4096

// Replay reads room's partition from after+1 to end with fetch requests on
// the client's pooled broker connections (no dial, no reader goroutines per
// resume), skipping other rooms' records undecoded.
func (s *logSource) Replay(ctx context.Context, room string, after, end chatevent.Pos, fn func(*delivery) error) error {
	key := []byte(chatevent.RoomKey(room))
	once := newOnceFilter()
	// From the record at the resume position itself, which the client has
	// (it is not sent again): when it is the client's own message, the
	// edge then knows it, and a resend of it is answered with its ack.
	next := after.Offset
	for next < end.Offset {
		res, err := s.client.Fetch(ctx, &kafka.FetchRequest{Topic: s.topic, Partition: after.Partition, Offset: next,
			MinBytes: 1, MaxBytes: 4 << 20, MaxWait: tailWait})
		if err == nil && res.Error != nil {
			err = res.Error
		}
		if err != nil && next == after.Offset {
			next++ // the resume position itself is gone (retention): from the next
			continue
		}
		if err != nil {
			return fmt.Errorf("replay %s/%d at %d: %w", s.topic, after.Partition, next, err)
		}
		from := next
		for next < end.Offset {
			r, err := res.Records.ReadRecord()
			if err != nil {
				break // io.EOF: the end of this response
			}
			if r.Offset < next {
				continue // a batch starts before the offset asked for
			}
			next = r.Offset + 1
			if r.Offset >= end.Offset || r.Key == nil {
				continue
			}
			k, _ := kafka.ReadAll(r.Key)
			if !bytes.Equal(k, key) {
				continue // another room of the partition: not decoded
			}
			v, err := kafka.ReadAll(r.Value)
			if err != nil {
				continue
			}
			m := kafka.Message{Topic: s.topic, Partition: after.Partition, Offset: r.Offset, Key: k, Value: v}
			if d := s.decode(m); d != nil && d.ev.Room == room && once.keep(&d.ev) {
				if s.seen != nil {
					s.seen(&d.ev)
				}
				if r.Offset == after.Offset {
					continue // the client has it
				}
				if err := fn(d); err != nil {
					return err
				}
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if next == from && res.HighWatermark <= next {
			return nil // nothing more to read (records removed meanwhile)
		}
	}
	return nil
}

var errClosed = errors.New("connection closed")
