package router

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/chatsys/chat/pkg/chatevent"
	"github.com/chatsys/chat/pkg/kafkaio"
	"github.com/chatsys/chat/pkg/observe"
)

// newDirectReader returns the consumer-group reader over chat.direct.
//
// A router that crashes does not leave the group: its partitions stay
// assigned to it until its session times out, and a rebalance started by a
// new member waits for that. So the session timeout is short
// (Config.SessionTimeout, 6s by default, the broker's usual minimum) with a
// heartbeat every sixth of it, and a failed join is retried after half a
// second rather than kafka-go's 5s.
//
// start is where a partition without a committed offset begins; see
// initGroupOffsets.
func (r *Router) newDirectReader(start int64) *kafka.Reader {
	k := r.cfg.Kafka
	st := r.cfg.SessionTimeout
	return kafka.NewReader(kafka.ReaderConfig{
		Brokers:           k.BrokerList(),
		GroupID:           r.cfg.GroupID,
		Topic:             k.DirectTopic,
		StartOffset:       start,
		MinBytes:          1,
		MaxBytes:          8 << 20,
		MaxWait:           500 * time.Millisecond,
		ReadLagInterval:   -1,
		SessionTimeout:    st,
		HeartbeatInterval: max(st/6, 100*time.Millisecond),
		RebalanceTimeout:  st,
		JoinGroupBackoff:  500 * time.Millisecond,
		// Keep retrying underneath rather than queue errors for
		// FetchMessage while the broker is away.
		MaxAttempts: 1 << 30,
		ErrorLogger: kafka.LoggerFunc(func(msg string, args ...any) {
			r.log.Debug("kafka group reader", "msg", fmt.Sprintf(msg, args...))
		}),
	})
}

// initGroupOffsets makes sure the group has a committed offset for every
// partition of chat.direct, committing the partition's current end for
// those that have none (a new group starts from the end: earlier messages
// are in history). With that done the reader can start partitions without
// a committed offset from their first offset: those are partitions added
// to the topic later, and a message sent to one while every router was down
// is still routed. (Before, a partition that had never carried a private
// message had no committed offset, and a restarted router started it from
// the end, skipping what was sent to it while the router was down.)
//
// It returns the start offset for the reader: kafka.FirstOffset when every
// partition has a committed offset, else kafka.LastOffset (the group is
// active with members that did not initialize it, so the commit was
// refused).
func (r *Router) initGroupOffsets(ctx context.Context, partitions int) (int64, error) {
	k := r.cfg.Kafka
	cl := k.Client()
	parts := make([]int, partitions)
	for p := range parts {
		parts[p] = p
	}
	res, err := cl.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: r.cfg.GroupID, Topics: map[string][]int{k.DirectTopic: parts}})
	if err != nil {
		return kafka.LastOffset, fmt.Errorf("fetch committed offsets: %w", err)
	}
	if res.Error != nil && !errors.Is(res.Error, kafka.GroupIdNotFound) { // a new group has none
		return kafka.LastOffset, fmt.Errorf("fetch committed offsets: %w", res.Error)
	}
	committed := map[int]bool{}
	for _, p := range res.Topics[k.DirectTopic] {
		if p.Error == nil && p.CommittedOffset >= 0 {
			committed[p.Partition] = true
		}
	}
	var commits []kafka.OffsetCommit
	for p := range parts {
		if committed[p] {
			continue
		}
		_, end, err := k.Offsets(ctx, k.DirectTopic, p)
		if err != nil {
			return kafka.LastOffset, err
		}
		commits = append(commits, kafka.OffsetCommit{Partition: p, Offset: end})
	}
	if len(commits) == 0 {
		return kafka.FirstOffset, nil
	}
	cres, err := cl.OffsetCommit(ctx, &kafka.OffsetCommitRequest{GroupID: r.cfg.GroupID, GenerationID: -1,
		Topics: map[string][]kafka.OffsetCommit{k.DirectTopic: commits}})
	if err != nil {
		return kafka.LastOffset, fmt.Errorf("commit initial offsets: %w", err)
	}
	for _, p := range cres.Topics[k.DirectTopic] {
		if p.Error != nil {
			return kafka.LastOffset, fmt.Errorf("commit initial offset of partition %d: %w", p.Partition, p.Error)
		}
	}
	r.log.Info("initialized the router group's offsets at the end of chat.direct", "partitions", len(commits))
	return kafka.FirstOffset, nil
}

