package edge_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/chatsys/chat/pkg/chatevent"
	"github.com/chatsys/chat/pkg/embedkafka"
	"github.com/chatsys/chat/services/edge"
)

// After the broker was away long enough for presence writes to fail, the
// edge republishes its connections and memberships once the broker is back,
// so the router's tables converge to the truth.
func TestPresenceRepublishedAfterBrokerOutage(t *testing.T) {
	dir := t.TempDir()
	b := embedkafka.New(embedkafka.Config{Addr: freePort(t), DataDir: dir}, nil)
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Stop(context.Background()) })
	var presenceTopic string
	e := startEdge(t, b.Addr(), func(c *edge.Config) {
		c.Heartbeat = 200 * time.Millisecond
		c.PresenceGrace = 100 * time.Millisecond
		c.Kafka.WriteTimeout = 300 * time.Millisecond
		presenceTopic = c.Kafka.PresenceTopic
	})
	alice := dial(t, e.URL, "alice")
	alice.join("general")
	dave := dial(t, e.URL, "dave") // leaves while the broker is away

	if err := b.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "a failed presence write", func() bool { return e.metric(t, "chat_edge_presence_write_errors_total") > 0 })
	dave.ws.Close()
	eventually(t, 30*time.Second, "dave's disconnect record failing", func() bool {
		return e.metric(t, "chat_edge_presence_repairs_pending") >= 1
	})
	back := time.Now()
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}

	var connected, joined, daveGone bool
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	readers := map[int]*kafka.Reader{}
	parts, err := kafka.DialContext(ctx, "tcp", b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	pl, err := parts.ReadPartitions(presenceTopic)
	parts.Close()
	if err != nil {
		t.Fatal(err)
	}
	msgs := make(chan kafka.Message, 64)
	for _, p := range pl {
		// The broker has just restarted: a read may fail while it settles;
		// keep reading until the test's deadline.
		pr := kafka.NewReader(kafka.ReaderConfig{Brokers: []string{b.Addr()}, Topic: presenceTopic, Partition: p.ID,
			MaxWait: 100 * time.Millisecond, MaxAttempts: 1 << 20})
		readers[p.ID] = pr
		defer pr.Close()
		go func() {
			for ctx.Err() == nil {
				m, err := pr.ReadMessage(ctx)
				if err != nil {
					continue
				}
				select {
				case msgs <- m:
				case <-ctx.Done():
				}
			}
		}()
	}
	for !(connected && joined && daveGone) {
		select {
		case <-ctx.Done():
			t.Fatalf("after the broker returned: alice's connect republished %v, join republished %v, dave's disconnect %v; want all", connected, joined, daveGone)
		case m := <-msgs:
			var p chatevent.Presence
			if json.Unmarshal(m.Value, &p) != nil {
				continue
			}
			if p.User == "dave" && p.Type == chatevent.PresenceDisconnect {
				if at, err := time.Parse(time.RFC3339Nano, p.Timestamp); err == nil && !at.Before(back) {
					daveGone = true
				}
				continue
			}
			if p.User != "alice" {
				continue
			}
			at, err := time.Parse(time.RFC3339Nano, p.Timestamp)
			if err != nil || at.Before(back) {
				continue
			}
			switch {
			case p.Type == chatevent.PresenceConnect && p.Connections == 1:
				connected = true
			case p.Type == chatevent.PresenceJoin && p.Room == "general":
				joined = true
			}
		}
	}
}
