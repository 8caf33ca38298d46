package edge_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/chatsys/chat/pkg/chatevent"
	"github.com/chatsys/chat/pkg/kafkaio"
	"github.com/chatsys/chat/services/edge"
)

// ackID waits for the ack (or fails on an error) of clientID.
func (c *client) ackID(clientID string) string {
	c.t.Helper()
	for {
		m := c.next()
		switch {
		case m["type"] == "ack" && m["client_id"] == clientID:
			return m["id"].(string)
		case m["type"] == "error":
			c.t.Fatalf("%s: error %v", c.user, m)
		}
	}
}

// contents reads chat frames until the one with content last, returning
// every content seen on the way.
func (c *client) contentsUntil(last string) []string {
	c.t.Helper()
	var got []string
	for {
		m := c.nextOf("chat")
		got = append(got, m["content"].(string))
		if m["content"] == last {
			return got
		}
	}
}

// A resend of a client_id (at once, while the first is in flight, and after
// its ack) is answered with the first send's ack and delivered once.
func TestResendSameClientIDIsOneMessage(t *testing.T) {
	e := startEdge(t, testBroker(t))
	bob := dial(t, e.URL, "bob")
	bob.join("general")
	alice := dial(t, e.URL, "alice")
	frame := map[string]any{"type": "chat", "room": "general", "content": "once", "client_id": "x1"}
	alice.send(frame)
	alice.send(frame) // while the first is being appended
	first, second := alice.ackID("x1"), alice.ackID("x1")
	if first != second {
		t.Fatalf("acks name %s and %s, want the same id", first, second)
	}
	alice.send(frame) // after the ack
	if third := alice.ackID("x1"); third != first {
		t.Fatalf("resend after the ack: id %s, want %s", third, first)
	}
	alice.say("general", "marker", "x2")
	if got := bob.contentsUntil("marker"); len(got) != 2 || got[0] != "once" {
		t.Fatalf("bob saw %q, want [once marker]", got)
	}
}

// A client_id names one message: reused for another (other content, room,
// target or type) it is refused with invalid_message, nothing is appended,
// and the connection stays open; the first message keeps its ack. (Edits:
// cmd/chat's TestConversations.)
func TestReusedClientIDForAnotherMessageIsRefused(t *testing.T) {
	e := startEdge(t, testBroker(t))
	bob := dial(t, e.URL, "bob")
	bob.join("general")
	bob.join("random")
	alice := dial(t, e.URL, "alice")
	first := alice.say("general", "first", "1")
	for _, f := range []map[string]any{
		{"type": "chat", "room": "general", "content": "second", "client_id": "1"},
		{"type": "chat", "room": "random", "content": "first", "client_id": "1"},
		{"type": "private", "target": "bob", "content": "first", "client_id": "1"},
	} {
		alice.send(f)
		m := alice.nextOf("error")
		if m["code"] != "invalid_message" || m["client_id"] != "1" {
			t.Fatalf("%v with a used client_id: %v, want invalid_message for client_id 1", f, m)
		}
	}
	alice.send(map[string]any{"type": "chat", "room": "general", "content": "first", "client_id": "1"})
	if got := alice.ackID("1"); got != first {
		t.Fatalf("resend of the first message: ack %s, want %s", got, first)
	}
	alice.say("general", "marker", "2")
	alice.say("random", "marker", "3")
	seen := map[string][]string{} // room → contents (rooms are not ordered with each other)
	for len(seen["general"]) == 0 || seen["general"][len(seen["general"])-1] != "marker" ||
		len(seen["random"]) == 0 || seen["random"][len(seen["random"])-1] != "marker" {
		m := bob.nextOf("chat")
		seen[m["room"].(string)] = append(seen[m["room"].(string)], m["content"].(string))
	}
	if g, r := seen["general"], seen["random"]; len(g) != 2 || g[0] != "first" || len(r) != 1 {
		t.Fatalf("bob saw %q in general and %q in random, want [first marker] and [marker]", g, r)
	}
}

