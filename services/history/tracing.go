package history

import (
	"context"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

var tracer = otel.Tracer("github.com/chatsys/chat/services/history")

// traced is a record of a batch that carries its producer's sampled trace
// context (the edge's publish span, in the W3C headers): the writer
// continues that trace with a consumer span covering the record's write.
type traced struct {
	parent    context.Context // the producer's span context
	topic     string
	partition int
	offset    int64
	eventID   string
}

// storeSpans are the consumer spans of a batch's traced records, one per
// record, each a child of its producer's span: so a message's trace runs
// from the edge's publish span to the transaction that stored its row (or
// applied its edit, delete or read position). nil when the batch has no
// traced record.
type storeSpans []trace.Span

// startStoreSpans starts the spans of b's traced records; they end when
// the batch's transaction has committed (end) or the writer gives up
// (abandon).
func (h *History) startStoreSpans(b *decoded) storeSpans {
	if len(b.traced) == 0 {
		return nil
	}
	spans := make(storeSpans, 0, len(b.traced))
	for i := range b.traced {
		t := &b.traced[i]
		_, sp := tracer.Start(t.parent, "store "+t.topic, trace.WithSpanKind(trace.SpanKindConsumer),
			trace.WithAttributes(
				attribute.String("messaging.system", "kafka"),
				attribute.String("messaging.operation.type", "process"),
				attribute.String("messaging.destination.name", t.topic),
				attribute.String("messaging.consumer.group.name", h.cfg.GroupID),
				attribute.Int("messaging.destination.partition.id", t.partition),
				attribute.Int64("messaging.kafka.offset", t.offset),
				attribute.String("chat.event_id", t.eventID),
				attribute.Int("chat.batch_records", len(b.msgs)),
				attribute.String("db.system", "postgresql"),
				attribute.String("db.system.name", "postgresql"),
			))
		if i == 0 && !sp.IsRecording() {
			return nil // no tracer provider: the other spans would be no-ops too
		}
		spans = append(spans, sp)
	}
	return spans
}

// of returns a context holding the span of the batch's traced record at
// topic, partition, offset (for its log lines), or context.Background().
func (s storeSpans) of(b *decoded, topic string, partition int, offset int64) context.Context {
	for i, sp := range s {
		if t := &b.traced[i]; t.topic == topic && t.partition == partition && t.offset == offset {
			return trace.ContextWithSpan(context.Background(), sp)
		}
	}
	return context.Background()
}

// retrying records a failed attempt at the batch's transaction.
func (s storeSpans) retrying(err error) {
	for _, sp := range s {
		sp.AddEvent("write failed; retrying", trace.WithAttributes(attribute.String("error.message", err.Error())))
	}
}

// end ends the spans after the transaction committed; a record moved to
// dead_letters gets an error status.
func (s storeSpans) end(b *decoded, dead []deadLetter) {
	if len(s) == 0 {
		return
	}
	for i, sp := range s {
		t := &b.traced[i]
		for j := range dead {
			d := &dead[j]
			if d.topic == t.topic && d.partition == t.partition && d.offset == t.offset {
				sp.SetAttributes(attribute.Bool("chat.dead_letter", true))
				sp.SetStatus(codes.Error, d.err)
				break
			}
		}
		sp.End()
	}
}

// abandon ends the spans of a batch that was not written (the writer is
// stopping; the records are redelivered to the partitions' next owner).
func (s storeSpans) abandon(err error) {
	for _, sp := range s {
		sp.SetStatus(codes.Error, "not stored: "+err.Error())
		sp.End()
	}
}
