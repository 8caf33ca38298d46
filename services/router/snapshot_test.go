package router

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/chatsys/chat/pkg/chatevent"
	"github.com/chatsys/chat/pkg/kafkaio"
)

// digest describes a table's state (not when edges were last heard from or
// users last seen, which is each router's own clock for live records).
func digest(tb *table) string {
	tb.mu.RLock()
	defer tb.mu.RUnlock()
	var lines []string
	for id, e := range tb.edges {
		for u, n := range e.users {
			lines = append(lines, fmt.Sprintf("conn %s %s %d", id, u, n))
		}
		for room, m := range e.rooms {
			for u := range m {
				lines = append(lines, fmt.Sprintf("member %s %s %s", id, room, u))
			}
		}
		lines = append(lines, fmt.Sprintf("edge %s stamp %d", id, e.stamp.UnixNano()))
	}
	for u := range tb.lastSeen {
		lines = append(lines, "seen "+u)
	}
	sort.Strings(lines)
	return fmt.Sprintf("%d lines, positions %v\n", len(lines), tb.pos) + strings.Join(lines, "\n")
}

func TestSnapshotRoundTrip(t *testing.T) {
	tb := newTable()
	tb.setPositions([]int64{10, 0, 7})
	t0 := time.Unix(1_800_000_000, 123456789)
	for i := 0; i < 300; i++ {
		e := fmt.Sprint("edge-", i%3)
		u := fmt.Sprint("user-", i)
		tb.applyRecord(i%3, int64(10+i), &chatevent.Presence{Type: chatevent.PresenceConnect, Edge: e, User: u, Connections: 1 + i%2}, t0, t0.Add(time.Duration(i)))
		tb.applyRecord(i%3, int64(10+i), &chatevent.Presence{Type: chatevent.PresenceJoin, Edge: e, User: u, Room: fmt.Sprint("room-", i%7)}, t0, t0)
		if i%5 == 0 {
			tb.applyRecord(i%3, int64(10+i), &chatevent.Presence{Type: chatevent.PresenceDisconnect, Edge: e, User: u}, t0.Add(time.Second), t0)
		}
	}
	tb.applyRecord(1, 99, nil, t0, t0) // a record that did not decode still moves the position
	want := digest(tb)
	for _, chunkBytes := range []int{200, 4 << 10, snapshotChunkBytes} {
		t.Run(fmt.Sprint(chunkBytes), func(t *testing.T) {
			chunks, applied := tb.snapshot(chunkBytes)
			if applied != 661 {
				t.Errorf("applied at the cut = %d, want 661", applied)
			}
			if chunkBytes == 200 && len(chunks) < 10 {
				t.Errorf("%d chunks of at most %d bytes, want many", len(chunks), chunkBytes)
			}
			msgs, err := encodeSnapshot(chunks)
			if err != nil {
				t.Fatal(err)
			}
			for i := range msgs {
				id, ci, n, ok := chunkOf(&msgs[i])
				if !ok || ci != i || n != len(chunks) || id == "" {
					t.Fatalf("chunkOf(record %d) = %q %d/%d %v", i, id, ci, n, ok)
				}
			}
			got := newTable()
			got.load(chunks)
			if d := digest(got); d != want {
				t.Errorf("loaded table differs: %s", firstDiff(d, want))
			}
			for u, at := range tb.lastSeen {
				if !got.lastSeen[u].Equal(at) {
					t.Fatalf("last seen of %s = %v, want %v", u, got.lastSeen[u], at)
				}
			}
		})
	}
}

// produceHistory appends n presence records as five long-lived edges with
// 50 users would over a long time: mostly heartbeats, and users coming and
// going (each transient user once, so last-seen times pile up).
func produceHistory(t testing.TB, k kafkaio.Config, n int) {
	t.Helper()
	w := &kafka.Writer{Addr: kafka.TCP(k.BrokerList()...), Topic: k.PresenceTopic, Balancer: kafkaio.Balancer(),
		BatchSize: 5000, BatchBytes: 8 << 20, BatchTimeout: 5 * time.Millisecond, RequiredAcks: kafka.RequireOne}
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rec := func(typ, edge, user, room string, conns int) kafka.Message {
		key := user
		if typ == chatevent.PresenceHeartbeat {
			key = edge
		}
		b, err := (&chatevent.Presence{Type: typ, Edge: edge, User: user, Room: room, Connections: conns, Timestamp: chatevent.FormatTime(time.Now())}).Encode()
		if err != nil {
			t.Fatal(err)
		}
		return kafka.Message{Key: []byte(key), Value: b}
	}
	var batch []kafka.Message
	flush := func() {
		if err := w.WriteMessages(ctx, batch...); err != nil {
			t.Fatal(err)
		}
		batch = batch[:0]
	}
	for i := 0; i < 50; i++ {
		e := fmt.Sprint("e", i%5)
		u := fmt.Sprint("u", i)
		batch = append(batch, rec(chatevent.PresenceConnect, e, u, "", 1), rec(chatevent.PresenceJoin, e, u, fmt.Sprint("r", i%5), 0))
	}
	for i := len(batch); i < n; i++ {
		e := fmt.Sprint("e", i%5)
		switch {
		case i%20 == 0:
			batch = append(batch, rec(chatevent.PresenceConnect, e, fmt.Sprint("t", i), "", 1))
		case i%20 == 1:
			batch = append(batch, rec(chatevent.PresenceDisconnect, fmt.Sprint("e", (i-1)%5), fmt.Sprint("t", i-1), "", 0))
		default:
			batch = append(batch, rec(chatevent.PresenceHeartbeat, e, "", "", 0))
		}
		if len(batch) == 20000 {
			flush()
		}
	}
	flush()
}

