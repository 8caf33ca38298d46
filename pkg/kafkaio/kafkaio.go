// Package kafkaio holds the Kafka client settings every service shares:
// broker addresses, topic layout, writer and reader construction with
// kafka-go, topic creation, and W3C trace context in record headers.
package kafkaio

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/chatsys/chat/pkg/chatevent"
)

// Config is the shared Kafka configuration.
type Config struct {
	// Brokers is a comma-separated list of host:port. Empty means the
	// embedded broker of single-machine mode (its -broker.addr).
	Brokers string
	// RoomsTopic is the topic of room events (default chat.rooms).
	RoomsTopic string
	// DirectTopic is the topic of private messages (default chat.direct).
	DirectTopic string
	// DirectPartitions is the partition count of DirectTopic when created (default 12).
	DirectPartitions int
	// PresenceTopic and DeliveriesTopic carry presence and private-message
	// deliveries (defaults chat.presence, chat.deliveries), each created
	// with SmallPartitions partitions (default 12).
	PresenceTopic   string
	DeliveriesTopic string
	SmallPartitions int
	// ACLTopic carries rooms, memberships and blocks (default chat.acl;
	// created with one partition, compacted); TypingTopic typing notices
	// (default chat.typing; SmallPartitions, one minute of retention).
	ACLTopic    string
	TypingTopic string
	// RoomsPartitions is the partition count of chat.rooms when this process
	// creates it (default 12). An existing topic keeps its count.
	RoomsPartitions int
	// ReplicationFactor of created topics (default 1; use 3 on a cluster).
	ReplicationFactor int
	// Retention of created topics (default 168h; 0 keeps forever).
	Retention time.Duration
	// WriteTimeout bounds one produce attempt (default 5s); a write makes up
	// to 3 attempts before it fails.
	WriteTimeout time.Duration
	// BatchTimeout is how long the writers made by NewWriter wait to fill a
	// batch (default 250µs; kafka-go's own default of 1s would add a second
	// to every message).
	BatchTimeout time.Duration
}

// RegisterFlags registers the kafka.* flags.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Brokers, "kafka.brokers", "", "comma-separated Kafka bootstrap brokers; empty uses the embedded broker at -broker.addr")
	fs.StringVar(&c.RoomsTopic, "kafka.topic-rooms", chatevent.TopicRooms, "topic of room events")
	fs.StringVar(&c.DirectTopic, "kafka.topic-direct", chatevent.TopicDirect, "topic of private messages")
	fs.IntVar(&c.DirectPartitions, "kafka.direct-partitions", 12, "partitions of the private-message topic when it is created")
	fs.StringVar(&c.PresenceTopic, "kafka.topic-presence", chatevent.TopicPresence, "topic of presence events")
	fs.StringVar(&c.DeliveriesTopic, "kafka.topic-deliveries", chatevent.TopicDeliveries, "topic of private-message deliveries to edges")
	fs.StringVar(&c.ACLTopic, "kafka.topic-acl", chatevent.TopicACL, "topic of rooms, memberships and blocks (compacted)")
	fs.StringVar(&c.TypingTopic, "kafka.topic-typing", chatevent.TopicTyping, "topic of typing notices (short retention, not fsynced)")
	fs.IntVar(&c.SmallPartitions, "kafka.presence-partitions", 12, "partitions of the presence and deliveries topics when they are created")
	fs.IntVar(&c.RoomsPartitions, "kafka.rooms-partitions", 12, "partitions of chat.rooms when it is created")
	fs.IntVar(&c.ReplicationFactor, "kafka.replication-factor", 1, "replication factor of created topics")
	fs.DurationVar(&c.Retention, "kafka.retention", 7*24*time.Hour, "retention of created topics (0 = forever)")
	fs.DurationVar(&c.WriteTimeout, "kafka.write-timeout", 5*time.Second, "deadline of one produce attempt to the broker (a write makes up to 3 attempts)")
	fs.DurationVar(&c.BatchTimeout, "kafka.batch-timeout", 250*time.Microsecond, "how long the producer waits to fill a batch")
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	if len(c.BrokerList()) == 0 {
		return errors.New("kafka.brokers: no broker address")
	}
	if c.RoomsTopic == "" || c.DirectTopic == "" {
		return errors.New("kafka.topic-rooms and kafka.topic-direct must not be empty")
	}
	if c.PresenceTopic == "" || c.DeliveriesTopic == "" || c.SmallPartitions < 1 {
		return errors.New("kafka.topic-presence, kafka.topic-deliveries and kafka.presence-partitions must be set")
	}
	if c.ACLTopic == "" || c.TypingTopic == "" {
		return errors.New("kafka.topic-acl and kafka.topic-typing must not be empty")
	}
	if c.DirectPartitions < 1 {
		return errors.New("kafka.direct-partitions must be at least 1")
	}
	if c.RoomsPartitions < 1 {
		return errors.New("kafka.rooms-partitions must be at least 1")
	}
	if c.WriteTimeout <= 0 || c.BatchTimeout <= 0 {
		return errors.New("kafka.write-timeout and kafka.batch-timeout must be positive")
	}
	return nil
}