// route consumes chat.direct and writes a delivery record per edge that
// holds a recipient of the event (see recipients). Offsets are committed after the
// deliveries are acknowledged; a redelivery duplicates records that clients
// drop by id. It starts once presence has caught up, so no message is
// routed by a half-built table.
func (r *Router) route(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case <-r.caughtUpCh:
	}
	// Deliveries are written by a goroutine of their own while the next
	// events are fetched and targeted: it takes every routed event waiting
	// for it (no timer: a lone DM goes out at once, and under load each
	// write carries whatever queued during the previous one), writes their
	// delivery records with one call, and hands the events to a committing
	// goroutine, which merges the commits that queue up while one is in
	// flight. So routing never waits for a write's or a commit's round trip.
	commits := newCommitQueue()
	defer commits.close()
	go commits.run(ctx, r.direct, r.log)
	type routed struct {
		msg   kafka.Message
		out   []kafka.Message
		spans []trace.Span
	}
	work := make(chan routed, maxRouteBatch)
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		var batch, out []kafka.Message
		var spans []trace.Span
		for w := range work {
			batch, out, spans = append(batch[:0], w.msg), append(out[:0], w.out...), append(spans[:0], w.spans...)
		drain:
			for len(batch) < maxRouteBatch {
				select {
				case w, ok := <-work:
					if !ok {
						break drain
					}
					batch, out, spans = append(batch, w.msg), append(out, w.out...), append(spans, w.spans...)
				default:
					break drain
				}
			}
			if len(out) > 0 {
				err := retry(ctx, 100*time.Millisecond, 5*time.Second, 0, func() error {
					err := r.deliveries.WriteMessages(ctx, out...)
					if err != nil && r.stopping.Load() {
						return backoff.Permanent(err) // Stop closed the writer: the next owner redelivers
					}
					return err
				}, func(err error, wait time.Duration) {
					// With the first traced record's route span, if any.
					r.log.WarnContext(observe.SpanContext(spans...), "write deliveries; retrying", "records", len(out), "retry_in", wait, "err", err)
				})
				if err != nil { // only when ctx ended or Stop began: nothing committed, redelivered to the next owner
					endSpans(spans)
					for w := range work { // drain: nothing more is written or committed
						endSpans(w.spans)
					}
					return
				}
				r.records.Add(float64(len(out)))
			}
			endSpans(spans)
			commits.add(slices.Clone(batch))
			clear(out)
			clear(spans)
		}
	}()
	defer func() {
		close(work)
		<-writerDone
	}()
	for {
		m, err := fetch(ctx, r.direct, r.stopping.Load, func(err error, wait time.Duration) {
			r.log.Warn("fetch private messages; retrying", "retry_in", wait, "err", err)
		})
		if err != nil {
			return nil // ctx ended or Stop closed the reader
		}
		out, spans := r.deliveriesFor(ctx, []kafka.Message{m})
		select {
		case work <- routed{msg: m, out: out, spans: spans}:
		case <-writerDone: // the writer gave up (ctx ended or Stop began)
			endSpans(spans)
			return nil
		}
	}
}

// maxRouteBatch bounds the events whose deliveries one write carries (and
// the events routed ahead of the writer).
const maxRouteBatch = 500

func endSpans(spans []trace.Span) {
	for _, sp := range spans {
		sp.End()
	}
}

