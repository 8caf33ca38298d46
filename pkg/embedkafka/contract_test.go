package embedkafka_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/chatsys/chat/pkg/embedkafka"
	"github.com/chatsys/chat/pkg/kafkaio"
)

// startBroker starts an embedded broker on a free loopback port.
func startBroker(t testing.TB, dir string) *embedkafka.Broker {
	t.Helper()
	b := embedkafka.New(embedkafka.Config{Addr: "127.0.0.1:0", DataDir: dir, SyncWrites: true}, nil)
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Stop(context.Background()) })
	return b
}

// TestKafkaGoContract proves that the kafka-go features the services rely on
// work against the embedded broker: topic creation, keyed produce with acks,
// partition reads, offsets by time, consumer groups with explicit commits,
// and persistence across a broker restart.
func TestKafkaGoContract(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	b := startBroker(t, dir)
	cfg := kafkaio.Config{Brokers: b.Addr(), ReplicationFactor: 1, WriteTimeout: 5 * time.Second, BatchTimeout: 2 * time.Millisecond}
	const topic = "contract.t"
	counts, err := cfg.EnsureTopics(ctx, kafkaio.TopicSpec{Name: topic, Partitions: 4})
	if err != nil {
		t.Fatal(err)
	}
	if counts[topic] != 4 {
		t.Fatalf("partitions of %s = %d, want 4", topic, counts[topic])
	}

	w := cfg.NewWriter(topic)
	defer w.Close()
	t0 := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	var msgs []kafka.Message
	for i := 0; i < 20; i++ {
		msgs = append(msgs, kafka.Message{Key: []byte("room-a"), Value: []byte(fmt.Sprint(i)), Time: t0.Add(time.Duration(i) * time.Minute)})
	}
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatalf("produce: %v", err)
	}
	part := kafkaio.PartitionFor("room-a", 4)

	t.Run("fetch in order from one partition", func(t *testing.T) {
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: cfg.BrokerList(), Topic: topic, Partition: part, MaxWait: 100 * time.Millisecond})
		defer r.Close()
		for i := 0; i < 20; i++ {
			m, err := r.ReadMessage(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if string(m.Value) != fmt.Sprint(i) || m.Offset != int64(i) {
				t.Fatalf("message %d = (offset %d, %q), want (offset %d, %q)", i, m.Offset, m.Value, i, fmt.Sprint(i))
			}
		}
	})

	t.Run("offsets", func(t *testing.T) {
		first, next, err := cfg.Offsets(ctx, topic, part)
		if err != nil {
			t.Fatal(err)
		}
		if first != 0 || next != 20 {
			t.Fatalf("Offsets = [%d, %d), want [0, 20)", first, next)
		}
		res, err := cfg.Client().ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{
			topic: {kafka.TimeOffsetOf(part, t0.Add(5*time.Minute))},
		}})
		if err != nil {
			t.Fatal(err)
		}
		got := res.Topics[topic][0].Offsets
		var off int64 = -1
		for o := range got {
			off = o
		}
		// kafka-go reports time lookups as a map of offset → time.
		if off != 5 {
			t.Fatalf("offset for time t0+5m = %d (%v), want 5", off, got)
		}
	})

	t.Run("consumer group commits", func(t *testing.T) {
		group := "contract-g"
		read := func(n int) []string {
			r := kafka.NewReader(kafka.ReaderConfig{Brokers: cfg.BrokerList(), Topic: topic, GroupID: group, MaxWait: 100 * time.Millisecond, StartOffset: kafka.FirstOffset})
			defer r.Close()
			var out []string
			for len(out) < n {
				m, err := r.FetchMessage(ctx)
				if err != nil {
					t.Fatal(err)
				}
				out = append(out, string(m.Value))
				if err := r.CommitMessages(ctx, m); err != nil {
					t.Fatal(err)
				}
			}
			return out
		}
		first := read(10)
		second := read(10)
		if first[0] != "0" || second[0] != "10" || second[9] != "19" {
			t.Fatalf("group reads = %v then %v, want 0..9 then 10..19", first, second)
		}
	})

	t.Run("persistence across restart", func(t *testing.T) {
		b.Stop(ctx)
		b2 := startBroker(t, dir)
		cfg2 := cfg
		cfg2.Brokers = b2.Addr()
		first, next, err := cfg2.Offsets(ctx, topic, part)
		if err != nil {
			t.Fatal(err)
		}
		if first != 0 || next != 20 {
			t.Fatalf("after restart Offsets = [%d, %d), want [0, 20)", first, next)
		}
	})
}
