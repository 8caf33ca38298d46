package embedkafka

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics of the group committer. The counters are kept as plain atomics
// too, for SyncStats.
type metrics struct {
	roundSeconds     prometheus.Histogram
	batchesPerRound  prometheus.Histogram
	responsesPerRnd  prometheus.Histogram
	waitSeconds      prometheus.Histogram
	roundsC, errorsC prometheus.Counter
	filesC           prometheus.CounterFunc

	rounds    atomic.Int64
	errors    atomic.Int64
	responses atomic.Int64
	batches   atomic.Int64
	files     atomic.Int64
	roundNs   atomic.Int64
	heldNs    atomic.Int64
}

func newMetrics() *metrics {
	m := &metrics{
		roundSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "chat_broker_fsync_round_seconds", Help: "Duration of the embedded broker's group fsync rounds.",
			Buckets: prometheus.ExponentialBuckets(0.00005, 2, 16),
		}),
		batchesPerRound: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "chat_broker_fsync_batches_per_round", Help: "Produced partition batches made durable by one group fsync round.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 12),
		}),
		responsesPerRnd: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "chat_broker_fsync_responses_per_round", Help: "Responses (produce acknowledgements, offset commits) released by one group fsync round.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 12),
		}),
		waitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "chat_broker_fsync_wait_seconds", Help: "Time a response was held for its group fsync round.",
			Buckets: prometheus.ExponentialBuckets(0.00005, 2, 16),
		}),
		roundsC: prometheus.NewCounter(prometheus.CounterOpts{Name: "chat_broker_fsync_rounds_total", Help: "Group fsync rounds run by the embedded broker."}),
		errorsC: prometheus.NewCounter(prometheus.CounterOpts{Name: "chat_broker_fsync_round_errors_total", Help: "Group fsync rounds that failed (their responses were not sent; the connections were closed)."}),
	}
	m.filesC = prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "chat_broker_fsync_files_total", Help: "fdatasync calls made by the group committer."},
		func() float64 { return float64(m.files.Load()) })
	return m
}

func (m *metrics) observeHeld(d time.Duration) {
	m.heldNs.Add(int64(d))
	m.waitSeconds.Observe(d.Seconds())
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.roundSeconds, m.batchesPerRound, m.responsesPerRnd, m.waitSeconds, m.roundsC, m.errorsC, m.filesC}
}

func (m *metrics) observeRound(d time.Duration, responses, batches int, failed bool) {
	m.rounds.Add(1)
	m.roundsC.Inc()
	m.responses.Add(int64(responses))
	m.batches.Add(int64(batches))
	m.roundNs.Add(int64(d))
	m.roundSeconds.Observe(d.Seconds())
	m.responsesPerRnd.Observe(float64(responses))
	if batches > 0 {
		m.batchesPerRound.Observe(float64(batches))
	}
	if failed {
		m.errors.Add(1)
		m.errorsC.Inc()
	}
}

// SyncStats counts the group committer's work since the broker was created.
type SyncStats struct {
	Rounds    int64         // fsync rounds run
	Errors    int64         // rounds that failed
	Responses int64         // responses held for a round
	Batches   int64         // produced partition batches covered by the rounds
	Files     int64         // fdatasync calls
	RoundTime time.Duration // total duration of the rounds
	HeldTime  time.Duration // total time responses were held for their rounds
}

func (m *metrics) stats() SyncStats {
	return SyncStats{Rounds: m.rounds.Load(), Errors: m.errors.Load(), Responses: m.responses.Load(), Batches: m.batches.Load(), Files: m.files.Load(), RoundTime: time.Duration(m.roundNs.Load()), HeldTime: time.Duration(m.heldNs.Load())}
}