// deliveriesFor is the targeting decision: for each event of batch, one
// delivery record per edge that holds one of its recipients (see
// recipients), keyed by the edge id, the event with its chat.direct pos as
// value (a read keeps its own pos: the position read). Records that do not
// decode and other types are skipped. Blocks are not checked here: the edge
// refuses a blocked user's message before appending it, and a block made
// after that does not unsend it. It returns the spans it started (one per
// routed event that carries a sampled trace context) for the caller to end.
func (r *Router) deliveriesFor(ctx context.Context, batch []kafka.Message) ([]kafka.Message, []trace.Span) {
	var out []kafka.Message
	var spans []trace.Span
	for _, m := range batch {
		ev, err := chatevent.Decode(m.Value)
		if err != nil {
			continue
		}
		users := recipients(&ev)
		if len(users) == 0 {
			continue
		}
		// Continue the sender's trace, when it has a sampled one: this
		// span's context travels on in the delivery records' headers. A
		// record without one starts no trace here either.
		headers := []kafka.Header{{Key: chatevent.HeaderSchema, Value: []byte(strconv.Itoa(chatevent.SchemaVersion))}}
		mctx, span := ctx, trace.Span(nil)
		if pctx, ok := kafkaio.SampledTraceContext(&m); ok {
			mctx, span = tracer.Start(pctx, "route "+m.Topic, trace.WithSpanKind(trace.SpanKindConsumer),
				trace.WithAttributes(attribute.String("messaging.system", "kafka"), attribute.String("chat.event_id", ev.ID),
					attribute.String("chat.event_type", ev.Type)))
			spans = append(spans, span)
			otel.GetTextMapPropagator().Inject(mctx, kafkaio.HeaderCarrier{Headers: &headers})
		}
		b, err := chatevent.EncodeDelivery(ev, chatevent.Pos{Partition: m.Partition, Offset: m.Offset})
		if err != nil { // a decoded event always encodes; skip rather than send garbage
			r.log.ErrorContext(mctx, "encode delivery", "event_id", ev.ID, "err", err)
			if span != nil {
				span.RecordError(err)
			}
			continue
		}
		edges := r.late.target(time.Now(), users, b, headers, r.t.edgesOf)
		if span != nil {
			span.SetAttributes(attribute.Int("chat.edges", len(edges)))
		}
		for _, edge := range edges {
			out = append(out, kafka.Message{Key: []byte(edge), Value: b, Headers: headers})
		}
		r.routed.Inc()
	}
	return out, spans
}

// recipients returns the users whose edges get a chat.direct event
// (decoded, so its usernames are valid), or nil for one that is not
// routed:
//
//   - private: the sender and the target;
//   - edit, delete of a private message (with a target): the one who made
//     it (Username) and the peer (Target);
//   - read of a DM (with a target): the reader and the peer (a receipt);
//     read of a room (with a room; key chatevent.ReadKey): the reader only,
//     for their other connections.
//
// A room's edits and deletes live in chat.rooms; one found here is not
// routed.
func recipients(ev *chatevent.Event) []string {
	switch ev.Type {
	case chatevent.TypePrivate:
		return []string{ev.Username, ev.Target}
	case chatevent.TypeEdit, chatevent.TypeDelete:
		if ev.Target != "" {
			return []string{ev.Username, ev.Target}
		}
	case chatevent.TypeRead:
		if ev.Target != "" {
			return []string{ev.Username, ev.Target}
		}
		return []string{ev.Username}
	}
	return nil
}

// commitQueue hands routed batches to a committing goroutine, merging the
// batches that arrive while a commit is in flight.
type commitQueue struct {
	mu       sync.Mutex
	pending  []kafka.Message
	wake     chan struct{}
	done     chan struct{}
	finished chan struct{}
}

func newCommitQueue() *commitQueue {
	return &commitQueue{wake: make(chan struct{}, 1), done: make(chan struct{}), finished: make(chan struct{})}
}

func (q *commitQueue) add(batch []kafka.Message) {
	q.mu.Lock()
	q.pending = append(q.pending, batch...)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// close ends run after a last commit of what is pending, and waits for it
// (at most a few seconds: an uncommitted batch is only redelivered).
func (q *commitQueue) close() {
	close(q.done)
	select {
	case <-q.finished:
	case <-time.After(5 * time.Second):
	}
}

func (q *commitQueue) run(ctx context.Context, r *kafka.Reader, log *slog.Logger) {
	defer close(q.finished)
	commit := func() {
		q.mu.Lock()
		batch := q.pending
		q.pending = nil
		q.mu.Unlock()
		if len(batch) == 0 {
			return
		}
		// kafka-go commits the highest offset of each partition given.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := r.CommitMessages(cctx, batch...); err != nil && ctx.Err() == nil {
			log.Warn("commit direct offsets", "err", err)
		}
	}
	for {
		select {
		case <-q.wake:
			commit()
		case <-q.done:
			commit()
			return
		}
	}
}
