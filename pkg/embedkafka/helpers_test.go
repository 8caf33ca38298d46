package embedkafka

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

// startHooked starts a broker with the group committer's test hooks.
func startHooked(t testing.TB, dir string, h *testHooks) *Broker {
	t.Helper()
	b := New(Config{Addr: "127.0.0.1:0", DataDir: dir, SyncWrites: true}, nil)
	b.hooks = h
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Stop(context.Background()) })
	return b
}

// CreateTopic creates a topic with the given topic configs through the
// Kafka protocol and waits until the broker reports it.
func CreateTopic(ctx context.Context, addr, topic string, partitions int, configs map[string]string) error {
	cl := &kafka.Client{Addr: kafka.TCP(addr), Timeout: 10 * time.Second}
	tc := kafka.TopicConfig{Topic: topic, NumPartitions: partitions, ReplicationFactor: 1}
	for k, v := range configs {
		tc.ConfigEntries = append(tc.ConfigEntries, kafka.ConfigEntry{ConfigName: k, ConfigValue: v})
	}
	res, err := cl.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{tc}})
	if err != nil {
		return err
	}
	if err := res.Errors[topic]; err != nil {
		return err
	}
	return nil
}

// ProduceResult is what ProduceSync measured.
type ProduceResult struct {
	Messages  int
	Elapsed   time.Duration
	Latencies []time.Duration // one per acknowledged WriteMessages call, sorted
}

// Quantile returns the q-quantile of the latencies.
func (r ProduceResult) Quantile(q float64) time.Duration {
	if len(r.Latencies) == 0 {
		return 0
	}
	return r.Latencies[min(len(r.Latencies)-1, int(q*float64(len(r.Latencies))))]
}

// ProduceSync runs producers concurrent producers, each with its own
// kafka-go Writer (batch size 1, acks=all) writing perProducer records of
// size bytes one at a time, round-robin over the topics' partitions, and
// measures each acknowledgement's latency. Every producer first writes one
// unmeasured record, so connections and metadata are warm.
func ProduceSync(ctx context.Context, addr string, topics []string, producers, perProducer, size int) (ProduceResult, error) {
	tr := &kafka.Transport{Dial: (&net.Dialer{Timeout: 5 * time.Second}).DialContext}
	defer tr.CloseIdleConnections()
	writers := make([]*kafka.Writer, producers)
	for i := range writers {
		writers[i] = &kafka.Writer{
			Addr: kafka.TCP(addr), Transport: tr, Balancer: &kafka.RoundRobin{},
			RequiredAcks: kafka.RequireAll, BatchSize: 1, BatchTimeout: time.Millisecond,
			WriteTimeout: 30 * time.Second, MaxAttempts: 1,
		}
		defer writers[i].Close()
	}
	value := make([]byte, size)
	for i := range value {
		value[i] = 'a' + byte(i%26)
	}
	run := func(n int, measure bool) ([]time.Duration, error) {
		var (
			mu   sync.Mutex
			lats []time.Duration
			errs []error
			wg   sync.WaitGroup
		)
		for p, w := range writers {
			wg.Go(func() {
				var mine []time.Duration
				for i := range n {
					topic := topics[(p+i)%len(topics)]
					t0 := time.Now()
					if err := w.WriteMessages(ctx, kafka.Message{Topic: topic, Value: value}); err != nil {
						mu.Lock()
						errs = append(errs, fmt.Errorf("producer %d message %d: %w", p, i, err))
						mu.Unlock()
						return
					}
					if measure {
						mine = append(mine, time.Since(t0))
					}
				}
				mu.Lock()
				lats = append(lats, mine...)
				mu.Unlock()
			})
		}
		wg.Wait()
		if len(errs) > 0 {
			return nil, errs[0]
		}
		return lats, nil
	}
	if _, err := run(1, false); err != nil {
		return ProduceResult{}, err
	}
	t0 := time.Now()
	lats, err := run(perProducer, true)
	if err != nil {
		return ProduceResult{}, err
	}
	res := ProduceResult{Messages: producers * perProducer, Elapsed: time.Since(t0), Latencies: lats}
	slices.Sort(res.Latencies)
	return res, nil
}