// A client that reconnects to another edge and resumes its room gets the
// first send's ack for a resend there too.
func TestResendOnAnotherEdgeAfterResume(t *testing.T) {
	broker := testBroker(t)
	a := startEdge(t, broker)
	b := startEdge(t, broker)
	bob := dial(t, b.URL, "bob")
	bob.join("general")
	alice := dial(t, a.URL, "alice")
	alice.join("general")
	alice.say("general", "before", "y0")
	before := bob.nextOf("chat")
	id := alice.say("general", "the message", "y1")
	alice.ws.Close()

	alice2 := dial(t, b.URL, "alice")
	alice2.send(map[string]any{"type": "join", "room": "general", "since": before["pos"]})
	if j := alice2.nextOf("joined"); j["recovered"] != true {
		t.Fatalf("joined = %v, want recovered", j)
	}
	if m := alice2.nextOf("chat"); m["id"] != id {
		t.Fatalf("replayed %v, want %s", m, id)
	}
	alice2.send(map[string]any{"type": "chat", "room": "general", "content": "the message", "client_id": "y1"})
	if got := alice2.ackID("y1"); got != id {
		t.Fatalf("resend on the other edge: ack %s, want the first send's %s", got, id)
	}
	// Known there from the log: another message under y1 is refused.
	alice2.send(map[string]any{"type": "chat", "room": "general", "content": "another message", "client_id": "y1"})
	if m := alice2.nextOf("error"); m["code"] != "invalid_message" || m["client_id"] != "y1" {
		t.Fatalf("another message under y1 on the other edge: %v, want invalid_message", m)
	}
	alice2.say("general", "marker", "y2")
	if got := bob.contentsUntil("marker"); len(got) != 2 || got[0] != "the message" {
		t.Fatalf("bob saw %q after 'before', want [the message, marker]", got)
	}

	// Resumed from the position of the message itself (the client saw its
	// echo, not its ack): a third edge knows it from the resume position.
	c := startEdge(t, broker)
	alice2.send(map[string]any{"type": "chat", "room": "general", "content": "echo seen, ack lost", "client_id": "y3"})
	id3 := alice2.ackID("y3")
	var pos3 any // the echo's position (bob's copy of it has the same)
	for {
		m := bob.nextOf("chat")
		if m["id"] == id3 {
			pos3 = m["pos"]
			break
		}
	}
	alice2.ws.Close()
	alice3 := dial(t, c.URL, "alice")
	alice3.send(map[string]any{"type": "join", "room": "general", "since": pos3})
	if j := alice3.nextOf("joined"); j["recovered"] != true {
		t.Fatalf("joined = %v, want recovered", j)
	}
	alice3.send(map[string]any{"type": "chat", "room": "general", "content": "echo seen, ack lost", "client_id": "y3"})
	if got := alice3.ackID("y3"); got != id3 {
		t.Fatalf("resend after resuming from the message's own position: ack %s, want %s", got, id3)
	}
}

// An event appended twice (a retry after an ambiguous failure keeps its id)
// is delivered once.
func TestSameEventTwiceInTheLogIsDeliveredOnce(t *testing.T) {
	broker := testBroker(t)
	var topic string
	e := startEdge(t, broker, func(c *edge.Config) { topic = c.Kafka.RoomsTopic })
	bob := dial(t, e.URL, "bob")
	bob.join("general")
	ev := chatevent.Event{ID: chatevent.NewID(), Type: chatevent.TypeChat, Room: "general", Username: "alice",
		Content: "twice", ClientID: "z1", Timestamp: chatevent.FormatTime(time.Now())}
	v, _ := ev.Encode()
	marker := ev
	marker.ID, marker.Content, marker.ClientID = chatevent.NewID(), "marker", "z2"
	mv, _ := marker.Encode()
	w := &kafka.Writer{Addr: kafka.TCP(broker), Topic: topic, Balancer: &kafka.Murmur2Balancer{}, BatchTimeout: time.Millisecond}
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.WriteMessages(ctx, kafka.Message{Key: []byte("general"), Value: v}, kafka.Message{Key: []byte("general"), Value: v},
		kafka.Message{Key: []byte("general"), Value: mv}); err != nil {
		t.Fatal(err)
	}
	if got := bob.contentsUntil("marker"); len(got) != 2 {
		t.Fatalf("bob saw %q, want [twice marker]", got)
	}
}

