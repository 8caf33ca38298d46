package edge

import (
	"fmt"
	"testing"
	"time"

	"github.com/chatsys/chat/pkg/chatevent"
)

func appendSend(t testing.TB, s *sends, user, clientID string) sendAction {
	t.Helper()
	_, act := s.begin(user, clientID, 0, func() chatevent.Event { return chatevent.Event{ID: clientID} }, func(string, error) {})
	if act == sendAppend {
		s.finish(user, clientID, nil)
	}
	return act
}

// A full table drops its oldest entries first, keeps pending ones, and its
// queue stays bounded however many sends go through it.
func TestSendsExpireOldestFirstWhenFull(t *testing.T) {
	const max = 3000
	s := newSends(time.Hour, max)
	// One send stays pending throughout: it must never be forgotten.
	s.begin("u", "pending", 0, func() chatevent.Event { return chatevent.Event{ID: "pending"} }, func(string, error) {})
	for i := 0; i < 20*max; i++ {
		if act := appendSend(t, s, "u", fmt.Sprint(i)); act != sendAppend {
			t.Fatalf("send %d: action %v, want a new append", i, act)
		}
		if live := len(s.fifo) - s.head; live > max+1025 {
			t.Fatalf("after %d sends the queue holds %d entries (table max %d)", i, live, max)
		}
		if len(s.fifo) > 2*(max+1025)+1 {
			t.Fatalf("after %d sends the queue's slice is %d long: expired entries are not reclaimed", i, len(s.fifo))
		}
	}
	if len(s.m) > max+1 {
		t.Fatalf("table holds %d entries, max %d", len(s.m), max)
	}
	if _, act := s.begin("u", "pending", 0, func() chatevent.Event { return chatevent.Event{} }, func(string, error) {}); act != sendWait {
		t.Fatalf("the pending send was forgotten: action %v, want sendWait", act)
	}
	// The newest sends are remembered, the oldest are not.
	newest := fmt.Sprint(20*max - 1)
	if ev, act := s.begin("u", newest, 0, func() chatevent.Event { return chatevent.Event{ID: "another"} }, nil); act != sendAcked || ev.ID != newest {
		t.Fatalf("newest send again: action %v, id %q; want sendAcked with the first send's id %q", act, ev.ID, newest)
	}
	if act := appendSend(t, s, "u", "0"); act != sendAppend {
		t.Fatalf("oldest send: action %v, want sendAppend (expired)", act)
	}
}

