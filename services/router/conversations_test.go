package router

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/chatsys/chat/pkg/chatacl"
	"github.com/chatsys/chat/pkg/chatevent"
	"github.com/chatsys/chat/pkg/kafkaio"
	"github.com/chatsys/chat/pkg/testutil"
)

// aclWriter appends chat.acl records as history does (through a follower
// of its own, as another process would).
func aclWriter(t testing.TB, k kafkaio.Config) *chatacl.Appender {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	f := chatacl.New(k, testLog(), nil)
	if err := f.Start(ctx); err != nil {
		t.Fatal(err)
	}
	a := chatacl.NewAppender(k, f)
	t.Cleanup(func() { a.Close(); f.Close() })
	return a
}

func appendACL(t testing.TB, a *chatacl.Appender, recs ...chatevent.ACLRecord) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.Append(ctx, recs...); err != nil {
		t.Fatal(err)
	}
}

func memberRecord(room, user, action, by string) chatevent.ACLRecord {
	m := chatevent.Membership{}.After(action)
	return chatevent.ACLRecord{Type: chatevent.ACLMember, Room: room, Username: user, Action: action,
		Role: m.Role, Muted: m.Muted, Banned: m.Banned, By: by}
}

// TestMembersOfPrivateRoom: the member list of a private room is for its
// members (and admins) only; to anyone else it is answered exactly as a
// room that does not exist. A member invited on another process a moment
// ago is not refused, and one removed loses the list.
func TestMembersOfPrivateRoom(t *testing.T) {
	b := startBroker(t)
	k := testKafka(t, b.Addr())
	ensureTopics(t, k)
	acl := aclWriter(t, k)
	appendACL(t, acl,
		chatevent.ACLRecord{Type: chatevent.ACLRoom, Room: "design", Username: "alice", Private: true, By: "alice"},
		memberRecord("design", "bob", chatevent.ActionInvite, "alice"),
		chatevent.ACLRecord{Type: chatevent.ACLRoom, Room: "lobby", Username: "alice", By: "alice"}, // public, nobody online
	)

	e1 := newFakeEdge(t, k, "e1")
	for _, u := range []string{"alice", "bob", "carol"} {
		e1.publish(chatevent.PresenceConnect, u, "", 1)
	}
	e1.publish(chatevent.PresenceJoin, "alice", "design", 0)
	e1.publish(chatevent.PresenceJoin, "bob", "design", 0)
	e1.publish(chatevent.PresenceJoin, "carol", "general", 0)
	e1.beat(500 * time.Millisecond)

	r := startRouter(t, testConfig(k))
	r.waitCaughtUp(t, 30*time.Second)

	members := func(room, tok string) (int, []byte) {
		t.Helper()
		return get(t, r.URL+"/v1/rooms/"+room+"/members", tok)
	}
	list := func(body []byte) []string {
		t.Helper()
		var res struct {
			Room    string
			Members []string
		}
		if err := json.Unmarshal(body, &res); err != nil {
			t.Fatalf("members body %s: %v", body, err)
		}
		return res.Members
	}
	eventually(t, 10*time.Second, "alice and bob online in design, carol in general", func() bool {
		st, body := members("design", token(t, "alice"))
		st2, body2 := members("general", token(t, "alice"))
		return st == 200 && slices.Equal(list(body), []string{"alice", "bob"}) && st2 == 200 && slices.Equal(list(body2), []string{"carol"})
	})

	// A missing room (no record, nobody online) and the private room seen
	// by a non-member: the same status, the same body.
	stMissing, missing := members("nosuchroom", token(t, "carol"))
	if stMissing != http.StatusNotFound {
		t.Fatalf("members of a missing room = %d %s, want 404", stMissing, missing)
	}
	var res struct{ Error apiError }
	if err := json.Unmarshal(missing, &res); err != nil || res.Error.Code != "not_found" {
		t.Errorf("members of a missing room = %s, want error code not_found", missing)
	}
	start := time.Now()
	st, body := members("design", token(t, "carol"))
	if st != stMissing || string(body) != string(missing) {
		t.Errorf("members of private design as a non-member = %d %s, want exactly as a missing room: %d %s", st, body, stMissing, missing)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the refusal took %v: the sync before refusing must be brief", d)
	}

	// Members, the owner and admins get the list.
	for _, tok := range []string{token(t, "alice"), token(t, "bob"), testutil.Token(t, testSecret, "root", true)} {
		if st, body := members("design", tok); st != 200 || !slices.Equal(list(body), []string{"alice", "bob"}) {
			t.Errorf("members of design = %d %s, want 200 [alice bob]", st, body)
		}
	}
	// A public room with a record but nobody online exists: an empty list.
	if st, body := members("lobby", token(t, "carol")); st != 200 || len(list(body)) != 0 {
		t.Errorf("members of lobby (public, nobody online) = %d %s, want 200 and no members", st, body)
	}
	// An admin gets 404 for a room that does not exist too.
	if st, _ := members("nosuchroom", testutil.Token(t, testSecret, "root", true)); st != http.StatusNotFound {
		t.Errorf("members of a missing room as an admin = %d, want 404", st)
	}

	// Carol invited (through another process's appender): answered at once.
	appendACL(t, acl, memberRecord("design", "carol", chatevent.ActionInvite, "alice"))
	if st, body := members("design", token(t, "carol")); st != 200 || !slices.Equal(list(body), []string{"alice", "bob"}) {
		t.Errorf("members of design right after carol's invitation = %d %s, want 200 [alice bob]", st, body)
	}
	// Bob removed: refused (as a missing room) once the router has read
	// the removal (an allowed answer is not re-checked against the log).
	appendACL(t, acl, memberRecord("design", "bob", chatevent.ActionRemove, "alice"))
	eventually(t, 10*time.Second, "bob refused after his removal", func() bool {
		st, body := members("design", token(t, "bob"))
		return st == stMissing && string(body) == string(missing)
	})
}