// A resume from the newest position must not get the event at that
// position again, even when this edge's tail reads it only after the join
// (nothing to replay, the event still on its way).
func TestResumeFromNewestGetsNothingTwice(t *testing.T) {
	broker := testBroker(t)
	var k edge.Config
	e := startEdge(t, broker, func(c *edge.Config) { k = *c })
	cl := &kafka.Client{Addr: kafka.TCP(broker), Timeout: 10 * time.Second}
	produce := func(room, content string) string {
		t.Helper()
		ev := chatevent.Event{ID: chatevent.NewID(), Type: chatevent.TypeChat, Room: room, Username: "pub",
			Content: content, ClientID: chatevent.NewID(), Timestamp: chatevent.FormatTime(time.Now())}
		v, _ := ev.Encode()
		p := kafkaio.PartitionFor(room, k.Kafka.RoomsPartitions)
		res, err := cl.Produce(context.Background(), &kafka.ProduceRequest{Topic: k.Kafka.RoomsTopic, Partition: p,
			RequiredAcks: kafka.RequireAll, Records: kafka.NewRecordReader(kafka.Record{Key: kafka.NewBytes([]byte(room)), Value: kafka.NewBytes(v)})})
		if err != nil || res.Error != nil {
			t.Fatalf("produce: %v %v", err, res)
		}
		return fmt.Sprintf("%d:%d", p, res.BaseOffset)
	}
	c := dial(t, e.URL, "resumer")
	for i := 0; i < 40; i++ {
		room := fmt.Sprint("r", i)
		pos := produce(room, "already seen")
		c.send(map[string]any{"type": "join", "room": room, "since": pos})
		if j := c.nextOf("joined"); j["recovered"] != true {
			t.Fatalf("joined = %v, want recovered", j)
		}
		produce(room, "marker")
		if m := c.nextOf("chat"); m["content"] != "marker" {
			t.Fatalf("room %s: got %v after resuming from %s, want only the marker", room, m["content"], pos)
		}
	}
}

// A private message routed twice to this edge (appended twice by a retry,
// or routed again after a rebalance) reaches its recipient once.
func TestSameDeliveryTwiceIsDeliveredOnce(t *testing.T) {
	broker := testBroker(t)
	var cfg edge.Config
	e := startEdge(t, broker, func(c *edge.Config) { cfg = *c })
	bob := dial(t, e.URL, "bob").registered()
	ev := chatevent.Event{ID: chatevent.NewID(), Type: chatevent.TypePrivate, Target: "bob", Username: "alice",
		Content: "twice", ClientID: "d1", Timestamp: chatevent.FormatTime(time.Now())}
	v, _ := chatevent.EncodeDelivery(ev, chatevent.Pos{Partition: 1, Offset: 7})
	marker := ev
	marker.ID, marker.Content, marker.ClientID = chatevent.NewID(), "marker", "d2"
	mv, _ := chatevent.EncodeDelivery(marker, chatevent.Pos{Partition: 1, Offset: 9})
	writeDeliveries(t, cfg, v, v, mv)
	var got []string
	for {
		m := bob.nextOf("private")
		got = append(got, m["content"].(string))
		if m["content"] == "marker" {
			break
		}
	}
	if len(got) != 2 {
		t.Fatalf("bob saw %q, want [twice marker]", got)
	}
}

