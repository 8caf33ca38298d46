package edge

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel/trace"

	"github.com/chatsys/chat/pkg/chatevent"
	"github.com/chatsys/chat/pkg/kafkaio"
)

// deliveriesSource reads this edge's partition of chat.deliveries: the
// private messages the router targeted at this edge, each with its
// chat.direct position. Records for other edges that hash to the same
// partition are skipped.
type deliveriesSource struct {
	k         kafkaio.Config
	edgeID    string
	partition int
	start     int64
	log       *slog.Logger
	m         *metrics
}

func newDeliveriesSource(ctx context.Context, k kafkaio.Config, edgeID string, log *slog.Logger, m *metrics) (*deliveriesSource, error) {
	md, err := k.Client().Metadata(ctx, &kafka.MetadataRequest{Topics: []string{k.DeliveriesTopic}})
	if err != nil || len(md.Topics) != 1 || len(md.Topics[0].Partitions) == 0 {
		return nil, fmt.Errorf("metadata of %s: %v", k.DeliveriesTopic, err)
	}
	p := kafkaio.PartitionFor(edgeID, len(md.Topics[0].Partitions))
	_, next, err := k.Offsets(ctx, k.DeliveriesTopic, p)
	if err != nil {
		return nil, err
	}
	return &deliveriesSource{k: k, edgeID: edgeID, partition: p, start: next, log: log, m: m}, nil
}

// Run delivers this edge's records from the offset fixed at construction.
func (s *deliveriesSource) Run(ctx context.Context, deliver func([]*delivery)) error {
	var ds []*delivery
	var spans []trace.Span
	// A private message appended twice (a retry whose first attempt had
	// landed) is routed twice, and the router's group may route a record
	// again after a rebalance: deliver each event once, as room events
	// (see onceFilter).
	once := newOnceFilter()
	return tailPartition(ctx, s.k, s.k.DeliveriesTopic, s.partition, s.start, s.log, s.m, func(msgs []kafka.Message) {
		ds = ds[:0]
		for i := range msgs {
			m := &msgs[i]
			if string(m.Key) != s.edgeID {
				continue
			}
			ev, pos, err := chatevent.DecodeDelivery(m.Value)
			if err != nil {
				s.m.badRecords.Inc()
				continue
			}
			if !once.keep(&ev) {
				s.m.duplicates.Inc()
				continue
			}
			if sp := deliverySpan(m, &ev); sp != nil {
				spans = append(spans, sp)
			}
			ds = append(ds, &delivery{ev: ev, pos: pos, frame: m.Value})
		}
		if len(ds) > 0 {
			deliver(ds)
			clear(ds)
		}
		for _, sp := range spans {
			sp.End()
		}
		clear(spans)
		spans = spans[:0]
	})
}
