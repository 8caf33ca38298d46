package observe

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
)

// kafka-go's Reader.Stats and Writer.Stats return their counters since the
// previous call and reset them: a collector built here must be the only
// caller of Stats for the clients it watches. It adds each snapshot to
// running totals, so the exported counters only grow (across a client
// being replaced, too).

var (
	readerCounters = []struct {
		name, help string
		get        func(*kafka.ReaderStats) int64
	}{
		{"chat_kafka_reader_dials_total", "Connections a kafka-go reader opened to brokers.", func(s *kafka.ReaderStats) int64 { return s.Dials }},
		{"chat_kafka_reader_fetches_total", "Fetch requests a kafka-go reader made.", func(s *kafka.ReaderStats) int64 { return s.Fetches }},
		{"chat_kafka_reader_messages_total", "Records a kafka-go reader returned.", func(s *kafka.ReaderStats) int64 { return s.Messages }},
		{"chat_kafka_reader_bytes_total", "Record bytes a kafka-go reader returned.", func(s *kafka.ReaderStats) int64 { return s.Bytes }},
		{"chat_kafka_reader_rebalances_total", "Consumer group rebalances a kafka-go group reader went through.", func(s *kafka.ReaderStats) int64 { return s.Rebalances }},
		{"chat_kafka_reader_timeouts_total", "Fetches of a kafka-go reader that timed out.", func(s *kafka.ReaderStats) int64 { return s.Timeouts }},
		{"chat_kafka_reader_errors_total", "Errors a kafka-go reader met (retried underneath or returned).", func(s *kafka.ReaderStats) int64 { return s.Errors }},
	}
	readerGauges = []struct {
		name, help string
		get        func(*kafka.ReaderStats) int64
	}{
		{"chat_kafka_reader_lag_records", "Records between a kafka-go reader's position and the partition's end as of its last record (a group reader: of the partition it read last).", func(s *kafka.ReaderStats) int64 { return s.Lag }},
		{"chat_kafka_reader_queue_length", "Records fetched by a kafka-go reader and not yet returned.", func(s *kafka.ReaderStats) int64 { return s.QueueLength }},
	}
	writerCounters = []struct {
		name, help string
		get        func(*kafka.WriterStats) int64
	}{
		{"chat_kafka_writer_writes_total", "Produce requests a kafka-go writer sent.", func(s *kafka.WriterStats) int64 { return s.Writes }},
		{"chat_kafka_writer_messages_total", "Records a kafka-go writer produced.", func(s *kafka.WriterStats) int64 { return s.Messages }},
		{"chat_kafka_writer_bytes_total", "Record bytes a kafka-go writer produced.", func(s *kafka.WriterStats) int64 { return s.Bytes }},
		{"chat_kafka_writer_errors_total", "Produce requests of a kafka-go writer that failed (after its retries).", func(s *kafka.WriterStats) int64 { return s.Errors }},
		{"chat_kafka_writer_retries_total", "Produce attempts a kafka-go writer retried.", func(s *kafka.WriterStats) int64 { return s.Retries }},
	}
)

// KafkaReaderCollector exports the statistics of kafka-go readers as
// chat_kafka_reader_* metrics labelled reader=<name>. Create it with
// NewKafkaReaderCollector.
type KafkaReaderCollector struct {
	stats    func() []kafka.ReaderStats
	counters []*prometheus.Desc
	gauges   []*prometheus.Desc

	mu     sync.Mutex // serializes Collect: Stats resets the client's counters
	totals []float64
}

// NewKafkaReaderCollector returns a collector of the readers whose
// statistics stats returns (nil or empty while there is none yet, e.g.
// before a service's Start); several readers are summed. It must be the
// only caller of their Stats.
func NewKafkaReaderCollector(name string, stats func() []kafka.ReaderStats) *KafkaReaderCollector {
	c := &KafkaReaderCollector{stats: stats, totals: make([]float64, len(readerCounters))}
	labels := prometheus.Labels{"reader": name}
	for _, m := range readerCounters {
		c.counters = append(c.counters, prometheus.NewDesc(m.name, m.help, nil, labels))
	}
	for _, m := range readerGauges {
		c.gauges = append(c.gauges, prometheus.NewDesc(m.name, m.help, nil, labels))
	}
	return c
}

// Describe implements prometheus.Collector.
func (c *KafkaReaderCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range append(append([]*prometheus.Desc(nil), c.counters...), c.gauges...) {
		ch <- d
	}
}

// Collect implements prometheus.Collector. Nothing is exported before the
// first reader exists.
func (c *KafkaReaderCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	all := c.stats()
	if len(all) == 0 {
		return
	}
	gauges := make([]float64, len(readerGauges))
	for i := range all {
		s := &all[i]
		for j, m := range readerCounters {
			c.totals[j] += float64(m.get(s))
		}
		for j, m := range readerGauges {
			gauges[j] += float64(m.get(s))
		}
	}
	for j, d := range c.counters {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, c.totals[j])
	}
	for j, d := range c.gauges {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, gauges[j])
	}
}

// KafkaWriterCollector exports the statistics of kafka-go writers as
// chat_kafka_writer_* metrics labelled writer=<name>. Create it with
// NewKafkaWriterCollector.
type KafkaWriterCollector struct {
	stats    func() []kafka.WriterStats
	counters []*prometheus.Desc

	mu     sync.Mutex
	totals []float64
}

// NewKafkaWriterCollector returns a collector of the writers whose
// statistics stats returns (nil or empty while there is none yet); several
// writers are summed. It must be the only caller of their Stats.
func NewKafkaWriterCollector(name string, stats func() []kafka.WriterStats) *KafkaWriterCollector {
	c := &KafkaWriterCollector{stats: stats, totals: make([]float64, len(writerCounters))}
	labels := prometheus.Labels{"writer": name}
	for _, m := range writerCounters {
		c.counters = append(c.counters, prometheus.NewDesc(m.name, m.help, nil, labels))
	}
	return c
}

// Describe implements prometheus.Collector.
func (c *KafkaWriterCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.counters {
		ch <- d
	}
}

// Collect implements prometheus.Collector. Nothing is exported before the
// first writer exists.
func (c *KafkaWriterCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	all := c.stats()
	if len(all) == 0 {
		return
	}
	for i := range all {
		for j, m := range writerCounters {
			c.totals[j] += float64(m.get(&all[i]))
		}
	}
	for j, d := range c.counters {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, c.totals[j])
	}
}