// A private message delivered here to its sender's connection (sent
// through another edge) answers a resend on this edge: same ack, nothing
// appended again.
func TestDMResendOnAnotherEdgeAfterDelivery(t *testing.T) {
	broker := testBroker(t)
	var cfg edge.Config
	e := startEdge(t, broker, func(c *edge.Config) { cfg = *c })
	// routed delivers from's DM to this edge as the router does.
	routed := func(from, content, cid string, pos chatevent.Pos) chatevent.Event {
		ev := chatevent.Event{ID: chatevent.NewID(), Type: chatevent.TypePrivate, Target: "walt", Username: from,
			Content: content, ClientID: cid, Timestamp: chatevent.FormatTime(time.Now())}
		v, _ := chatevent.EncodeDelivery(ev, pos)
		writeDeliveries(t, cfg, v)
		return ev
	}
	alice := dial(t, e.URL, "alice").registered()
	ev := routed("alice", "sent elsewhere", "d9", chatevent.Pos{Partition: 2, Offset: 5})
	if m := alice.nextOf("private"); m["id"] != ev.ID {
		t.Fatalf("alice got %v, want her DM %s", m, ev.ID)
	}
	alice.send(map[string]any{"type": "private", "target": "walt", "content": "sent elsewhere", "client_id": "d9"})
	if got := alice.ackID("d9"); got != ev.ID {
		t.Fatalf("resend on this edge: ack %s, want the delivered DM's %s", got, ev.ID)
	}

	// Routed here for the recipient only (the sender was not connected
	// here): the sender's resend here is still recognised.
	walt := dial(t, e.URL, "walt").registered()
	ev2 := routed("carol", "from elsewhere", "d10", chatevent.Pos{Partition: 3, Offset: 8})
	if m := walt.nextOf("private"); m["id"] != ev2.ID {
		t.Fatalf("walt got %v, want carol's DM %s", m, ev2.ID)
	}
	carol := dial(t, e.URL, "carol")
	carol.send(map[string]any{"type": "private", "target": "walt", "content": "from elsewhere", "client_id": "d10"})
	if got := carol.ackID("d10"); got != ev2.ID {
		t.Fatalf("carol's resend on the recipient's edge: ack %s, want %s", got, ev2.ID)
	}
}

// A read receipt from a user the peer blocked reaches the reader's own
// connections, not the peer's.
func TestReadReceiptDoesNotReachABlocker(t *testing.T) {
	broker := testBroker(t)
	var cfg edge.Config
	e := startEdge(t, broker, func(c *edge.Config) { cfg = *c })
	bob := dial(t, e.URL, "bob").registered()
	alice := dial(t, e.URL, "alice").registered()
	appendACL(t, broker, chatevent.ACLRecord{Type: chatevent.ACLBlock, Username: "bob", Target: "alice", Blocked: true})
	eventually(t, 5*time.Second, "the block is enforced", func() bool {
		// A private message is always answered (typing is not, unless refused).
		alice.send(map[string]any{"type": "private", "target": "bob", "content": "x", "client_id": fmt.Sprint("b", time.Now().UnixNano())})
		for {
			switch m := alice.next(); m["type"] {
			case "ack":
				return false
			case "error":
				return m["code"] == chatevent.CodeForbidden
			}
		}
	})
	read := chatevent.Event{ID: chatevent.NewID(), Type: chatevent.TypeRead, Target: "bob", Username: "alice",
		Pos: "1:3", Timestamp: chatevent.FormatTime(time.Now())}
	rv, _ := chatevent.EncodeDelivery(read, chatevent.Pos{Partition: 1, Offset: 4})
	marker := chatevent.Event{ID: chatevent.NewID(), Type: chatevent.TypePrivate, Target: "bob", Username: "carol",
		Content: "marker", ClientID: "m1", Timestamp: chatevent.FormatTime(time.Now())}
	mv, _ := chatevent.EncodeDelivery(marker, chatevent.Pos{Partition: 2, Offset: 9})
	writeDeliveries(t, cfg, rv, mv)
	if m := alice.nextOf("read"); m["pos"] != "1:3" {
		t.Fatalf("alice's own device got %v, want her read position", m)
	}
	for {
		m := bob.next()
		if m["type"] == "read" {
			t.Fatalf("bob, who blocked alice, got her read receipt: %v", m)
		}
		if m["type"] == "private" && m["content"] == "marker" {
			break
		}
	}
}

// writeDeliveries writes records to the deliveries topic addressed to the
// edge cfg describes, as the router does.
func writeDeliveries(t *testing.T, cfg edge.Config, values ...[]byte) {
	t.Helper()
	w := cfg.Kafka.NewWriter(cfg.Kafka.DeliveriesTopic)
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	msgs := make([]kafka.Message, len(values))
	for i, v := range values {
		msgs[i] = kafka.Message{Key: []byte(cfg.ID), Value: v}
	}
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
}
