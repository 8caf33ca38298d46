package chatacl_test

import (
	"context"
	"flag"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/chatsys/chat/pkg/chatacl"
	"github.com/chatsys/chat/pkg/chatevent"
	"github.com/chatsys/chat/pkg/kafkaio"
)

// broker starts a real Kafka-protocol broker (kfake) with the chat's topics.
func broker(t *testing.T) kafkaio.Config {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	var k kafkaio.Config
	k.RegisterFlags(flag.NewFlagSet("t", flag.ContinueOnError)) // defaults only
	k.Brokers = c.ListenAddrs()[0]
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := k.EnsureTopics(ctx, k.AllTopics()...); err != nil {
		t.Fatal(err)
	}
	return k
}

func start(t *testing.T, k kafkaio.Config, bad func()) *chatacl.Follower {
	t.Helper()
	f := chatacl.New(k, nil, bad)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := f.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func TestFollowerAppliesAndRebuilds(t *testing.T) {
	k := broker(t)
	var bad atomic.Int64
	f := start(t, k, func() { bad.Add(1) })
	var applied atomic.Int64
	a := chatacl.NewAppender(k, f)
	defer a.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	// Append returns once the follower applied the records: read your writes.
	if err := a.Append(ctx,
		chatevent.ACLRecord{Type: chatevent.ACLRoom, Room: "design", Username: "alice", Private: true, By: "alice"},
		chatevent.ACLRecord{Type: chatevent.ACLMember, Room: "design", Username: "bob", Action: chatevent.ActionInvite, Role: chatevent.RoleMember, By: "alice"},
		chatevent.ACLRecord{Type: chatevent.ACLBlock, Username: "bob", Target: "mallory", Blocked: true},
	); err != nil {
		t.Fatal(err)
	}
	acl := f.ACL()
	if !acl.MayJoin("design", "bob", false) || acl.MayRead("design", "carol", false) || !acl.Blocked("bob", "mallory") {
		t.Fatal("the appended records are not applied when Append returns")
	}

	// A record that does not decode is counted and skipped; later ones apply.
	w := k.NewWriter(k.ACLTopic)
	defer w.Close()
	if err := w.WriteMessages(ctx, kafka.Message{Key: []byte("member:design:x"), Value: []byte(`{"type":"member","room":"design","username":"x","action":"promote"}`)}); err != nil {
		t.Fatal(err)
	}
	if err := a.Append(ctx, chatevent.ACLRecord{Type: chatevent.ACLMember, Room: "design", Username: "bob", Action: chatevent.ActionRemove, By: "alice"}); err != nil {
		t.Fatal(err)
	}
	if acl.MayRead("design", "bob", false) {
		t.Fatal("the removal after a bad record is not applied")
	}
	if bad.Load() != 1 {
		t.Fatalf("bad records counted = %d, want 1", bad.Load())
	}

	// Another process (a restarted edge) rebuilds the same state from the
	// start of the topic before Start returns, calling OnApply for each.
	g := chatacl.New(k, nil, nil)
	g.OnApply = func(chatevent.ACLRecord) { applied.Add(1) }
	if err := g.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	b := g.ACL()
	if ri, ok := b.Room("design"); !ok || !ri.Private || ri.Owner != "alice" || b.MayRead("design", "bob", false) || !b.Blocked("bob", "mallory") {
		t.Fatalf("the rebuilt state differs: %+v %v", ri, ok)
	}
	if applied.Load() != 4 {
		t.Fatalf("OnApply called %d times during the load, want 4", applied.Load())
	}
}

// SyncBriefly reports whether the sync completed.
func TestSyncBrieflyReportsWhetherItSynced(t *testing.T) {
	k := broker(t)
	f := start(t, k, nil)
	// A context that has ended: Sync cannot complete, SyncBriefly says so.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if f.SyncBriefly(ctx, time.Second) {
		t.Fatal("SyncBriefly with an ended context reported success")
	}
	if !f.SyncBriefly(context.Background(), 5*time.Second) {
		t.Fatal("SyncBriefly failed on an idle topic")
	}
}