// TestDirectEventsRouted appends to chat.direct what edges append (a
// private message, its edit and delete, DM and room read positions, a
// blocked user's message that made it into the log) and checks which edges'
// deliveries partitions get each: a DM's events go to both parties' edges,
// a room read to the reader's only.
func TestDirectEventsRouted(t *testing.T) {
	b := startBroker(t)
	k := testKafka(t, b.Addr())
	ensureTopics(t, k)
	acl := aclWriter(t, k)
	appendACL(t, acl, chatevent.ACLRecord{Type: chatevent.ACLBlock, Username: "bob", Target: "carol", Blocked: true})

	// alice on e1 and e3 (two devices), bob on e2, carol on e3.
	edges := map[string]*fakeEdge{"e1": newFakeEdge(t, k, "e1"), "e2": newFakeEdge(t, k, "e2"), "e3": newFakeEdge(t, k, "e3")}
	edges["e1"].publish(chatevent.PresenceConnect, "alice", "", 1)
	edges["e3"].publish(chatevent.PresenceConnect, "alice", "", 1)
	edges["e2"].publish(chatevent.PresenceConnect, "bob", "", 1)
	edges["e3"].publish(chatevent.PresenceConnect, "carol", "", 1)
	for _, e := range edges {
		e.beat(500 * time.Millisecond)
	}
	r := startRouter(t, testConfig(k))
	r.waitCaughtUp(t, 30*time.Second)

	w := k.NewWriter(k.DirectTopic)
	defer w.Close()
	now := chatevent.FormatTime(time.Now())
	put := func(key string, ev chatevent.Event) chatevent.Event {
		t.Helper()
		ev.ID, ev.Timestamp = chatevent.NewID(), now
		b, err := ev.Encode()
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := w.WriteMessages(ctx, kafka.Message{Key: []byte(key), Value: b}); err != nil {
			t.Fatal(err)
		}
		return ev
	}
	ab := chatevent.DMKey("alice", "bob")
	msg := put(ab, chatevent.Event{Type: chatevent.TypePrivate, Username: "alice", Target: "bob", Content: "hi", ClientID: "c1"})
	edit := put(ab, chatevent.Event{Type: chatevent.TypeEdit, Username: "alice", Target: "bob", Content: "hello", EditedAt: now, ClientID: "c2"})
	del := put(ab, chatevent.Event{Type: chatevent.TypeDelete, Username: "alice", Target: "bob", ClientID: "c3"})
	dmRead := put(ab, chatevent.Event{Type: chatevent.TypeRead, Username: "bob", Target: "alice", Pos: "1:7"})
	roomRead := put(chatevent.ReadKey("alice"), chatevent.Event{Type: chatevent.TypeRead, Username: "alice", Room: "general", Pos: "2:42"})
	bobRoomRead := put(chatevent.ReadKey("bob"), chatevent.Event{Type: chatevent.TypeRead, Username: "bob", Room: "general", Pos: "0:3"})
	blocked := put(chatevent.DMKey("carol", "bob"), chatevent.Event{Type: chatevent.TypePrivate, Username: "carol", Target: "bob", Content: "sent before the block", ClientID: "c4"})
	roomEdit := put("room:general", chatevent.Event{Type: chatevent.TypeEdit, Username: "alice", Room: "general", Content: "x", EditedAt: now, ClientID: "c5"})
	// The last one: once it is delivered, everything before it was routed.
	last := put(chatevent.ReadKey("carol"), chatevent.Event{Type: chatevent.TypeRead, Username: "carol", Room: "general", Pos: "0:1"})

	want := map[string]string{
		msg.ID:         "e1 e2 e3",
		edit.ID:        "e1 e2 e3",
		del.ID:         "e1 e2 e3",
		dmRead.ID:      "e1 e2 e3",
		roomRead.ID:    "e1 e3",
		bobRoomRead.ID: "e2",
		blocked.ID:     "e2 e3",
		last.ID:        "e3",
	}
	type delivery struct {
		ev   chatevent.Event
		edge string
	}
	var got []delivery
	// The keys hash to different partitions, each fetched on its own, so
	// the last one put can be routed first: wait for every expected
	// delivery, not for the last event.
	complete := func() bool {
		got = got[:0]
		for _, m := range readAll(t, k, k.DeliveriesTopic, k.SmallPartitions) {
			edge := string(m.Key)
			if p := kafkaio.PartitionFor(edge, k.SmallPartitions); m.Partition != p {
				t.Errorf("delivery for %s in partition %d, want %d (the one its id hashes to)", edge, m.Partition, p)
			}
			ev, _, err := chatevent.DecodeDelivery(m.Value)
			if err != nil {
				t.Fatalf("delivery %s does not decode: %v", m.Value, err)
			}
			got = append(got, delivery{ev, edge})
		}
		n := map[string]int{}
		for _, d := range got {
			n[d.ev.ID]++
		}
		for id, w := range want {
			if n[id] < len(strings.Fields(w)) {
				return false
			}
		}
		return true
	}
	// On the deadline the checks below say which delivery is missing.
	for deadline := time.Now().Add(30 * time.Second); !complete() && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
	}
	byID := map[string][]string{}
	var order []string // event ids as e1 got them
	for _, d := range got {
		byID[d.ev.ID] = append(byID[d.ev.ID], d.edge)
		if d.edge == "e1" {
			order = append(order, d.ev.ID)
		}
		switch d.ev.ID {
		case dmRead.ID, roomRead.ID, bobRoomRead.ID, last.ID:
			var in chatevent.Event
			for _, e := range []chatevent.Event{dmRead, roomRead, bobRoomRead, last} {
				if e.ID == d.ev.ID {
					in = e
				}
			}
			if d.ev.Pos != in.Pos || d.ev.Room != in.Room || d.ev.Target != in.Target {
				t.Errorf("read delivered as %+v, want the position read %s kept (%+v)", d.ev, in.Pos, in)
			}
		case edit.ID:
			if d.ev.Content != "hello" || d.ev.EditedAt != now || d.ev.Type != chatevent.TypeEdit {
				t.Errorf("edit delivered as %+v", d.ev)
			}
		}
	}
	if _, ok := byID[roomEdit.ID]; ok {
		t.Errorf("a room's edit found on chat.direct was delivered to %v, want not routed", byID[roomEdit.ID])
	}
	for id, w := range want {
		e := byID[id]
		sort.Strings(e)
		if g := strings.Join(e, " "); g != w {
			t.Errorf("event %s delivered to edges %q, want %q", describe(id, map[string]chatevent.Event{
				msg.ID: msg, edit.ID: edit, del.ID: del, dmRead.ID: dmRead, roomRead.ID: roomRead,
				bobRoomRead.ID: bobRoomRead, blocked.ID: blocked, last.ID: last}), g, w)
		}
	}
	// e1 gets the conversation's events in log order: message, edit,
	// delete, receipt (alice's room read is in another partition).
	order = slices.DeleteFunc(order, func(id string) bool { return id == roomRead.ID })
	if wantOrder := []string{msg.ID, edit.ID, del.ID, dmRead.ID}; !slices.Equal(order, wantOrder) {
		t.Errorf("e1's deliveries in order %v, want %v", order, wantOrder)
	}
}

func describe(id string, evs map[string]chatevent.Event) string {
	e := evs[id]
	return fmt.Sprintf("%s by %s (room %q, target %q)", e.Type, e.Username, e.Room, e.Target)
}