// BrokerList returns Brokers split on commas, blanks dropped.
func (c *Config) BrokerList() []string {
	var out []string
	for _, b := range strings.Split(c.Brokers, ",") {
		if b = strings.TrimSpace(b); b != "" {
			out = append(out, b)
		}
	}
	return out
}

// AllTopics returns the specs of every chat topic.
func (c *Config) AllTopics() []TopicSpec {
	return []TopicSpec{
		{Name: c.RoomsTopic, Partitions: c.RoomsPartitions},
		{Name: c.DirectTopic, Partitions: c.DirectPartitions},
		{Name: c.PresenceTopic, Partitions: c.SmallPartitions},
		{Name: c.DeliveriesTopic, Partitions: c.SmallPartitions},
		{Name: c.ACLTopic, Partitions: 1, Configs: map[string]string{"cleanup.policy": "compact"}},
		// Retention applies to closed segments: roll them as often.
		{Name: c.TypingTopic, Partitions: c.SmallPartitions, Configs: map[string]string{"retention.ms": strconv.Itoa(typingRetentionMS), "segment.ms": strconv.Itoa(typingRetentionMS)}},
	}
}

// typingRetentionMS is chat.typing's retention: a notice is worth seconds.
const typingRetentionMS = 60_000

// Balancer is the partitioner of every writer: murmur2 of the key, as the
// Java client, so every producer agrees on a key's partition.
func Balancer() kafka.Balancer { return &kafka.Murmur2Balancer{} }

// PartitionFor returns the partition Balancer picks for key among n.
func PartitionFor(key string, n int) int {
	ps := make([]int, n)
	for i := range ps {
		ps[i] = i
	}
	return Balancer().Balance(kafka.Message{Key: []byte(key)}, ps...)
}

// NewWriter returns a synchronous writer that waits for all in-sync replicas
// (RequireAll) and batches concurrent writes for at most BatchTimeout. The
// caller closes it.
func (c *Config) NewWriter(topic string) *kafka.Writer {
	return &kafka.Writer{
		Addr:                   kafka.TCP(c.BrokerList()...),
		Topic:                  topic,
		Balancer:               Balancer(),
		RequiredAcks:           kafka.RequireAll,
		BatchTimeout:           c.BatchTimeout,
		BatchSize:              100, // kafka-go allocates room for a full batch per batch: keep it modest
		WriteTimeout:           c.WriteTimeout,
		ReadTimeout:            c.WriteTimeout,
		MaxAttempts:            3,
		WriteBackoffMin:        50 * time.Millisecond,
		WriteBackoffMax:        500 * time.Millisecond,
		AllowAutoTopicCreation: false,
	}
}

// Client returns a kafka-go client for metadata and offset requests.
func (c *Config) Client() *kafka.Client {
	return &kafka.Client{Addr: kafka.TCP(c.BrokerList()...), Timeout: 10 * time.Second}
}

// TopicSpec describes a topic to create.
type TopicSpec struct {
	Name       string
	Partitions int
	// Configs are topic configs set at creation; without retention.ms or
	// cleanup.policy the Config's Retention applies.
	Configs map[string]string
}

