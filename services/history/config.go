package history

import (
	"errors"
	"flag"
	"time"

	"github.com/chatsys/chat/pkg/auth"
	"github.com/chatsys/chat/pkg/chatevent"
	"github.com/chatsys/chat/pkg/kafkaio"
)

// Config configures the history service. RegisterFlags registers the
// history.* flags; Kafka, JWT and the database URL are shared settings the
// command fills in.
type Config struct {
	Kafka       kafkaio.Config
	Auth        auth.Config
	DatabaseURL string

	// GroupID is the consumer group over the rooms and direct topics
	// (default chat-history).
	GroupID string
	// BatchSize and BatchWait bound one database write: at most BatchSize
	// records, collected for at most BatchWait after the first (defaults
	// 5000 and 100ms).
	BatchSize int
	BatchWait time.Duration
	// ReadyMaxLag is the consumer lag, in records summed over partitions,
	// above which /readyz reports not ready (default 10000).
	ReadyMaxLag int64
	// DBTimeout bounds one API request's database work, waiting for a
	// pooled connection included; it is also the statement_timeout of the
	// API's connections. Readiness probes the database with half of it
	// (default 2s).
	DBTimeout time.Duration
	// MaxContentChars bounds an edit's content in characters, as the
	// edges' -edge.max-content bounds a message's (default 4000).
	MaxContentChars int
}

// RegisterFlags registers the history.* flags.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.GroupID, "history.group", "chat-history", "consumer group of the history writer")
	fs.IntVar(&c.BatchSize, "history.batch-size", 5000, "most records written to the database in one transaction")
	fs.DurationVar(&c.BatchWait, "history.batch-wait", 100*time.Millisecond, "longest wait to fill a batch after its first record")
	fs.Int64Var(&c.ReadyMaxLag, "history.ready-max-lag", 10000, "consumer lag (records) above which /readyz is 503")
	fs.IntVar(&c.MaxContentChars, "history.max-content", chatevent.MaxContentChars, "longest edited content in characters (keep it equal to the edges' -edge.max-content; under -target=all the larger of the two applies)")
	fs.DurationVar(&c.DBTimeout, "history.db-timeout", 2*time.Second, "bound of an API request's database work (pool wait included; statement_timeout of API connections); readiness probes with half of it")
}

// Defaults returns a Config with the defaults of RegisterFlags.
func Defaults() Config {
	var c Config
	fs := flag.NewFlagSet("history", flag.ContinueOnError)
	c.RegisterFlags(fs)
	c.Kafka.RegisterFlags(fs)
	return c
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	var errs []error
	if c.DatabaseURL == "" {
		errs = append(errs, errors.New("history needs a database: set -database.url"))
	}
	if c.GroupID == "" {
		errs = append(errs, errors.New("history.group must not be empty"))
	}
	if c.BatchSize < 1 || c.BatchWait <= 0 {
		errs = append(errs, errors.New("history.batch-size and history.batch-wait must be positive"))
	}
	if c.MaxContentChars < 1 {
		errs = append(errs, errors.New("history.max-content must be positive"))
	}
	if c.DBTimeout <= 0 {
		errs = append(errs, errors.New("history.db-timeout must be positive"))
	}
	if err := c.Kafka.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
