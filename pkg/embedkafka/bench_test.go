package embedkafka

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// BenchmarkProduce compares the embedded broker's durability modes under 50
// concurrent kafka-go producers (acks=all, one 100-byte record per produce
// request) on a 12-partition topic:
//
//   - group-commit: the default (-broker.sync-writes=true);
//   - kfake-per-batch-fsync: the old default, kfake.SyncWrites(), which
//     fsyncs segment and index after every batch in the cluster goroutine;
//   - no-fsync: -broker.sync-writes=false.
//
// It reports throughput (records/s) and the p50/p99 latency of a produce.
// Run it with a fixed count, e.g.
//
//	go test -run '^$' -bench Produce -benchtime 20000x ./pkg/embedkafka/
func BenchmarkProduce(b *testing.B) {
	const producers, partitions, size = 50, 12, 100
	modes := []struct {
		name           string
		sync, perBatch bool
	}{
		{"group-commit", true, false},
		{"kfake-per-batch-fsync", true, true},
		{"no-fsync", false, false},
	}
	for _, m := range modes {
		b.Run(m.name, func(b *testing.B) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			br := New(Config{Addr: "127.0.0.1:0", DataDir: b.TempDir(), SyncWrites: m.sync}, nil)
			br.perBatchFsync = m.perBatch
			if err := br.Start(ctx); err != nil {
				b.Fatal(err)
			}
			defer br.Stop(ctx)
			if err := CreateTopic(ctx, br.Addr(), "bench", partitions, nil); err != nil {
				b.Fatal(err)
			}
			per := max(1, (b.N+producers-1)/producers)
			b.ResetTimer()
			res, err := ProduceSync(ctx, br.Addr(), []string{"bench"}, producers, per, size)
			if err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			rate := float64(res.Messages) / res.Elapsed.Seconds()
			b.ReportMetric(rate, "records/s")
			b.ReportMetric(float64(res.Quantile(0.50).Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(res.Quantile(0.99).Microseconds())/1000, "p99-ms")
			st := br.SyncStats()
			extra := ""
			if st.Rounds > 0 {
				extra = fmt.Sprintf("; %d fsync rounds: %.1f batches, %.1f fdatasyncs, %v per round; an acknowledgement held %v on average", st.Rounds,
					float64(st.Batches)/float64(st.Rounds), float64(st.Files)/float64(st.Rounds), (st.RoundTime / time.Duration(st.Rounds)).Round(time.Microsecond),
					(st.HeldTime / time.Duration(max(1, st.Responses))).Round(time.Microsecond))
			}
			b.Logf("%s: %d records in %v: %.0f records/s, p50 %v, p99 %v%s", m.name, res.Messages, res.Elapsed.Round(time.Millisecond),
				rate, res.Quantile(0.50), res.Quantile(0.99), extra)
		})
	}
}