// EnsureTopics creates the topics that do not exist yet and returns the
// partition count of each (an existing topic keeps its own). It retries
// until ctx ends so a broker that is still starting is waited for.
func (c *Config) EnsureTopics(ctx context.Context, specs ...TopicSpec) (map[string]int, error) {
	cl := c.Client()
	b := backoff.NewExponentialBackOff()
	b.InitialInterval, b.MaxInterval, b.Multiplier, b.RandomizationFactor = 100*time.Millisecond, 1600*time.Millisecond, 2, 0.5
	var lastErr error
	counts, err := backoff.Retry(ctx, func() (map[string]int, error) {
		counts, err := c.ensureOnce(ctx, cl, specs)
		if err != nil {
			lastErr = err
		}
		return counts, err
	}, backoff.WithBackOff(b), backoff.WithMaxElapsedTime(0))
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("ensure topics: %w (last error: %v)", ctx.Err(), lastErr)
		}
		return nil, fmt.Errorf("ensure topics: %w", err)
	}
	return counts, nil
}

func (c *Config) ensureOnce(ctx context.Context, cl *kafka.Client, specs []TopicSpec) (map[string]int, error) {
	names := make([]string, len(specs))
	for i, s := range specs {
		names[i] = s.Name
	}
	md, err := cl.Metadata(ctx, &kafka.MetadataRequest{Topics: names})
	if err != nil {
		return nil, fmt.Errorf("metadata: %w", err)
	}
	counts := map[string]int{}
	for _, t := range md.Topics {
		if t.Error == nil && len(t.Partitions) > 0 {
			counts[t.Name] = len(t.Partitions)
		}
	}
	var create []kafka.TopicConfig
	for _, s := range specs {
		if _, ok := counts[s.Name]; ok {
			continue
		}
		tc := kafka.TopicConfig{Topic: s.Name, NumPartitions: s.Partitions, ReplicationFactor: max(c.ReplicationFactor, 1)}
		_, ownRetention := s.Configs["retention.ms"]
		_, compact := s.Configs["cleanup.policy"]
		if c.Retention > 0 && !ownRetention && !compact {
			tc.ConfigEntries = []kafka.ConfigEntry{{ConfigName: "retention.ms", ConfigValue: strconv.FormatInt(c.Retention.Milliseconds(), 10)}}
		}
		for _, k := range slices.Sorted(maps.Keys(s.Configs)) {
			tc.ConfigEntries = append(tc.ConfigEntries, kafka.ConfigEntry{ConfigName: k, ConfigValue: s.Configs[k]})
		}
		create = append(create, tc)
	}
	if len(create) == 0 {
		return counts, nil
	}
	res, err := cl.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: create})
	if err != nil {
		return nil, fmt.Errorf("create topics: %w", err)
	}
	for name, e := range res.Errors {
		if e != nil && !errors.Is(e, kafka.TopicAlreadyExists) {
			return nil, fmt.Errorf("create topic %s: %w", name, e)
		}
	}
	return nil, errors.New("topics created; re-reading metadata")
}

// Offsets returns the first and the next (high watermark) offset of a
// partition: the log holds offsets [first, next).
//
// A failed request is tried up to three times: right after a broker
// restarts, a pooled connection to its old process fails once (EOF).
func (c *Config) Offsets(ctx context.Context, topic string, partition int) (first, next int64, err error) {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval, b.MaxInterval = 50*time.Millisecond, 500*time.Millisecond
	both, err := backoff.Retry(ctx, func() ([2]int64, error) {
		f, n, err := c.offsetsOnce(ctx, topic, partition)
		return [2]int64{f, n}, err
	}, backoff.WithBackOff(b), backoff.WithMaxTries(3), backoff.WithMaxElapsedTime(0))
	return both[0], both[1], err
}

func (c *Config) offsetsOnce(ctx context.Context, topic string, partition int) (first, next int64, err error) {
	res, err := c.Client().ListOffsets(ctx, &kafka.ListOffsetsRequest{
		Topics: map[string][]kafka.OffsetRequest{topic: {kafka.FirstOffsetOf(partition), kafka.LastOffsetOf(partition)}},
	})
	if err != nil {
		return 0, 0, fmt.Errorf("list offsets %s/%d: %w", topic, partition, err)
	}
	for _, p := range res.Topics[topic] {
		if p.Partition != partition {
			continue
		}
		if p.Error != nil {
			return 0, 0, fmt.Errorf("list offsets %s/%d: %w", topic, partition, p.Error)
		}
		return p.FirstOffset, p.LastOffset, nil
	}
	return 0, 0, fmt.Errorf("list offsets %s/%d: partition missing from response", topic, partition)
}