func TestSendsExpireAfterWindow(t *testing.T) {
	s := newSends(50*time.Millisecond, 1000)
	appendSend(t, s, "u", "a")
	if act := appendSend(t, s, "u", "a"); act != sendAcked {
		t.Fatalf("resend within the window: action %v, want sendAcked", act)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		s.mu.Lock()
		s.expireLocked(time.Now())
		_, ok := s.m[sendKey{"u", "a"}]
		s.mu.Unlock()
		if !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("entry still remembered 5 s after a 50 ms window")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if act := appendSend(t, s, "u", "a"); act != sendAppend {
		t.Fatalf("resend after the window: action %v, want sendAppend", act)
	}
}

// BenchmarkSendsFull is a send into a table at its bound (the steady state
// of a busy edge: 200 000 entries are 20 s of 10 000 msg/s). Each send
// expires one entry; this must not cost a copy of the table.
func BenchmarkSendsFull(b *testing.B) {
	s := newSends(time.Hour, maxRememberedSends)
	for i := 0; i < maxRememberedSends; i++ {
		appendSend(b, s, "u", fmt.Sprint("fill", i))
	}
	ids := make([]string, b.N)
	for i := range ids {
		ids[i] = fmt.Sprint(i)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		appendSend(b, s, "u", ids[i])
	}
}

// Sends refused before their append (rate limited) are forgotten; their
// queue entries must not pile up behind a fresh entry for the window.
func TestSendsRefusedSendsDoNotGrowTheQueue(t *testing.T) {
	s := newSends(time.Hour, 1000)
	appendSend(t, s, "u", "fresh") // at the front, fresh for an hour
	for i := 0; i < 100_000; i++ {
		cid := fmt.Sprint("refused", i)
		if _, act := s.begin("u", cid, 0, func() chatevent.Event { return chatevent.Event{ID: cid} }, nil); act != sendAppend {
			t.Fatalf("refused send %d: action %v", i, act)
		}
		s.forget("u", cid, &refusal{"rate_limited", "slow down"})
		if live := len(s.fifo) - s.head; live > len(s.m)+1030 {
			t.Fatalf("after %d refused sends the queue holds %d entries for %d remembered sends", i+1, live, len(s.m))
		}
	}
	if _, act := s.begin("u", "fresh", 0, func() chatevent.Event { return chatevent.Event{} }, nil); act != sendAcked {
		t.Fatalf("the fresh send was forgotten: action %v", act)
	}
}

// A forgotten send's old queue entry does not expire the same client_id
// sent again later: the oldest live send goes first.
func TestSendsForgottenEntryDoesNotExpireItsResend(t *testing.T) {
	s := newSends(time.Hour, 3)
	appendSend(t, s, "u", "a")
	s.begin("u", "k", 0, func() chatevent.Event { return chatevent.Event{ID: "k1"} }, nil)
	s.forget("u", "k", &refusal{"rate_limited", "slow down"}) // queue: a, k (forgotten)
	appendSend(t, s, "u", "b")
	if act := appendSend(t, s, "u", "k"); act != sendAppend {
		t.Fatalf("k sent again: action %v, want a new append", act)
	}
	appendSend(t, s, "u", "c") // a, k (forgotten), b, k, c
	appendSend(t, s, "u", "d") // over the bound: a goes
	appendSend(t, s, "u", "e") // over the bound again: b goes, not k
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m[sendKey{"u", "k"}] == nil {
		t.Fatal("k, sent after b, was expired before it")
	}
	if s.m[sendKey{"u", "b"}] != nil {
		t.Fatal("b, older than k, is still remembered")
	}
}

// The delivery filter: a message once, a delete once, no edit of a message
// deleted before it, several edits of one message all.
func TestOnceFilter(t *testing.T) {
	f := newOnceFilter()
	ev := func(typ, id string) *chatevent.Event { return &chatevent.Event{Type: typ, ID: id} }
	sent := func(id, user, cid string) *chatevent.Event {
		return &chatevent.Event{Type: chatevent.TypeChat, ID: id, Username: user, ClientID: cid}
	}
	if !f.keep(sent("s1", "alice", "c1")) || f.keep(sent("s2", "alice", "c1")) || !f.keep(sent("s3", "bob", "c1")) {
		t.Fatal("a second message of one user's client_id (a resend appended with a new id) is delivered, or another user's is not")
	}
	for i, c := range []struct {
		ev   *chatevent.Event
		keep bool
	}{
		{ev(chatevent.TypeChat, "a"), true},
		{ev(chatevent.TypeChat, "a"), false},
		{ev(chatevent.TypeEdit, "a"), true},
		{ev(chatevent.TypeEdit, "a"), true},
		{ev(chatevent.TypeDelete, "a"), true},
		{ev(chatevent.TypeEdit, "a"), false},
		{ev(chatevent.TypeDelete, "a"), false},
		{ev(chatevent.TypeEdit, "b"), true},
		// A private message delivered late, after its delete: not shown.
		{ev(chatevent.TypeDelete, "late"), true},
		{ev(chatevent.TypePrivate, "late"), false},
	} {
		if got := f.keep(c.ev); got != c.keep {
			t.Errorf("%d: keep(%s %s) = %v, want %v", i, c.ev.Type, c.ev.ID, got, c.keep)
		}
	}
}
