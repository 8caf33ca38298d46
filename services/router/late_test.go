package router

import (
	"context"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/chatsys/chat/pkg/chatevent"
	"github.com/chatsys/chat/pkg/kafkaio"
)

// A private message routed just before its target's connect record reached
// the router (the two travel on different topics) is delivered to the
// target's edge once the connect arrives: a user welcomed a moment ago
// still gets it live. An edge that had it already does not get it again,
// and an arrival after the window gets nothing.
func TestLateArrivalGetsWhatWasJustRouted(t *testing.T) {
	b := startBroker(t)
	k := testKafka(t, b.Addr())
	ensureTopics(t, k)
	e1, e2 := newFakeEdge(t, k, "e1"), newFakeEdge(t, k, "e2")
	e1.publish(chatevent.PresenceConnect, "alice", "", 1)
	e1.beat(300 * time.Millisecond)
	e2.beat(300 * time.Millisecond)
	r := startRouter(t, testConfig(k))
	r.waitCaughtUp(t, 30*time.Second)

	w := k.NewWriter(k.DirectTopic)
	defer w.Close()
	ev := chatevent.Event{ID: chatevent.NewID(), Type: chatevent.TypePrivate, Username: "alice", Target: "bob", Content: "are you there?",
		ClientID: "c1", Timestamp: chatevent.FormatTime(time.Now())}
	v, err := ev.Encode()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := w.WriteMessages(ctx, kafka.Message{Key: []byte(chatevent.DMKey("alice", "bob")), Value: v}); err != nil {
		t.Fatal(err)
	}
	deliveredTo := func() map[string]int {
		n := map[string]int{}
		for _, m := range readAll(t, k, k.DeliveriesTopic, k.SmallPartitions) {
			if d, _, err := chatevent.DecodeDelivery(m.Value); err == nil && d.ID == ev.ID {
				n[string(m.Key)]++
				if p := kafkaio.PartitionFor(string(m.Key), k.SmallPartitions); m.Partition != p {
					t.Errorf("late delivery for %s in partition %d, want %d", m.Key, m.Partition, p)
				}
			}
		}
		return n
	}
	// Routed while bob is nowhere: to alice's edge only.
	eventually(t, 30*time.Second, "the DM routed to alice's edge", func() bool { return deliveredTo()["e1"] == 1 })
	if n := deliveredTo()["e2"]; n != 0 {
		t.Fatalf("routed to e2 before bob connected there: %d", n)
	}

	// bob's connection on e2, whose connect the router reads after the DM.
	e2.publish(chatevent.PresenceConnect, "bob", "", 1)
	eventually(t, 30*time.Second, "the DM delivered late to bob's edge", func() bool { return deliveredTo()["e2"] == 1 })

	// alice connects on e2 too (e2 already got it), bob a second time:
	// nothing more is owed to anyone.
	e2.publish(chatevent.PresenceConnect, "alice", "", 1)
	e2.publish(chatevent.PresenceConnect, "bob", "", 2)
	marker := chatevent.Event{ID: chatevent.NewID(), Type: chatevent.TypePrivate, Username: "alice", Target: "bob", Content: "marker",
		ClientID: "c2", Timestamp: chatevent.FormatTime(time.Now())}
	mv, _ := marker.Encode()
	if err := w.WriteMessages(ctx, kafka.Message{Key: []byte(chatevent.DMKey("alice", "bob")), Value: mv}); err != nil {
		t.Fatal(err)
	}
	// The marker routed to e2 means the connects before it were read.
	eventually(t, 30*time.Second, "the marker routed to e2", func() bool {
		for _, m := range readAll(t, k, k.DeliveriesTopic, k.SmallPartitions) {
			if d, _, err := chatevent.DecodeDelivery(m.Value); err == nil && d.ID == marker.ID && string(m.Key) == "e2" {
				return true
			}
		}
		return false
	})
	// lateLoop writes a moment after the presence reader queues an
	// arrival: a second delivery would follow within milliseconds,
	// so watch for one over 3 s.
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if n := deliveredTo(); n["e1"] != 1 || n["e2"] != 1 {
			t.Fatalf("deliveries of the first DM = %v, want one to each edge", n)
		}
	}
}

// The memory is bounded in time and in count, and each edge is owed an
// event once.
func TestLateRoutesMemory(t *testing.T) {
	var l lateRoutes
	t0 := time.Now()
	none := func(...string) []string { return nil }
	l.target(t0, []string{"alice", "bob"}, []byte("old"), nil, none)
	l.target(t0.Add(5*time.Second), []string{"bob"}, []byte("new"), nil, func(...string) []string { return []string{"e1"} })
	got, evs := l.arrived(t0.Add(6*time.Second), "bob", "e2")
	if len(got) != 2 {
		t.Fatalf("bob on e2 at 6 s: %d records, want 2", len(got))
	}
	l.unserved(evs, "e2") // the write failed: owed again
	if got, _ := l.arrived(t0.Add(6*time.Second), "bob", "e2"); len(got) != 2 {
		t.Fatalf("bob on e2 after a failed write: %d records, want 2", len(got))
	}
	if got, _ := l.arrived(t0.Add(6*time.Second), "bob", "e2"); len(got) != 0 {
		t.Fatalf("bob on e2 again: %d records, want 0 (owed once)", len(got))
	}
	if got, _ := l.arrived(t0.Add(6*time.Second), "bob", "e1"); len(got) != 1 || string(got[0].Value) != "old" {
		t.Fatalf("bob on e1: %v, want the old one only (e1 had the new one)", got)
	}
	if got, _ := l.arrived(t0.Add(lateWindow+time.Second), "alice", "e3"); len(got) != 0 {
		t.Fatalf("alice after the window: %d records, want 0", len(got))
	}
	if _, ok := l.byUser["alice"]; ok {
		t.Fatal("alice's index outlived her only event")
	}
	for i := range lateMax + 10 {
		l.target(t0.Add(20*time.Second), []string{"carol"}, []byte{byte(i)}, nil, none)
	}
	if n, m := len(l.events)-l.head, len(l.byUser["carol"]); n != lateMax || m != lateMax {
		t.Fatalf("remembered %d events (carol's index %d), want at most %d", n, m, lateMax)
	}
	big := make([]byte, 1<<20)
	for range 100 {
		l.target(t0.Add(20*time.Second), []string{"dave"}, big, nil, none)
	}
	if l.bytes > lateMaxBytes || len(l.byUser["dave"]) != lateMaxBytes/len(big) {
		t.Fatalf("remembered %d bytes (%d of dave's 1 MiB events), want at most %d", l.bytes, len(l.byUser["dave"]), lateMaxBytes)
	}
}