// Reachable reports whether a broker answers a request (ApiVersions)
// within a second; it backs readiness checks. (A dial alone succeeds
// against a broker that is frozen: the kernel accepts the connection.)
func (c *Config) Reachable(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	err := errors.New("no brokers configured")
	for _, b := range c.BrokerList() {
		cl := &kafka.Client{Addr: kafka.TCP(b), Timeout: time.Second}
		if _, err = cl.ApiVersions(ctx, &kafka.ApiVersionsRequest{Addr: kafka.TCP(b)}); err == nil {
			return nil
		}
		err = fmt.Errorf("broker %s does not answer: %w", b, err)
	}
	return err
}

// HeaderCarrier adapts record headers to OpenTelemetry propagation, so a
// producer's span context travels as "traceparent"/"tracestate" headers.
type HeaderCarrier struct{ Headers *[]kafka.Header }

var _ propagation.TextMapCarrier = HeaderCarrier{}

// Get returns the value of header key.
func (h HeaderCarrier) Get(key string) string {
	for _, x := range *h.Headers {
		if x.Key == key {
			return string(x.Value)
		}
	}
	return ""
}

// Set replaces or adds header key.
func (h HeaderCarrier) Set(key, value string) {
	for i, x := range *h.Headers {
		if x.Key == key {
			(*h.Headers)[i].Value = []byte(value)
			return
		}
	}
	*h.Headers = append(*h.Headers, kafka.Header{Key: key, Value: []byte(value)})
}

// Keys lists the header keys.
func (h HeaderCarrier) Keys() []string {
	out := make([]string, len(*h.Headers))
	for i, x := range *h.Headers {
		out[i] = x.Key
	}
	return out
}

// SampledTraceContext returns the trace context a record's producer put in
// its headers when it is a sampled one, for a consumer span continuing the
// trace. A record without a traceparent header (tracing was off where it
// was produced) costs a header scan and no allocation.
func SampledTraceContext(m *kafka.Message) (context.Context, bool) {
	has := false
	for _, h := range m.Headers {
		if h.Key == "traceparent" {
			has = true
			break
		}
	}
	if !has {
		return nil, false
	}
	pctx := otel.GetTextMapPropagator().Extract(context.Background(), HeaderCarrier{Headers: &m.Headers})
	if !trace.SpanContextFromContext(pctx).IsSampled() {
		return nil, false
	}
	return pctx, true
}

// GroupLag returns, for every partition of each topic (topic → partition
// count), how many records lie between group's committed offset and the
// partition's end; from the partition's first offset where the group has
// committed none. It reads the broker, not a consumer's last fetch, so it
// grows while the group is stalled and is the same whichever member asks.
func (c *Config) GroupLag(ctx context.Context, group string, topics map[string]int) (map[string]map[int]int64, error) {
	cl := c.Client()
	fetch := &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{}}
	list := &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{}}
	for t, n := range topics {
		for p := range n {
			fetch.Topics[t] = append(fetch.Topics[t], p)
			list.Topics[t] = append(list.Topics[t], kafka.FirstOffsetOf(p), kafka.LastOffsetOf(p))
		}
	}
	committed, err := cl.OffsetFetch(ctx, fetch)
	if err != nil {
		return nil, fmt.Errorf("fetch committed offsets of %s: %w", group, err)
	}
	if committed.Error != nil && !errors.Is(committed.Error, kafka.GroupIdNotFound) {
		return nil, fmt.Errorf("fetch committed offsets of %s: %w", group, committed.Error)
	}
	ends, err := cl.ListOffsets(ctx, list)
	if err != nil {
		return nil, fmt.Errorf("list offsets: %w", err)
	}
	at := map[string]map[int]int64{}
	for t, ps := range committed.Topics {
		at[t] = map[int]int64{}
		for _, p := range ps {
			if p.Error == nil && p.CommittedOffset >= 0 {
				at[t][p.Partition] = p.CommittedOffset
			}
		}
	}
	lag := map[string]map[int]int64{}
	for t, ps := range ends.Topics {
		lag[t] = map[int]int64{}
		for _, p := range ps {
			if p.Error != nil {
				return nil, fmt.Errorf("list offsets %s/%d: %w", t, p.Partition, p.Error)
			}
			from, ok := at[t][p.Partition]
			if !ok || from < p.FirstOffset {
				from = p.FirstOffset // nothing committed, or retention passed it
			}
			lag[t][p.Partition] = max(p.LastOffset-from, 0)
		}
	}
	return lag, nil
}
