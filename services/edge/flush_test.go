package edge_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/chatsys/chat/services/edge"
)

// Frames fanned out to connections whose writer goroutine has gone idle
// are written by the fan-out's flushers: each arrives whole, once, in order,
// also after the write deadline of the connection's last blocking write
// has passed.
func TestFanOutToIdleConnections(t *testing.T) {
	e := startEdge(t, testBroker(t), func(c *edge.Config) {
		c.RatePerSecond, c.RateBurst = 1000, 1000
		c.WriteTimeout = 300 * time.Millisecond // the deadline of the last blocking write lapses while idle
	})
	subs := make([]*client, 20)
	for i := range subs {
		subs[i] = dial(t, e.URL, fmt.Sprint("s", i))
		subs[i].join("general")
	}
	pub := dial(t, e.URL, "pub")
	time.Sleep(1500 * time.Millisecond) // past the writer's linger: every writer goroutine exits
	const n = 50
	for i := 0; i < n; i++ {
		pub.say("general", fmt.Sprint("m", i), fmt.Sprint("c", i))
	}
	for _, s := range subs {
		for i := 0; i < n; i++ {
			m := s.nextOf("chat")
			if m["content"] != fmt.Sprint("m", i) {
				t.Fatalf("%s: message %d = %v, want m%d", s.user, i, m["content"], i)
			}
		}
	}
}
