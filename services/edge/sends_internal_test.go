package edge

import (
	"fmt"
	"testing"
	"time"

	"github.com/chatsys/chat/pkg/chatevent"
)

func appendSend(t testing.TB, s *sends, user, clientID string) sendAction {
	t.Helper()
	_, act := s.begin(user, clientID, func() chatevent.Event { return chatevent.Event{ID: clientID} }, func(string, error) {})
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
	s.begin("u", "pending", func() chatevent.Event { return chatevent.Event{ID: "pending"} }, func(string, error) {})
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
	if _, act := s.begin("u", "pending", func() chatevent.Event { return chatevent.Event{} }, func(string, error) {}); act != sendWait {
		t.Fatalf("the pending send was forgotten: action %v, want sendWait", act)
	}
	// The newest sends are remembered, the oldest are not.
	newest := fmt.Sprint(20*max - 1)
	if ev, act := s.begin("u", newest, func() chatevent.Event { return chatevent.Event{ID: "another"} }, nil); act != sendAcked || ev.ID != newest {
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
