// Package embedkafka runs an in-process Kafka-protocol broker
// (github.com/twmb/franz-go/pkg/kfake) for single-machine mode and tests.
// It persists its log under a data directory, so a restart keeps every
// record, and listens on a TCP address other processes can use.
//
// With SyncWrites (the default) a write is acknowledged only once it is on
// disk, and the fsyncs are shared: kfake does not fsync produced batches
// in its cluster goroutine (so no client waits behind another's fsync); a
// group committer (groupcommit.go) fdatasyncs, in one round,
// every file written to since its previous round, and each connection's
// acknowledgements wait in the connection wrapper (conn.go) for a round
// that started after the write. See Config.SyncWrites.
package embedkafka

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kfake"
)

// Config configures the embedded broker.
type Config struct {
	// Addr is the listen address (default 127.0.0.1:9092; port 0 picks one).
	Addr string
	// DataDir is the log directory. Empty keeps the log in memory only.
	DataDir string
	// SyncWrites (default true) acknowledges a produce (acks != 0), an
	// offset commit or a topic change only after what it wrote was
	// fdatasynced, so an acknowledged message survives a machine crash or
	// power loss, not only a process crash. The fsyncs are group commits:
	// one round covers every batch that arrived, on any partition, while the
	// previous round ran, so throughput does not fall to one fsync per batch;
	// the price is latency: an acknowledgement waits for the rest of the
	// running round and then for its own (a round fdatasyncs the segment and
	// index of each partition written, concurrently). If an fsync fails, the held acknowledgements are
	// never sent (their connections are closed, so clients retry), no
	// further write is acknowledged, and Run returns an error: restart the
	// broker to reload the log from what is really on disk.
	//
	// False acknowledges writes from the page cache and never fsyncs the
	// log: faster (several times the throughput, a fraction of the
	// latency), and a process crash still loses nothing, but a machine
	// crash or power loss can lose acknowledged messages and committed
	// offsets.
	SyncWrites bool
}

// RegisterFlags registers the broker.* flags. The data directory is derived
// from -data.dir by the caller.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Addr, "broker.addr", "127.0.0.1:9092", "listen address of the embedded Kafka-protocol broker")
	fs.BoolVar(&c.SyncWrites, "broker.sync-writes", true, "acknowledge writes only once fsynced, one shared fsync round for all batches that arrive meanwhile (group commit); false acknowledges from the page cache: faster, but a machine crash or power loss can lose acknowledged messages")
}

// DataDirUnder returns the broker's log directory under a data directory.
func DataDirUnder(dataDir string) string { return filepath.Join(dataDir, "kafka") }

// Broker is the embedded broker. Create it with New; it does no I/O until Start.
type Broker struct {
	cfg  Config
	log  *slog.Logger
	met  *metrics
	mu   sync.Mutex
	c    *kfake.Cluster
	gc   *committer // nil unless DataDir and SyncWrites
	addr string
	done chan struct{}

	// Tests only: kfake's own per-batch fsync (kfake.SyncWrites) in its
	// cluster goroutine instead of the group committer, and the
	// committer's observation hooks.
	perBatchFsync bool
	hooks         *testHooks
}

// New returns a broker for cfg.
func New(cfg Config, log *slog.Logger) *Broker {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Broker{cfg: cfg, log: log, met: newMetrics()}
}

// Describe and Collect make the broker a prometheus.Collector of its group
// committer's metrics (chat_broker_fsync_*); register it once.
func (b *Broker) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range b.met.collectors() {
		c.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (b *Broker) Collect(ch chan<- prometheus.Metric) {
	for _, c := range b.met.collectors() {
		c.Collect(ch)
	}
}

// SyncStats returns the group committer's counters (all zero without
// SyncWrites or DataDir).
func (b *Broker) SyncStats() SyncStats { return b.met.stats() }

// Name returns "broker".
func (b *Broker) Name() string { return "broker" }

// Start listens and loads the persisted log.
func (b *Broker) Start(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.c != nil {
		return errors.New("embedded broker already started")
	}
	addr := b.cfg.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var gc *committer
	listen := func(network, _ string) (net.Listener, error) { return net.Listen(network, addr) }
	opts := []kfake.Opt{kfake.NumBrokers(1), kfake.Ports(0), kfake.ClusterID("chat-embedded")}
	if b.cfg.DataDir != "" {
		opts = append(opts, kfake.DataDir(b.cfg.DataDir))
		switch {
		case b.perBatchFsync:
			opts = append(opts, kfake.SyncWrites())
		case b.cfg.SyncWrites:
			gc = newCommitter(b.cfg.DataDir, b.log, b.met, b.hooks)
			listen = func(network, _ string) (net.Listener, error) {
				ln, err := net.Listen(network, addr)
				if err != nil {
					return nil, err
				}
				return &listener{Listener: ln, gc: gc, log: b.log}, nil
			}
		}
	}
	opts = append(opts, kfake.ListenFn(listen))
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		if gc != nil {
			gc.stop()
		}
		return fmt.Errorf("start embedded broker on %s: %w", addr, err)
	}
	b.c = c
	b.gc = gc
	b.addr = c.ListenAddrs()[0]
	b.done = make(chan struct{})
	b.log.Info("embedded broker listening", "addr", b.addr, "data_dir", b.cfg.DataDir)
	return nil
}

// Addr returns the address the broker listens on; valid after Start.
func (b *Broker) Addr() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.addr
}

// Run blocks until ctx ends or Stop is called. It returns an error if an
// fsync failed: the broker then acknowledges no more writes, and only a
// restart, which reloads the log from disk, makes it usable again.
func (b *Broker) Run(ctx context.Context) error {
	b.mu.Lock()
	done, gc := b.done, b.gc
	b.mu.Unlock()
	var failed <-chan struct{}
	if gc != nil {
		failed = gc.failure()
	}
	select {
	case <-ctx.Done():
	case <-done:
	case <-failed:
		return fmt.Errorf("embedded broker cannot make writes durable, restart it: %w", gc.err())
	}
	return nil
}

// Stop closes the listener and flushes the log to disk. It may be called
// more than once; a stopped broker can be started again.
func (b *Broker) Stop(context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.c == nil {
		return nil
	}
	b.c.Close()
	b.c = nil
	close(b.done)
	if b.gc != nil {
		err := b.gc.stop()
		b.gc = nil
		if err != nil {
			return fmt.Errorf("sync embedded broker log: %w", err)
		}
	}
	return nil
}
