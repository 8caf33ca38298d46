package edge_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"sync"
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
	b := stoppableBroker(t)
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
	eventually(t, 30*time.Second, "the log tails' interruptions counted", func() bool { return e.metric(t, "chat_edge_log_tail_interruptions_total") > 0 })
	dave.ws.Close()
	eventually(t, 30*time.Second, "dave's disconnect record failing", func() bool {
		return e.metric(t, "chat_edge_presence_repairs_pending") >= 1
	})
	// While the broker is away nothing is republished: each republish
	// would only pile up in the writer's queue (every connection and
	// membership, every heartbeat).
	noRepublish(t, e, 3*time.Second, 0) // 15 heartbeats
	back := time.Now()
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}

	var connected, joined, daveGone bool
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	msgs := presenceRecords(ctx, t, b.Addr(), presenceTopic)
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
	if n := e.metric(t, "chat_edge_presence_republishes_total"); n < 1 {
		t.Fatalf("%v republishes after the broker returned, want at least 1", n)
	}
}

// presenceRecords reads every partition of the presence topic until ctx
// ends (the broker may have just restarted: reads are retried).
func presenceRecords(ctx context.Context, t *testing.T, addr, topic string) <-chan kafka.Message {
	t.Helper()
	parts, err := kafka.DialContext(ctx, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	pl, err := parts.ReadPartitions(topic)
	parts.Close()
	if err != nil {
		t.Fatal(err)
	}
	msgs := make(chan kafka.Message, 64)
	for _, p := range pl {
		pr := kafka.NewReader(kafka.ReaderConfig{Brokers: []string{addr}, Topic: topic, Partition: p.ID,
			MaxWait: 100 * time.Millisecond, MaxAttempts: 1 << 20})
		t.Cleanup(func() { pr.Close() })
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
	return msgs
}

// While the broker does not answer, the presence records waiting for it
// are bounded: beyond the bound new ones are dropped, and the republish
// after the outage still reports every connection.
func TestPresenceQueueBoundedDuringOutage(t *testing.T) {
	edge.SetMaxPresenceQueued(t, 5)
	b := stoppableBroker(t)
	var presenceTopic string
	e := startEdge(t, b.Addr(), func(c *edge.Config) {
		c.Heartbeat = 200 * time.Millisecond
		c.Kafka.WriteTimeout = 5 * time.Second // a hung broker holds writes this long
		presenceTopic = c.Kafka.PresenceTopic
	})
	dial(t, e.URL, "warmup") // the writer has the topic's partitions before the outage
	eventually(t, 10*time.Second, "the warm-up connect written", func() bool {
		return e.metric(t, "chat_edge_presence_queued") == 0
	})
	// A broker that accepts connections and never answers: writes wait
	// for their timeout.
	if err := b.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	hole := blackHole(t, b.Addr())
	users := map[string]bool{}
	for i := range 20 {
		u := fmt.Sprint("user", i)
		users[u] = false
		dial(t, e.URL, u)
		if q := e.metric(t, "chat_edge_presence_queued"); q > 5 {
			t.Fatalf("%v presence records queued, want at most 5", q)
		}
	}
	eventually(t, 10*time.Second, "at least 15 of the 20 connects dropped beyond the bound", func() bool {
		return e.metric(t, "chat_edge_presence_write_errors_total") >= 15
	})
	// Nothing is republished into the full queue while the broker hangs.
	noRepublish(t, e, 2*time.Second, 5) // 10 heartbeats
	hole.Close()
	back := time.Now()
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	msgs := presenceRecords(ctx, t, b.Addr(), presenceTopic)
	for missing := len(users); missing > 0; {
		select {
		case <-ctx.Done():
			t.Fatalf("after the broker returned, %d of %d connects were not republished: %v", missing, len(users), users)
		case m := <-msgs:
			var p chatevent.Presence
			if json.Unmarshal(m.Value, &p) != nil || p.Type != chatevent.PresenceConnect {
				continue
			}
			if at, err := time.Parse(time.RFC3339Nano, p.Timestamp); err != nil || at.Before(back) {
				continue
			}
			if seen, ok := users[p.User]; ok && !seen {
				users[p.User] = true
				missing--
			}
		}
	}
}

// blackHole listens on addr and accepts connections without ever answering,
// until closed.
type blackHoleListener struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func blackHole(t *testing.T, addr string) *blackHoleListener {
	t.Helper()
	var ln net.Listener
	eventually(t, 10*time.Second, "listening on the broker's address", func() bool {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err == nil
	})
	h := &blackHoleListener{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			h.mu.Lock()
			h.conns = append(h.conns, c)
			h.mu.Unlock()
		}
	}()
	t.Cleanup(h.Close)
	return h
}

func (h *blackHoleListener) Close() {
	h.ln.Close()
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range h.conns {
		c.Close()
	}
	h.conns = nil
}

// noRepublish checks for d that the edge republishes nothing (and, when
// maxQueued > 0, that at most maxQueued presence records wait).
func noRepublish(t *testing.T, e *testEdge, d time.Duration, maxQueued float64) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if n := e.metric(t, "chat_edge_presence_republishes_total"); n != 0 {
			t.Fatalf("%v republishes while the broker did not answer, want 0", n)
		}
		if q := e.metric(t, "chat_edge_presence_queued"); maxQueued > 0 && q > maxQueued {
			t.Fatalf("%v presence records queued, want at most %v", q, maxQueued)
		}
	}
}

// stoppableBroker starts an embedded broker of the test's own, for tests
// that stop and restart it (on the same address and data).
func stoppableBroker(t *testing.T) *embedkafka.Broker {
	t.Helper()
	b := embedkafka.New(embedkafka.Config{Addr: freePort(t), DataDir: t.TempDir()}, nil)
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Stop(context.Background()) })
	return b
}
