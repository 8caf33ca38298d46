// Package chatacl keeps a process's copy of the conversation state of
// chat.acl (rooms, memberships, blocks): a Follower reads the topic from its
// start before the process serves anything, then follows it, so every edge,
// router and history instance enforces the same state and a restarted one
// rebuilds it.
package chatacl

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/chatsys/chat/pkg/chatevent"
	"github.com/chatsys/chat/pkg/kafkaio"
)

// Follower folds chat.acl into a chatevent.ACL.
type Follower struct {
	k   kafkaio.Config
	log *slog.Logger
	acl *chatevent.ACL

	// OnApply, when set before Start, is called after each record is
	// applied, on the follower's goroutine (also during the initial load).
	OnApply func(chatevent.ACLRecord)

	mu      sync.Mutex
	changed chan struct{} // closed and replaced whenever applied advances
	applied map[int]int64 // partition → next offset to apply
	readers []*kafka.Reader
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	bad     func() // counts a record that does not decode (may be nil)

	syncSlots chan struct{} // SyncBriefly calls in flight
}

// New returns a follower of k's ACL topic; it does no I/O until Start.
// onBad, when not nil, is called for each record that does not decode (it
// is skipped).
func New(k kafkaio.Config, log *slog.Logger, onBad func()) *Follower {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Follower{k: k, log: log, acl: chatevent.NewACL(), changed: make(chan struct{}), applied: map[int]int64{}, bad: onBad,
		syncSlots: make(chan struct{}, maxBriefSyncs)}
}

// ACL returns the state (always the same value).
func (f *Follower) ACL() *chatevent.ACL { return f.acl }

// Start reads the topic (which must exist) up to its current end, then
// keeps following it in the background until Close.
func (f *Follower) Start(ctx context.Context) error {
	md, err := f.k.Client().Metadata(ctx, &kafka.MetadataRequest{Topics: []string{f.k.ACLTopic}})
	if err != nil {
		return fmt.Errorf("acl: metadata of %s: %w", f.k.ACLTopic, err)
	}
	if len(md.Topics) != 1 || md.Topics[0].Error != nil || len(md.Topics[0].Partitions) == 0 {
		return fmt.Errorf("acl: topic %s has no partitions", f.k.ACLTopic)
	}
	n := len(md.Topics[0].Partitions)
	rctx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel // Close cancels the readers' goroutines
	for p := range n {
		first, _, err := f.k.Offsets(ctx, f.k.ACLTopic, p)
		if err != nil {
			f.Close()
			return fmt.Errorf("acl: %w", err)
		}
		f.mu.Lock()
		f.applied[p] = first
		f.mu.Unlock()
		rd := kafka.NewReader(kafka.ReaderConfig{Brokers: f.k.BrokerList(), Topic: f.k.ACLTopic, Partition: p,
			MinBytes: 1, MaxBytes: 4 << 20, MaxWait: 500 * time.Millisecond, ReadLagInterval: -1, MaxAttempts: 1 << 30})
		if err := rd.SetOffset(first); err != nil {
			rd.Close()
			f.Close()
			return fmt.Errorf("acl: %w", err)
		}
		f.mu.Lock()
		f.readers = append(f.readers, rd)
		f.mu.Unlock()
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			f.follow(rctx, p, rd)
		}()
	}
	if err := f.Sync(ctx); err != nil {
		f.Close()
		return fmt.Errorf("acl: loading %s: %w", f.k.ACLTopic, err)
	}
	return nil
}

func (f *Follower) follow(ctx context.Context, p int, rd *kafka.Reader) {
	for {
		m, err := kafkaio.Fetch(ctx, rd, func() bool { return ctx.Err() != nil }, func(err error, wait time.Duration) {
			f.log.Warn("reading the acl topic failed; retrying", "partition", p, "err", err, "retry_in", wait)
		})
		if err != nil {
			return
		}
		if r, err := chatevent.DecodeACL(m.Value); err != nil {
			f.log.Warn("skipping an acl record that does not decode", "partition", p, "offset", m.Offset, "err", err)
			if f.bad != nil {
				f.bad()
			}
		} else {
			f.acl.Apply(r)
			if f.OnApply != nil {
				f.OnApply(r)
			}
		}
		f.mu.Lock()
		f.applied[p] = m.Offset + 1
		close(f.changed)
		f.changed = make(chan struct{})
		f.mu.Unlock()
	}
}

