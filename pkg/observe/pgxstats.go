package observe

import (
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
)

var pgxMetrics = []struct {
	name, help string
	typ        prometheus.ValueType
	get        func(*pgxpool.Stat) float64
}{
	{"chat_db_pool_acquired_conns", "PostgreSQL connections of the pool in use.", prometheus.GaugeValue, func(s *pgxpool.Stat) float64 { return float64(s.AcquiredConns()) }},
	{"chat_db_pool_idle_conns", "Idle PostgreSQL connections of the pool.", prometheus.GaugeValue, func(s *pgxpool.Stat) float64 { return float64(s.IdleConns()) }},
	{"chat_db_pool_total_conns", "PostgreSQL connections of the pool (in use, idle and being opened).", prometheus.GaugeValue, func(s *pgxpool.Stat) float64 { return float64(s.TotalConns()) }},
	{"chat_db_pool_max_conns", "Most PostgreSQL connections the pool may hold.", prometheus.GaugeValue, func(s *pgxpool.Stat) float64 { return float64(s.MaxConns()) }},
	{"chat_db_pool_acquires_total", "Connections acquired from the pool.", prometheus.CounterValue, func(s *pgxpool.Stat) float64 { return float64(s.AcquireCount()) }},
	{"chat_db_pool_acquire_seconds_total", "Time spent acquiring connections from the pool.", prometheus.CounterValue, func(s *pgxpool.Stat) float64 { return s.AcquireDuration().Seconds() }},
	{"chat_db_pool_empty_acquires_total", "Acquires that had to wait for a connection (none idle).", prometheus.CounterValue, func(s *pgxpool.Stat) float64 { return float64(s.EmptyAcquireCount()) }},
	{"chat_db_pool_canceled_acquires_total", "Acquires whose context ended while waiting for a connection.", prometheus.CounterValue, func(s *pgxpool.Stat) float64 { return float64(s.CanceledAcquireCount()) }},
}

// PgxPoolCollector exports pgxpool statistics as chat_db_pool_* metrics
// labelled pool=<name>. Create it with NewPgxPoolCollector.
type PgxPoolCollector struct {
	pools func() map[string]*pgxpool.Pool
	descs []*prometheus.Desc
}

// NewPgxPoolCollector returns a collector of the pools pools returns by
// name; a nil pool (not connected yet) is skipped.
func NewPgxPoolCollector(pools func() map[string]*pgxpool.Pool) *PgxPoolCollector {
	c := &PgxPoolCollector{pools: pools}
	for _, m := range pgxMetrics {
		c.descs = append(c.descs, prometheus.NewDesc(m.name, m.help, []string{"pool"}, nil))
	}
	return c
}

// Describe implements prometheus.Collector.
func (c *PgxPoolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *PgxPoolCollector) Collect(ch chan<- prometheus.Metric) {
	for name, p := range c.pools() {
		if p == nil {
			continue
		}
		s := p.Stat()
		for i, m := range pgxMetrics {
			ch <- prometheus.MustNewConstMetric(c.descs[i], m.typ, m.get(s), name)
		}
	}
}
