package observe

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/chatsys/chat/pkg/testutil"
)

// gather returns every series of reg as "name{label=value,...}" → value.
func gather(t *testing.T, c prometheus.Collector) map[string]float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %v", problems, err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := mf.GetName() + "{"
			for i, l := range m.GetLabel() {
				if i > 0 {
					key += ","
				}
				key += l.GetName() + "=" + l.GetValue()
			}
			key += "}"
			switch {
			case m.Counter != nil:
				out[key] = m.Counter.GetValue()
			case m.Gauge != nil:
				out[key] = m.Gauge.GetValue()
			}
		}
	}
	return out
}

// TestKafkaCollectors reads and writes through kafka-go against an
// in-memory broker and checks that the exported counters add up the
// snapshots kafka-go's Stats resets on every call.
func TestKafkaCollectors(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "t"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	brokers := c.ListenAddrs()

	var w *kafka.Writer
	var r *kafka.Reader
	wc := NewKafkaWriterCollector("test-writer", func() []kafka.WriterStats {
		if w == nil {
			return nil
		}
		return []kafka.WriterStats{w.Stats()}
	})
	rc := NewKafkaReaderCollector("test-reader", func() []kafka.ReaderStats {
		if r == nil {
			return nil
		}
		return []kafka.ReaderStats{r.Stats()}
	})
	// Before the clients exist, nothing is exported (and nothing fails).
	if got := gather(t, wc); len(got) != 0 {
		t.Fatalf("writer before it exists: %v", got)
	}
	if got := gather(t, rc); len(got) != 0 {
		t.Fatalf("reader before it exists: %v", got)
	}

	w = &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: "t", BatchTimeout: time.Millisecond, RequiredAcks: kafka.RequireAll}
	defer w.Close()
	r = kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: "t", MaxWait: 100 * time.Millisecond})
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := range 3 {
		if err := w.WriteMessages(ctx, kafka.Message{Value: []byte{byte('a' + i)}}); err != nil {
			t.Fatal(err)
		}
		if _, err := r.ReadMessage(ctx); err != nil {
			t.Fatal(err)
		}
		// Collect after each record: the totals keep what earlier
		// snapshots returned.
		want := float64(i + 1)
		if got := gather(t, wc)["chat_kafka_writer_messages_total{writer=test-writer}"]; got != want {
			t.Fatalf("writer messages after %d records = %v", i+1, got)
		}
		rs := gather(t, rc)
		if got := rs["chat_kafka_reader_messages_total{reader=test-reader}"]; got != want {
			t.Fatalf("reader messages after %d records = %v (%v)", i+1, got, rs)
		}
		// kafka-go observes the lag after it has handed the message over:
		// a collection right after ReadMessage may see the value before.
		var lag float64
		var ok bool
		testutil.Eventually(t, 2*time.Second, "reader lag 0", func() bool {
			lag, ok = gather(t, rc)["chat_kafka_reader_lag_records{reader=test-reader}"]
			return ok && lag == 0
		})
	}
	if got := gather(t, wc)["chat_kafka_writer_errors_total{writer=test-writer}"]; got != 0 {
		t.Fatalf("writer errors = %v", got)
	}
}

// TestPgxPoolCollector exports a pool that has not connected yet (pgxpool
// connects lazily) and skips one that does not exist yet.
func TestPgxPoolCollector(t *testing.T) {
	p, err := pgxpool.New(context.Background(), "postgres://u@127.0.0.1:1/db?pool_max_conns=7")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	got := gather(t, NewPgxPoolCollector(func() map[string]*pgxpool.Pool { return map[string]*pgxpool.Pool{"api": p, "writer": nil} }))
	if got["chat_db_pool_max_conns{pool=api}"] != 7 || got["chat_db_pool_acquired_conns{pool=api}"] != 0 || len(got) != len(pgxMetrics) {
		t.Fatalf("got %v; want the api pool's %d series, max 7", got, len(pgxMetrics))
	}
}
