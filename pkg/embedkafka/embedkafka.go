// Package embedkafka runs an in-process Kafka-protocol broker
// (github.com/twmb/franz-go/pkg/kfake) for single-machine mode and tests.
// It persists its log under a data directory, so a restart keeps every
// record, and listens on a TCP address other processes can use.
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

	"github.com/twmb/franz-go/pkg/kfake"
)

// Config configures the embedded broker.
type Config struct {
	// Addr is the listen address (default 127.0.0.1:9092; port 0 picks one).
	Addr string
	// DataDir is the log directory. Empty keeps the log in memory only.
	DataDir string
	// SyncWrites fsyncs every produced batch before it is acknowledged
	// (default true), so an acknowledged message survives a machine crash,
	// not only a process crash.
	SyncWrites bool
}

// RegisterFlags registers the broker.* flags. The data directory is derived
// from -data.dir by the caller.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Addr, "broker.addr", "127.0.0.1:9092", "listen address of the embedded Kafka-protocol broker")
	fs.BoolVar(&c.SyncWrites, "broker.sync-writes", true, "fsync each produced batch before acknowledging it")
}

// DataDirUnder returns the broker's log directory under a data directory.
func DataDirUnder(dataDir string) string { return filepath.Join(dataDir, "kafka") }

// Broker is the embedded broker. Create it with New; it does no I/O until Start.
type Broker struct {
	cfg  Config
	log  *slog.Logger
	mu   sync.Mutex
	c    *kfake.Cluster
	addr string
	done chan struct{}
}

// New returns a broker for cfg.
func New(cfg Config, log *slog.Logger) *Broker {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Broker{cfg: cfg, log: log}
}

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
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.Ports(0),
		kfake.ListenFn(func(network, _ string) (net.Listener, error) { return net.Listen(network, addr) }),
		kfake.ClusterID("chat-embedded"),
	}
	if b.cfg.DataDir != "" {
		opts = append(opts, kfake.DataDir(b.cfg.DataDir))
		if b.cfg.SyncWrites {
			opts = append(opts, kfake.SyncWrites())
		}
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return fmt.Errorf("start embedded broker on %s: %w", addr, err)
	}
	b.c = c
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

// Run blocks until ctx ends or Stop is called.
func (b *Broker) Run(ctx context.Context) error {
	b.mu.Lock()
	done := b.done
	b.mu.Unlock()
	select {
	case <-ctx.Done():
	case <-done:
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
	return nil
}