// TestRestartAfterLongPresenceHistory builds a long presence history, lets a
// router write a snapshot, appends some more, and checks that a new router
// replays only what came after the snapshot and ends with the same tables.
// It logs restart times: short history, long history replayed in full (as
// every restart did before snapshots), long history from a snapshot.
func TestRestartAfterLongPresenceHistory(t *testing.T) {
	b := startBroker(t)
	const long, after = 50_000, 3_000

	catchUp := func(k kafkaio.Config, records int, mods ...func(*Router)) (*testRouter, time.Duration) {
		cfg := testConfig(k)
		cfg.EdgeTimeout = time.Minute // nothing expires during the test
		cfg.SnapshotRecords = records
		t0 := time.Now()
		r := startRouter(t, cfg, mods...)
		r.waitCaughtUp(t, 3*time.Minute)
		return r, time.Since(t0)
	}

	// A short history, for comparison.
	short := testKafka(t, b.Addr())
	short.PresenceTopic += ".short"
	ensureTopics(t, short)
	produceHistory(t, short, 1000)
	_, shortTook := catchUp(short, 0)

	k := testKafka(t, b.Addr())
	ensureTopics(t, k)
	produceHistory(t, k, long)
	full, fullTook := catchUp(k, 0) // no snapshots: the whole history
	if full.toReplay != long || full.fromSnapshot {
		t.Fatalf("without a snapshot the router replayed %d records (from snapshot %v), want all %d", full.toReplay, full.fromSnapshot, long)
	}
	full.stop(t)

	first, _ := catchUp(k, 10_000, func(r *Router) { r.snapshotCheck = 50 * time.Millisecond })
	eventually(t, time.Minute, "a presence snapshot", func() bool { return counterValue(first.snapshotsWritten) >= 1 })
	produceHistory(t, k, after)
	eventually(t, 30*time.Second, "the first router to apply the new records", func() bool {
		var sum int64
		for _, p := range first.t.positions() {
			sum += p
		}
		return sum == long+after
	})
	want := digest(first.t)
	first.once.Do(func() { first.cancel(); <-first.done }) // a crash: no snapshot at stop
	t.Cleanup(func() { first.Router.Stop(context.Background()) })

	second, fromSnapTook := catchUp(k, 10_000)
	if !second.fromSnapshot || second.toReplay != after {
		t.Errorf("restart replayed %d records (from snapshot %v), want the %d after the snapshot", second.toReplay, second.fromSnapshot, after)
	}
	if got := digest(second.t); got != want {
		t.Errorf("tables after the restart differ from the first router's: %s", firstDiff(got, want))
	}
	t.Logf("caught up: short history (1000 records) %v; %d records replayed in full %v; %d records from a snapshot (+%d replayed) %v",
		shortTook.Round(time.Millisecond), long, fullTook.Round(time.Millisecond), long+after, after, fromSnapTook.Round(time.Millisecond))
}

// firstDiff returns the first line where two digests differ.
func firstDiff(got, want string) string {
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	for i := 0; i < min(len(g), len(w)); i++ {
		if g[i] != w[i] {
			return fmt.Sprintf("line %d: got %q, want %q", i, g[i], w[i])
		}
	}
	return fmt.Sprintf("got %d lines, want %d", len(g), len(w))
}

// TestLatestSnapshotSkipsIncompleteOnes writes a complete snapshot, then
// chunks of others interleaved with it and a snapshot a router died while
// writing; the newest complete one is loaded.
func TestLatestSnapshotSkipsIncompleteOnes(t *testing.T) {
	b := startBroker(t)
	k := testKafka(t, b.Addr())
	ensureTopics(t, k)
	r, err := New(testConfig(k), testLog(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	snap := func(user string, n int) []kafka.Message {
		tb := newTable()
		tb.setPositions([]int64{0, 0, 0, 0})
		for i := 0; i < n; i++ {
			tb.apply(&chatevent.Presence{Type: chatevent.PresenceConnect, Edge: "e1", User: fmt.Sprint(user, i), Connections: 1}, time.Now())
		}
		chunks, _ := tb.snapshot(64) // several chunks
		msgs, err := encodeSnapshot(chunks)
		if err != nil {
			t.Fatal(err)
		}
		return msgs
	}
	w := k.NewWriter(snapshotTopic(k.PresenceTopic))
	defer w.Close()
	write := func(msgs ...kafka.Message) {
		if err := w.WriteMessages(ctx, msgs...); err != nil {
			t.Fatal(err)
		}
	}
	if chunks, err := r.latestSnapshot(ctx); err != nil || chunks != nil {
		t.Fatalf("latestSnapshot of an empty topic = %d chunks, %v; want none", len(chunks), err)
	}
	old, good, other, dead := snap("old", 3), snap("good", 5), snap("other", 2), snap("dead", 6)
	if len(other) >= len(good) {
		t.Fatalf("test setup: other has %d chunks, want fewer than good's %d", len(other), len(good))
	}
	write(old...)
	for i := range good { // interleaved with another router's snapshot
		write(good[i])
		if i < len(other) {
			write(other[i])
		}
	}
	write(kafka.Message{Key: []byte("presence"), Value: []byte("not a chunk")})
	write(dead[:len(dead)-1]...) // its router died before the last chunk
	chunks, err := r.latestSnapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := newTable()
	got.load(chunks)
	if p := got.presence("good4"); !p.Online {
		t.Errorf("loaded snapshot lacks good4 (%d chunks); want the newest complete snapshot, good's", len(chunks))
	}
	for _, u := range []string{"old0", "other0", "dead0"} {
		if got.presence(u).Online {
			t.Errorf("loaded snapshot holds %s; want only good's users", u)
		}
	}
}
