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
		c.Kafka.WriteTimeout = 300 * time.Millisecond
		presenceTopic = c.Kafka.PresenceTopic
	})
	alice := dial(t, e.URL, "alice")
	alice.join("general")

	if err := b.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "a failed presence write", func() bool { return e.metric(t, "chat_edge_presence_write_errors_total") > 0 })
	back := time.Now()
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}

	var connected, joined bool
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
		pr := kafka.NewReader(kafka.ReaderConfig{Brokers: []string{b.Addr()}, Topic: presenceTopic, Partition: p.ID, MaxWait: 100 * time.Millisecond})
		readers[p.ID] = pr
		defer pr.Close()
		go func() {
			for {
				m, err := pr.ReadMessage(ctx)
				if err != nil {
					return
				}
				msgs <- m
			}
		}()
	}
	for !(connected && joined) {
		select {
		case <-ctx.Done():
			t.Fatalf("after the broker returned: connect republished %v, join republished %v; want both", connected, joined)
		case m := <-msgs:
			var p chatevent.Presence
			if json.Unmarshal(m.Value, &p) != nil || p.User != "alice" {
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
