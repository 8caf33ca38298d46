package embedkafka

import (
	"context"
	"errors"
	"io/fs"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kgo"
)

// recorder keeps the committer's rounds and releases.
type recorder struct {
	mu       sync.Mutex
	rounds   map[uint64]roundEvent
	releases []releaseEvent
}

func newRecorder() (*recorder, *testHooks) {
	r := &recorder{rounds: make(map[uint64]roundEvent)}
	h := &testHooks{
		onRound: func(e roundEvent) {
			r.mu.Lock()
			r.rounds[e.Seq] = e
			r.mu.Unlock()
		},
		onRelease: func(e releaseEvent) {
			r.mu.Lock()
			r.releases = append(r.releases, e)
			r.mu.Unlock()
		},
	}
	return r, h
}

// TestGroupCommitCoversEveryAcknowledgement runs many concurrent kafka-go
// producers (acks=all) against a real broker over real sockets, on two
// topics, one with 4 KiB segments so that segments roll under load, and
// checks from the committer's own record of what it did:
//
//   - every held response was released only after a round that started
//     after the response was written (and so after kfake wrote the batch)
//     had finished without error;
//   - every byte of every segment and index file in the data directory was
//     covered by a finished round: some round fdatasynced the file when it
//     already had its final size (rolled segments included);
//   - the rounds are far fewer than the batches (group commit happens).
//
// What it cannot prove: that fdatasync(2) itself reached the platters — it
// trusts the kernel's return value, as every database does.
func TestGroupCommitCoversEveryAcknowledgement(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	dir := t.TempDir()
	rec, h := newRecorder()
	b := startHooked(t, dir, h)
	if err := CreateTopic(ctx, b.Addr(), "gc.small-segments", 6, map[string]string{"segment.bytes": "4096"}); err != nil {
		t.Fatal(err)
	}
	if err := CreateTopic(ctx, b.Addr(), "gc.plain", 3, nil); err != nil {
		t.Fatal(err)
	}
	const producers, each = 40, 40
	res, err := ProduceSync(ctx, b.Addr(), []string{"gc.small-segments", "gc.plain"}, producers, each, 100)
	if err != nil {
		t.Fatal(err)
	}
	st := b.SyncStats()
	t.Logf("%d records acknowledged in %v; %d rounds covered %d batches (%d responses), %d fdatasyncs",
		res.Messages, res.Elapsed, st.Rounds, st.Batches, st.Responses, st.Files)

	rec.mu.Lock()
	defer rec.mu.Unlock()
	produces := 0
	for _, e := range rec.releases {
		r, ok := rec.rounds[e.Round]
		if !ok {
			t.Fatalf("response %d released by unknown round %d", e.Corr, e.Round)
		}
		if r.Err != nil {
			t.Fatalf("response %d released by failed round %d: %v", e.Corr, e.Round, r.Err)
		}
		if !(e.WriteEv < r.StartEv && r.StartEv < r.EndEv && r.EndEv < e.ReleaseEv) {
			t.Fatalf("response %d (key %d): write at event %d, round %d ran %d..%d, released at %d: want write < round start < round end < release",
				e.Corr, e.Key, e.WriteEv, e.Round, r.StartEv, r.EndEv, e.ReleaseEv)
		}
		if e.Key == keyProduce {
			produces++
			// Each partition the produce wrote to was synced by its round.
			for _, p := range e.Parts {
				if !roundSynced(r, filepath.Join(dir, "partitions", p)) {
					t.Fatalf("round %d released a produce to %s without syncing that partition: %v", r.Seq, p, r.Files)
				}
			}
		}
	}
	if produces < res.Messages+producers {
		t.Fatalf("%d produce responses released through rounds, want at least %d", produces, res.Messages+producers)
	}

	// Every byte of the log was synced by a finished round.
	synced := make(map[string]int64) // path -> largest size seen at a successful sync
	for _, r := range rec.rounds {
		if r.Err != nil {
			continue
		}
		for _, f := range r.Files {
			synced[f.path] = max(synced[f.path], f.size)
		}
	}
	files, rolled := 0, 0
	err = filepath.WalkDir(filepath.Join(dir, "partitions"), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !(strings.HasSuffix(path, ".dat") || strings.HasSuffix(path, ".idx")) {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		files++
		if strings.Contains(path, "gc.small-segments") && !strings.HasSuffix(path, "/0.dat") && strings.HasSuffix(path, ".dat") {
			rolled++
		}
		if got, ok := synced[path]; !ok || got != fi.Size() {
			t.Errorf("%s: %d bytes on disk, largest size synced by a round %d (synced: %v)", path, fi.Size(), got, ok)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if rolled == 0 {
		t.Fatalf("no segment rolled; the test does not cover rolls")
	}
	t.Logf("%d segment and index files checked, %d segments beyond the first on the small-segment topic", files, rolled)

	if st.Batches < int64(res.Messages) {
		t.Fatalf("rounds covered %d batches, want at least %d", st.Batches, res.Messages)
	}
	if st.Rounds*3 > st.Batches {
		t.Fatalf("%d rounds for %d batches: group commit is not grouping (want at least 3 batches per round on average)", st.Rounds, st.Batches)
	}
}

func roundSynced(r roundEvent, pdir string) bool {
	for _, f := range r.Files {
		if filepath.Dir(f.path) == pdir && strings.HasSuffix(f.path, ".dat") {
			return true
		}
	}
	return false
}

// TestOffsetCommitWaitsForGroupsLog checks that a consumer group's offset
// commit is acknowledged only after a round synced groups.log.
func TestOffsetCommitWaitsForGroupsLog(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	rec, h := newRecorder()
	b := startHooked(t, dir, h)
	if err := CreateTopic(ctx, b.Addr(), "gc.commits", 1, nil); err != nil {
		t.Fatal(err)
	}
	w := &kafka.Writer{Addr: kafka.TCP(b.Addr()), Topic: "gc.commits", RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond}
	defer w.Close()
	if err := w.WriteMessages(ctx, kafka.Message{Value: []byte("a")}, kafka.Message{Value: []byte("b")}); err != nil {
		t.Fatal(err)
	}
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: []string{b.Addr()}, Topic: "gc.commits", GroupID: "gc-group", MaxWait: 100 * time.Millisecond, StartOffset: kafka.FirstOffset})
	defer r.Close()
	m, err := r.FetchMessage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.CommitMessages(ctx, m); err != nil {
		t.Fatal(err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	found := false
	for _, e := range rec.releases {
		if e.Key != keyOffsetCommit {
			continue
		}
		found = true
		round := rec.rounds[e.Round]
		ok := false
		for _, f := range round.Files {
			ok = ok || f.path == filepath.Join(dir, "groups.log")
		}
		if !ok || !(e.WriteEv < round.StartEv && round.EndEv < e.ReleaseEv) {
			t.Fatalf("offset commit released by round %+v without a covering sync of groups.log", round)
		}
	}
	if !found {
		t.Fatal("no offset commit response went through a round")
	}
}

// TestFsyncFailureIsNotAcknowledged injects an fsync error (EIO) into the
// committer: the held produce must not be acknowledged (the client sees a
// broken connection), no later write may be acknowledged either (after a
// failed fsync the page cache may have dropped the data, so a later fsync
// proves nothing), and Run reports the failure.
func TestFsyncFailureIsNotAcknowledged(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	var fail atomic.Bool
	h := &testHooks{syncErr: func(path string) error {
		if fail.Load() && strings.Contains(path, string(filepath.Separator)+"partitions"+string(filepath.Separator)) {
			return syscall.EIO
		}
		return nil
	}}
	b := startHooked(t, dir, h)
	runErr := make(chan error, 1)
	go func() { runErr <- b.Run(context.Background()) }()
	if err := CreateTopic(ctx, b.Addr(), "gc.fail", 2, nil); err != nil {
		t.Fatal(err)
	}
	w := &kafka.Writer{Addr: kafka.TCP(b.Addr()), Topic: "gc.fail", RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond, MaxAttempts: 2, WriteTimeout: 10 * time.Second}
	defer w.Close()
	if err := w.WriteMessages(ctx, kafka.Message{Value: []byte("before")}); err != nil {
		t.Fatalf("produce before the fault: %v", err)
	}
	fail.Store(true)
	if err := w.WriteMessages(ctx, kafka.Message{Value: []byte("during")}); err == nil {
		t.Fatal("produce acknowledged although its fsync failed")
	} else {
		t.Logf("produce during the fault: %v", err)
	}
	select {
	case err := <-runErr:
		if err == nil || !errors.Is(err, syscall.EIO) {
			t.Fatalf("Run returned %v, want an error wrapping EIO", err)
		}
	case <-ctx.Done():
		t.Fatal("Run did not report the failed fsync")
	}
	fail.Store(false)
	if err := w.WriteMessages(ctx, kafka.Message{Value: []byte("after")}); err == nil {
		t.Fatal("produce acknowledged after a failed fsync without a restart")
	}
	if st := b.SyncStats(); st.Errors == 0 {
		t.Fatalf("SyncStats.Errors = 0 after a failed fsync: %+v", st)
	}
	// Stop reports the failure too, and a restart recovers.
	if err := b.Stop(ctx); err == nil {
		t.Fatal("Stop after a failed fsync returned nil")
	}
	b2 := startHooked(t, dir, nil)
	w2 := &kafka.Writer{Addr: kafka.TCP(b2.Addr()), Topic: "gc.fail", RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond}
	defer w2.Close()
	if err := w2.WriteMessages(ctx, kafka.Message{Value: []byte("restarted")}); err != nil {
		t.Fatalf("produce after restart: %v", err)
	}
}

// TestProduceByTopicID uses franz-go's client, which produces with request
// v13 (topics named by id, KIP-516): the wrapper learns ids from metadata
// responses and syncs just the partitions written, not every partition.
func TestProduceByTopicID(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	rec, h := newRecorder()
	b := startHooked(t, dir, h)
	if err := CreateTopic(ctx, b.Addr(), "gc.byid", 3, nil); err != nil {
		t.Fatal(err)
	}
	if err := CreateTopic(ctx, b.Addr(), "gc.other", 3, nil); err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()), kgo.RequiredAcks(kgo.AllISRAcks()), kgo.DefaultProduceTopic("gc.byid"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for i := range 10 {
		if err := cl.ProduceSync(ctx, &kgo.Record{Partition: int32(i % 3), Value: []byte("x")}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	byID := 0
	for _, e := range rec.releases {
		if e.Key != keyProduce {
			continue
		}
		if e.All {
			t.Fatalf("produce synced every partition: its topic id was not resolved (%+v)", e)
		}
		for _, p := range e.Parts {
			if !strings.HasPrefix(p, "gc.byid-") {
				t.Fatalf("produce to gc.byid synced %s", p)
			}
		}
		byID += e.ByID
	}
	if byID == 0 {
		t.Fatal("no produce named its topic by id; the client did not use produce v13")
	}
}
