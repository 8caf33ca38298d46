package edge

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/segmentio/kafka-go"

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
func (s *deliveriesSource) Run(ctx context.Context, deliver func(*delivery)) error {
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: s.k.BrokerList(), Topic: s.k.DeliveriesTopic, Partition: s.partition,
		MinBytes: 1, MaxBytes: 8 << 20, MaxWait: 250 * time.Millisecond, ReadLagInterval: -1, MaxAttempts: 1 << 30})
	defer r.Close()
	if err := r.SetOffset(s.start); err != nil {
		return err
	}
	for {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("deliveries %d: %w", s.partition, err)
		}
		if string(m.Key) != s.edgeID {
			continue
		}
		var ev chatevent.Event
		if err := json.Unmarshal(m.Value, &ev); err != nil || ev.Validate() != nil || ev.Type != chatevent.TypePrivate {
			s.m.badRecords.Inc()
			continue
		}
		pos, _ := chatevent.ParsePos(ev.Pos)
		deliver(&delivery{ev: ev, pos: pos, frame: m.Value})
	}
}
