package edge_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/chatsys/chat/pkg/chatevent"
	"github.com/chatsys/chat/pkg/kafkaio"
	"github.com/chatsys/chat/services/edge"
)

// These tests play history's part for chat.acl: they append the records
// history's management API appends (docs/conversations.md), through a real
// broker, and check what two edges sharing it enforce.

func aclTopic(t testing.TB) string { return topicFor(t) + ".acl" }

func appendACL(t testing.TB, broker string, recs ...chatevent.ACLRecord) {
	t.Helper()
	w := &kafka.Writer{Addr: kafka.TCP(broker), Topic: aclTopic(t), Balancer: kafkaio.Balancer(), RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond}
	defer w.Close()
	msgs := make([]kafka.Message, len(recs))
	for i, r := range recs {
		r.Timestamp = chatevent.FormatTime(time.Now())
		msgs[i] = kafka.Message{Key: []byte(r.Key()), Value: r.Encode()}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
}

func member(room, user, action, by string) chatevent.ACLRecord {
	var m chatevent.Membership
	m = m.After(action)
	return chatevent.ACLRecord{Type: chatevent.ACLMember, Room: room, Username: user, Action: action, By: by, Role: m.Role, Muted: m.Muted, Banned: m.Banned}
}

// expectError reads until an error frame and checks its code.
func (c *client) expectError(code string) map[string]any {
	c.t.Helper()
	m := c.nextOf("error")
	if m["code"] != code {
		c.t.Fatalf("%s: error %v, want code %s", c.user, m, code)
	}
	return m
}

// joinRefused joins room until the edge refuses it, and returns the error
// frame: a refusal waits for the edge to have applied the records before it.
func joinRefused(t *testing.T, c *client, room string) map[string]any {
	t.Helper()
	var refused map[string]any
	eventually(t, 10*time.Second, c.user+" refused "+room, func() bool {
		c.send(map[string]any{"type": "join", "room": room})
		for {
			m := c.next()
			switch m["type"] {
			case "error":
				refused = m
				return true
			case "joined":
				c.send(map[string]any{"type": "leave", "room": room})
				c.nextOf("left")
				return false
			}
		}
	})
	if refused["code"] != chatevent.CodeForbidden {
		t.Fatalf("%s joining %s: %v, want forbidden", c.user, room, refused)
	}
	return refused
}

// c2chan reads c's frames on a goroutine until the connection ends.
func c2chan(c *client) <-chan map[string]any {
	ch := make(chan map[string]any, 256)
	go func() {
		defer close(ch)
		for {
			m, err := c.read(time.Minute)
			if err != nil {
				return
			}
			ch <- m
		}
	}()
	return ch
}

// quiet fails if a frame of type typ arrives within d. The read deadline
// that ends it ends the client too (gorilla/websocket): use it last.
func (c *client) quiet(typ string, d time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(d)
	for time.Until(deadline) > 0 {
		m, err := c.read(time.Until(deadline))
		if err != nil {
			return
		}
		if m["type"] == typ {
			c.t.Fatalf("%s: unexpected %s frame %v", c.user, typ, m)
		}
	}
}

func TestPrivateRoomMembershipOnTwoEdges(t *testing.T) {
	broker := testBroker(t)
	e1 := startEdge(t, broker)
	e2 := startEdge(t, broker)
	alice := dial(t, e1.srv.URL, "alice")
	bob := dial(t, e2.srv.URL, "bob")

	appendACL(t, broker, chatevent.ACLRecord{Type: chatevent.ACLRoom, Room: "design", Username: "alice", Private: true, By: "alice"})
	alice.join("design") // the owner

	// A non-member is refused with the answer a banned user gets: nothing
	// says the room is private. (Until edge 2 has read the room record the
	// room is public there: a join then succeeds and is put out when the
	// record arrives.)
	refused := joinRefused(t, bob, "design")
	if strings.Contains(fmt.Sprint(refused["message"]), "private") {
		t.Fatalf("refusal %v tells the room is private", refused)
	}
	bob.send(map[string]any{"type": "chat", "room": "design", "content": "let me in", "client_id": "b1"})
	bob.expectError(chatevent.CodeForbidden)

	// Invited (on another process, a moment ago): the join succeeds at once.
	appendACL(t, broker, member("design", "bob", chatevent.ActionInvite, "alice"))
	bob.join("design")
	if m := alice.nextOf("member"); m["username"] != "bob" || m["action"] != "invite" || m["by"] != "alice" {
		t.Fatalf("alice got %v, want the invite of bob", m)
	}
	id := bob.say("design", "hello", "b2")
	if m := alice.nextOf("chat"); m["id"] != id {
		t.Fatalf("alice got %v, want bob's message %s", m, id)
	}

	// Muted: reads, may not write.
	appendACL(t, broker, chatevent.ACLRecord{Type: chatevent.ACLMember, Room: "design", Username: "bob", Action: chatevent.ActionMute, Role: chatevent.RoleMember, Muted: true, By: "alice"})
	if m := bob.nextOf("member"); m["action"] != "mute" {
		t.Fatalf("bob got %v, want his mute", m)
	}
	bob.send(map[string]any{"type": "chat", "room": "design", "content": "muted?", "client_id": "b3"})
	bob.expectError(chatevent.CodeForbidden)
	// A resend of a message acknowledged before the mute keeps its ack
	// (and appends nothing); the refused one is refused again.
	bob.send(map[string]any{"type": "chat", "room": "design", "content": "hello", "client_id": "b2"})
	if again := bob.ackID("b2"); again != id {
		t.Fatalf("resend after the mute: ack %s, want the first ack %s", again, id)
	}
	bob.send(map[string]any{"type": "chat", "room": "design", "content": "muted?", "client_id": "b3"})
	bob.expectError(chatevent.CodeForbidden)
	alice.say("design", "you can still read", "a1")
	if m := bob.nextOf("chat"); m["content"] != "you can still read" {
		t.Fatalf("muted bob got %v", m)
	}

	// Removed: bob's subscription ends on his edge, and he cannot rejoin.
	appendACL(t, broker, member("design", "bob", chatevent.ActionRemove, "alice"))
	if m := bob.nextOf("left"); m["room"] != "design" {
		t.Fatalf("bob got %v, want left design", m)
	}
	bob.send(map[string]any{"type": "join", "room": "design"})
	bob.expectError(chatevent.CodeForbidden)
	alice.say("design", "bob is gone", "a2")
	bob.quiet("chat", 500*time.Millisecond)

	// A restarted edge rebuilds the same state from the log.
	e2.stop()
	e3 := startEdge(t, broker)
	bob2 := dial(t, e3.srv.URL, "bob")
	bob2.send(map[string]any{"type": "join", "room": "design"})
	bob2.expectError(chatevent.CodeForbidden)
	alice2 := dial(t, e3.srv.URL, "alice")
	alice2.join("design")
}

func TestBanInAPublicRoom(t *testing.T) {
	broker := testBroker(t)
	e1 := startEdge(t, broker)
	mallory := dial(t, e1.srv.URL, "mallory")
	mallory.join("lobby")
	appendACL(t, broker, member("lobby", "mallory", chatevent.ActionBan, "root"))
	if m := mallory.nextOf("left"); m["room"] != "lobby" {
		t.Fatalf("mallory got %v, want left lobby", m)
	}
	mallory.send(map[string]any{"type": "join", "room": "lobby"})
	mallory.expectError(chatevent.CodeForbidden)
	mallory.send(map[string]any{"type": "chat", "room": "lobby", "content": "spam", "client_id": "m1"})
	mallory.expectError(chatevent.CodeForbidden)
	mallory.join("elsewhere") // the connection stays usable

	appendACL(t, broker, member("lobby", "mallory", chatevent.ActionUnban, "root"))
	eventually(t, 5*time.Second, "mallory may join after the unban", func() bool {
		mallory.send(map[string]any{"type": "join", "room": "lobby"})
		for {
			m := mallory.next()
			switch m["type"] {
			case "joined":
				return true
			case "error":
				return false
			}
		}
	})
}

func TestBlockRefusesPrivateMessagesAndAppendsNothing(t *testing.T) {
	broker := testBroker(t)
	e1 := startEdge(t, broker)
	alice := dial(t, e1.srv.URL, "alice")
	appendACL(t, broker, chatevent.ACLRecord{Type: chatevent.ACLBlock, Username: "bob", Target: "alice", Blocked: true})
	k := kafkaio.Config{Brokers: broker}
	directEnd := func() (n int64) {
		for p := range 4 {
			_, next, err := k.Offsets(context.Background(), topicFor(t)+".direct", p)
			if err != nil {
				t.Fatal(err)
			}
			n += next
		}
		return n
	}
	before := directEnd()
	eventually(t, 5*time.Second, "the block is enforced", func() bool {
		alice.send(map[string]any{"type": "private", "target": "bob", "content": "hi", "client_id": fmt.Sprint("p", time.Now().UnixNano())})
		for {
			m := alice.next()
			switch m["type"] {
			case "error":
				return m["code"] == chatevent.CodeForbidden
			case "ack":
				before++ // sent before the edge applied the block
				return false
			}
		}
	})
	alice.send(map[string]any{"type": "typing", "target": "bob"})
	alice.expectError(chatevent.CodeForbidden)
	// A chat frame that also names a target is refused, not a private
	// message past the block.
	alice.send(map[string]any{"type": "chat", "room": "general", "target": "bob", "content": "sneaky", "client_id": "s1"})
	if m := alice.expectError(chatevent.CodeInvalidMessage); m["client_id"] != "s1" {
		t.Fatalf("error %v, want client_id s1", m)
	}
	alice.send(map[string]any{"type": "private", "target": "carol", "content": "hi carol", "client_id": "c1"})
	first := alice.ackID("c1")
	if got := directEnd(); got != before+1 {
		t.Fatalf("chat.direct grew by %d, want 1 (only the message to carol)", got-before)
	}

	// Carol blocks alice: a resend of the message acknowledged before keeps
	// its ack and appends nothing; a new one is refused.
	appendACL(t, broker, chatevent.ACLRecord{Type: chatevent.ACLBlock, Username: "carol", Target: "alice", Blocked: true})
	eventually(t, 5*time.Second, "carol's block is enforced", func() bool {
		alice.send(map[string]any{"type": "typing", "target": "carol"})
		alice.send(map[string]any{"type": "private", "target": "nobody", "content": "marker", "client_id": fmt.Sprint("m", time.Now().UnixNano())})
		refused := false
		for {
			m := alice.next()
			switch m["type"] {
			case "error":
				refused = refused || m["code"] == chatevent.CodeForbidden
			case "ack":
				before++ // the marker
				return refused
			}
		}
	})
	alice.send(map[string]any{"type": "private", "target": "carol", "content": "hi carol", "client_id": "c1"})
	if again := alice.ackID("c1"); again != first {
		t.Fatalf("resend after the block: ack %s, want the first ack %s", again, first)
	}
	alice.send(map[string]any{"type": "private", "target": "carol", "content": "still there?", "client_id": "c2"})
	alice.expectError(chatevent.CodeForbidden)
	if got := directEnd(); got != before+1 {
		t.Fatalf("chat.direct grew by %d, want only the markers and the first message to carol", got-before)
	}
}

func TestTypingReachesTheOtherEdgeAndIsRateLimited(t *testing.T) {
	broker := testBroker(t)
	e1 := startEdge(t, broker)
	e2 := startEdge(t, broker)
	alice := dial(t, e1.srv.URL, "alice")
	bob := dial(t, e2.srv.URL, "bob")
	alice.join("team")
	bob.join("team")

	alice.send(map[string]any{"type": "typing", "room": "team"})
	if m := bob.nextOf("typing"); m["room"] != "team" || m["username"] != "alice" {
		t.Fatalf("bob got %v, want alice typing in team", m)
	}
	// From here on both clients are read by goroutines, so that counting
	// within a window does not end them (a read deadline does).
	bobFrames, aliceFrames := c2chan(bob), c2chan(alice)
	count := func(ch <-chan map[string]any, typ string, d time.Duration) int {
		n := 0
		timeout := time.After(d)
		for {
			select {
			case m := <-ch:
				if m["type"] == typ {
					n++
				}
			case <-timeout:
				return n
			}
		}
	}
	// A burst: at most one per second is forwarded; the typer's own
	// connections get none.
	for range 20 {
		alice.send(map[string]any{"type": "typing", "room": "team"})
	}
	if got := count(bobFrames, "typing", 1500*time.Millisecond); got > 2 {
		t.Fatalf("bob got %d typing notices from a burst of 20 within 1.5 s, want at most 2", got)
	}
	// At most one per second passes: on a loaded machine the burst may
	// straddle a second boundary or two, so allow for a few.
	if n := e1.metric(t, "chat_edge_typing_dropped_total"); n < 15 {
		t.Fatalf("dropped %v typing notices of a burst of 20, want at least 15", n)
	}
	if got := count(aliceFrames, "typing", 100*time.Millisecond); got != 0 {
		t.Fatalf("alice got %d of her own typing notices", got)
	}
	// A DM notice reaches the target.
	bob.send(map[string]any{"type": "typing", "target": "alice"})
	for waited := time.After(15 * time.Second); ; {
		select {
		case m := <-aliceFrames:
			if m["type"] != "typing" {
				continue
			}
			if m["username"] != "bob" || m["target"] != "alice" {
				t.Fatalf("alice got %v, want bob's typing notice", m)
			}
		case <-waited:
			t.Fatal("alice got no notice of bob typing to her")
		}
		break
	}
	if got := count(aliceFrames, "typing", time.Second); got != 0 {
		t.Fatalf("alice got %d more notices of bob typing to her, want 1 in all", got+1)
	}
	// Typing in a room not joined on this connection is refused.
	alice.send(map[string]any{"type": "typing", "room": "other"})
	if m := <-aliceFrames; m["type"] != "error" || m["code"] != chatevent.CodeForbidden {
		t.Fatalf("typing in a room not joined: %v, want forbidden", m)
	}
	// Nothing of it is in the durable topics.
	k := kafkaio.Config{Brokers: broker}
	for _, topic := range []string{topicFor(t), topicFor(t) + ".direct"} {
		for p := range 4 {
			_, next, err := k.Offsets(context.Background(), topic, p)
			if err != nil {
				t.Fatal(err)
			}
			if next != 0 {
				t.Fatalf("%s/%d has %d records after typing only", topic, p, next)
			}
		}
	}
}

func TestConversationFramesBadInputKeepsTheConnection(t *testing.T) {
	broker := testBroker(t)
	e1 := startEdge(t, broker)
	c := dial(t, e1.srv.URL, "alice")
	for _, f := range []string{
		`{"type":"typing"}`,
		`{"type":"typing","room":"a","target":"bob"}`,
		`{"type":"typing","room":"Bad Room"}`,
		`{"type":"read","room":"a"}`,
		`{"type":"read","room":"a","pos":"x"}`,
		`{"type":"read","target":"bob","pos":"1:-2"}`,
		`{"type":"edit","id":"nope","content":"x","client_id":"e1"}`,
		`{"type":"edit","id":"01936c4e-8a3b-7cde-8f00-0123456789ab","client_id":"e2"}`,
		`{"type":"edit","id":"01936c4e-8a3b-7cde-8f00-0123456789ab","content":"x"}`,
		`{"type":"delete","client_id":"d1"}`,
		`{"type":"delete","id":"01936c4e-8a3b-7cde-8f00-0123456789ab","client_id":"d2","ID":"x"}`,
	} {
		c.send(f)
		if m := c.nextOf("error"); m["code"] != chatevent.CodeInvalidMessage {
			t.Fatalf("%s: got %v, want invalid_message", f, m)
		}
	}
	c.join("still-here")
}

func TestEditWithoutHistoryIsUnavailable(t *testing.T) {
	broker := testBroker(t)
	e1 := startEdge(t, broker, func(c *edge.Config) { c.HistoryURL = "" })
	c := dial(t, e1.srv.URL, "alice")
	c.send(map[string]any{"type": "delete", "id": "01936c4e-8a3b-7cde-8f00-0123456789ab", "client_id": "d1"})
	if m := c.expectError(chatevent.CodeUnavailable); m["client_id"] != "d1" {
		t.Fatalf("error %v does not name the client_id", m)
	}
}

// A room created private while someone who is not a member was in it (it
// was an empty public room): they leave it at once and read nothing more.
func TestRoomMadePrivatePutsOutNonMembers(t *testing.T) {
	broker := testBroker(t)
	e1 := startEdge(t, broker)
	eve := dial(t, e1.srv.URL, "eve")
	alice := dial(t, e1.srv.URL, "alice")
	eve.join("secret")
	alice.join("secret")
	appendACL(t, broker, chatevent.ACLRecord{Type: chatevent.ACLRoom, Room: "secret", Username: "alice", Private: true, By: "alice"})
	if m := eve.nextOf("left"); m["room"] != "secret" {
		t.Fatalf("eve got %v, want left secret", m)
	}
	alice.send(map[string]any{"type": "chat", "room": "secret", "content": "the plan", "client_id": "a1"})
	for acked, echoed := false, false; !acked || !echoed; { // in either order
		m := alice.next()
		acked = acked || m["type"] == "ack"
		echoed = echoed || m["type"] == "chat" && m["content"] == "the plan"
		if m["type"] == "error" {
			t.Fatalf("the owner's chat: %v", m)
		}
	}
	eve.quiet("chat", 500*time.Millisecond)
}