// Sync waits until every record appended to the topic before the call has
// been applied: read-your-writes for a caller that just appended one, or
// that is about to refuse something on the strength of the state.
func (f *Follower) Sync(ctx context.Context) error {
	ends := map[int]int64{}
	f.mu.Lock()
	parts := len(f.applied)
	f.mu.Unlock()
	for p := range parts {
		_, next, err := f.k.Offsets(ctx, f.k.ACLTopic, p)
		if err != nil {
			return err
		}
		ends[p] = next
	}
	for {
		f.mu.Lock()
		behind := false
		for p, end := range ends {
			if f.applied[p] < end {
				behind = true
			}
		}
		ch := f.changed
		f.mu.Unlock()
		if !behind {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// SyncBriefly is Sync bounded by d: the state a refusal rests on is at
// most that stale. It reports whether the sync completed. At most
// maxBriefSyncs run at once (each asks the broker for the topic's end): a
// flood of refused requests does not become a flood of broker requests;
// beyond it a refusal rests on the state as it is.
func (f *Follower) SyncBriefly(ctx context.Context, d time.Duration) bool {
	select {
	case f.syncSlots <- struct{}{}:
		defer func() { <-f.syncSlots }()
	default:
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	return f.Sync(ctx) == nil
}

// maxBriefSyncs bounds the SyncBriefly calls in flight.
const maxBriefSyncs = 8

// Close stops following.
func (f *Follower) Close() error {
	if f.cancel != nil {
		f.cancel()
	}
	f.mu.Lock()
	readers := f.readers
	f.mu.Unlock()
	var errs []error
	for _, rd := range readers {
		errs = append(errs, rd.Close())
	}
	f.wg.Wait()
	return errors.Join(errs...)
}

// Stats returns kafka-go's statistics of the follower's readers, one per
// partition (none before Start), for observe.NewKafkaReaderCollector,
// which must be their only caller.
func (f *Follower) Stats() []kafka.ReaderStats {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]kafka.ReaderStats, 0, len(f.readers))
	for _, rd := range f.readers {
		out = append(out, rd.Stats())
	}
	return out
}

// Appender appends chat.acl records and waits until the local follower has
// applied them.
type Appender struct {
	w *kafka.Writer
	f *Follower
}

// NewAppender returns an appender writing k's ACL topic, reading its own
// writes through f.
func NewAppender(k kafkaio.Config, f *Follower) *Appender {
	return &Appender{w: k.NewWriter(k.ACLTopic), f: f}
}

// Append writes records durably and returns once f has applied them.
func (a *Appender) Append(ctx context.Context, recs ...chatevent.ACLRecord) error {
	msgs := make([]kafka.Message, len(recs))
	for i := range recs {
		if recs[i].Timestamp == "" {
			recs[i].Timestamp = chatevent.FormatTime(time.Now())
		}
		msgs[i] = kafka.Message{Key: []byte(recs[i].Key()), Value: recs[i].Encode(),
			Headers: []kafka.Header{{Key: chatevent.HeaderSchema, Value: []byte("1")}}}
	}
	if err := a.w.WriteMessages(ctx, msgs...); err != nil {
		return err
	}
	return a.f.Sync(ctx)
}

// Close closes the writer.
func (a *Appender) Close() error { return a.w.Close() }

// Stats returns kafka-go's statistics of the appender's writer, for
// observe.NewKafkaWriterCollector, which must be their only caller.
func (a *Appender) Stats() kafka.WriterStats { return a.w.Stats() }
