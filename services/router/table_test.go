package router

import (
	"fmt"
	"testing"
	"time"

	"github.com/chatsys/chat/pkg/chatevent"
)

func TestTable(t *testing.T) {
	tb := newTable()
	t0 := time.Unix(1_800_000_000, 0)
	apply := func(typ, edge, user, room string, conns int, at time.Time) {
		tb.apply(&chatevent.Presence{Type: typ, Edge: edge, User: user, Room: room, Connections: conns}, at)
	}
	apply("connect", "e1", "alice", "", 1, t0)
	apply("connect", "e2", "alice", "", 2, t0)
	apply("connect", "e2", "bob", "", 1, t0)
	apply("join", "e1", "alice", "general", 0, t0)
	apply("join", "e2", "bob", "general", 0, t0)
	apply("join", "e2", "bob", "random", 0, t0)
	for _, tc := range []struct {
		name string
		got  any
		want any
	}{
		{"alice connections", tb.presence("alice").Connections, 3},
		{"bob online", tb.presence("bob").Online, true},
		{"carol offline", tb.presence("carol").Online, false},
		{"members", fmt.Sprint(tb.members("general")), "[alice bob]"},
		{"edges of alice or bob", fmt.Sprint(tb.edgesOf("alice", "bob")), "[e1 e2]"},
		{"edges of bob", fmt.Sprint(tb.edgesOf("bob")), "[e2]"},
		{"edges of nobody", len(tb.edgesOf("nobody")), 0},
	} {
		if fmt.Sprint(tc.got) != fmt.Sprint(tc.want) {
			t.Errorf("%s = %v, want %v", tc.name, tc.got, tc.want)
		}
	}
	apply("leave", "e2", "bob", "random", 0, t0.Add(time.Second))
	if m := tb.members("random"); len(m) != 0 {
		t.Errorf("random after leave = %v, want empty", m)
	}
	apply("heartbeat", "e1", "", "", 0, t0.Add(10*time.Second))
	gone := tb.expire(t0.Add(5 * time.Second)) // e2 last heard at t0+1s
	if len(gone) != 1 || gone["e2"] == nil {
		t.Fatalf("expired = %v, want e2", gone)
	}
	if p := tb.presence("bob"); p.Online || p.LastSeen == "" {
		t.Errorf("bob after e2 expired = %+v, want offline with last_seen", p)
	}
	if p := tb.presence("alice"); p.Connections != 1 {
		t.Errorf("alice after e2 expired = %+v, want 1 connection (e1)", p)
	}
	apply("disconnect", "e1", "alice", "", 0, t0.Add(11*time.Second))
	if p := tb.presence("alice"); p.Online || len(tb.members("general")) != 0 {
		t.Errorf("alice after disconnect = %+v, members %v; want offline, no members", p, tb.members("general"))
	}
}

func TestLeaveIDIsStableAndTimeOrdered(t *testing.T) {
	beat := time.Unix(1_800_000_000, 0)
	a, b := leaveID("e1", beat, "bob", "general"), leaveID("e1", beat, "bob", "general")
	if a != b {
		t.Fatalf("leaveID not deterministic: %s %s", a, b)
	}
	if c := leaveID("e1", beat, "bob", "random"); c == a {
		t.Fatal("leaveID equal for different rooms")
	}
	if later := leaveID("e1", beat.Add(time.Second), "bob", "general"); later <= a {
		t.Fatalf("leaveID %s not after %s for a later heartbeat", later, a)
	}
	ev := chatevent.Event{ID: a, Type: "leave", Room: "general", Username: "bob", Timestamp: chatevent.FormatTime(beat)}
	if err := ev.Validate(); err != nil {
		t.Fatal(err)
	}
}
