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

func TestHealth(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	const gap = 3 * time.Second
	var h health
	for i, step := range []struct {
		at       time.Duration
		ends     []int64 // nil: the probe failed
		pos      []int64
		healthy  bool
		sinceOff time.Duration // want since = t0+sinceOff when healthy
	}{
		{0, []int64{5, 7}, []int64{5, 7}, false, 0},                        // first probe: nothing to compare with
		{time.Second, []int64{6, 7}, []int64{5, 7}, true, time.Second},     // caught up with what the first probe saw
		{2 * time.Second, []int64{6, 9}, []int64{6, 8}, true, time.Second}, // behind the newest ends, not the previous: fine
		{3 * time.Second, nil, []int64{6, 9}, false, 0},                    // broker away
		{4 * time.Second, []int64{6, 9}, []int64{6, 9}, false, 0},          // back, but no previous probe to compare with
		{5 * time.Second, []int64{8, 9}, []int64{6, 9}, true, 5 * time.Second},
		{6 * time.Second, []int64{9, 9}, []int64{7, 9}, false, 0}, // a reader stalled behind what was there a probe ago
		{7 * time.Second, []int64{9, 9}, []int64{9, 9}, true, 7 * time.Second},
		{7*time.Second + gap + time.Millisecond, []int64{9, 9}, []int64{9, 9}, false, 0}, // probes too far apart
	} {
		got, _ := h.observe(t0.Add(step.at), step.ends, step.pos, gap)
		since := h.healthySince(t0.Add(step.at))
		if got != step.healthy || (got && !since.Equal(t0.Add(step.sinceOff))) || (!got && !since.IsZero()) {
			t.Errorf("step %d: observe = %v since %v, want %v since +%v", i, got, since.Sub(t0), step.healthy, step.sinceOff)
		}
	}
	// Healthy at the last probe, but no probe for longer than the gap (the
	// process was stopped): not healthy now, before the next probe says so.
	h.observe(t0.Add(20*time.Second), []int64{9, 9}, []int64{9, 9}, gap)
	h.observe(t0.Add(21*time.Second), []int64{9, 9}, []int64{9, 9}, gap)
	if since := h.healthySince(t0.Add(22 * time.Second)); !since.Equal(t0.Add(21 * time.Second)) {
		t.Fatalf("healthy since %v, want +21s", since.Sub(t0))
	}
	if since := h.healthySince(t0.Add(21*time.Second + gap + time.Millisecond)); !since.IsZero() {
		t.Fatalf("healthy since %v a gap after the last probe, want not healthy", since.Sub(t0))
	}
}

func TestForget(t *testing.T) {
	tb := newTable()
	t0 := time.Unix(1_800_000_000, 0)
	tb.apply(&chatevent.Presence{Type: "connect", Edge: "e1", User: "old-but-online", Connections: 1}, t0)
	tb.apply(&chatevent.Presence{Type: "connect", Edge: "e1", User: "old", Connections: 1}, t0)
	tb.apply(&chatevent.Presence{Type: "disconnect", Edge: "e1", User: "old"}, t0.Add(time.Hour))
	tb.apply(&chatevent.Presence{Type: "connect", Edge: "e1", User: "recent", Connections: 1}, t0)
	tb.apply(&chatevent.Presence{Type: "disconnect", Edge: "e1", User: "recent"}, t0.Add(48*time.Hour))
	if n := tb.forget(t0.Add(24*time.Hour), forgetScan); n != 1 {
		t.Errorf("forget = %d, want 1 (old)", n)
	}
	for user, want := range map[string]bool{"old-but-online": true, "old": false, "recent": true} {
		if got := tb.presence(user).LastSeen != ""; got != want {
			t.Errorf("last_seen of %s kept = %v, want %v", user, got, want)
		}
	}
}

// One forget looks at a bounded part of the table; successive ones cover
// all of it.
func TestForgetIsBoundedPerCall(t *testing.T) {
	tb := newTable()
	t0 := time.Unix(1_800_000_000, 0)
	for i := range 1000 {
		u := fmt.Sprint("user", i)
		tb.apply(&chatevent.Presence{Type: "connect", Edge: "e1", User: u, Connections: 1}, t0)
		tb.apply(&chatevent.Presence{Type: "disconnect", Edge: "e1", User: u}, t0)
	}
	tb.apply(&chatevent.Presence{Type: "connect", Edge: "e1", User: "online", Connections: 1}, t0)
	total := 0
	for calls := 1; total < 1000; calls++ {
		n := tb.forget(t0.Add(time.Hour), 100)
		if n > 100 {
			t.Fatalf("one forget dropped %d entries, want at most the 100 it may look at", n)
		}
		total += n
		if calls > 500 {
			t.Fatalf("%d calls forgot %d of 1000 old users", calls, total)
		}
	}
	if tb.presence("online").LastSeen == "" {
		t.Fatal("a connected user was forgotten")
	}
}
