package edge_test

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/chatsys/chat/pkg/kafkaio"
	"github.com/chatsys/chat/services/edge"
)

func TestResumeSinceNoGapNoDuplicate(t *testing.T) {
	e := startEdge(t, testBroker(t), func(c *edge.Config) { c.RatePerSecond, c.RateBurst = 1e6, 1e6 })
	x := dial(t, e.URL, "xavier")
	x.join("general")
	pub := dial(t, e.URL, "pub")
	noise := dial(t, e.URL, "noise") // other rooms share the partition space
	pub.say("general", "m0", "c0")
	first := x.nextOf("chat")
	since := first["pos"].(string)
	x.ws.Close()

	const missed, live = 25, 40
	for i := 1; i <= missed; i++ {
		pub.say("general", fmt.Sprint("m", i), fmt.Sprint("c", i))
		noise.say(fmt.Sprint("room", i%5), "noise", fmt.Sprint("n", i))
	}
	// More messages keep arriving while x resumes.
	go func() {
		for i := missed + 1; i <= missed+live; i++ {
			pub.ws.WriteMessage(websocket.TextMessage, []byte(fmt.Sprintf(`{"type":"chat","room":"general","content":"m%d","client_id":"c%d"}`, i, i)))
			time.Sleep(2 * time.Millisecond)
		}
	}()
	x2 := dial(t, e.URL, "xavier")
	x2.send(map[string]any{"type": "join", "room": "general", "since": since})
	j := x2.nextOf("joined")
	if j["recovered"] != true {
		t.Fatalf("joined = %v, want recovered:true", j)
	}
	lastOff := offsetOf(t, since)
	for want := 1; want <= missed+live; want++ {
		m := x2.nextOf("chat")
		if m["content"] != fmt.Sprint("m", want) {
			t.Fatalf("resumed message %d = %v, want m%d (no gap, no duplicate, in order)", want, m["content"], want)
		}
		if off := offsetOf(t, m["pos"].(string)); off <= lastOff {
			t.Fatalf("pos %v not after previous offset %d", m["pos"], lastOff)
		} else {
			lastOff = off
		}
	}
	if m, err := x2.read(300 * time.Millisecond); err == nil && m["type"] == "chat" {
		t.Fatalf("extra message after the expected ones: %v", m)
	}
}

func offsetOf(t testing.TB, pos string) int64 {
	t.Helper()
	_, o, ok := strings.Cut(pos, ":")
	n, err := strconv.ParseInt(o, 10, 64)
	if !ok || err != nil {
		t.Fatalf("pos %q is not <partition>:<offset>", pos)
	}
	return n
}

func TestResumeNotRecovered(t *testing.T) {
	e := startEdge(t, testBroker(t))
	pub := dial(t, e.URL, "pub")
	watcher := dial(t, e.URL, "watcher")
	watcher.join("general")
	pub.say("general", "hello", "c0") // its echo may arrive before the ack: read it elsewhere
	m := watcher.nextOf("chat")
	pos := m["pos"].(string)
	part := kafkaio.PartitionFor("general", 4)
	for _, tc := range []struct{ name, since string }{
		{"position from the future", fmt.Sprintf("%d:%d", part, offsetOf(t, pos)+1000)},
		{"another room's partition", fmt.Sprintf("%d:0", (part+1)%4)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, e.URL, "late")
			c.send(map[string]any{"type": "join", "room": "general", "since": tc.since})
			if j := c.nextOf("joined"); j["recovered"] != false {
				t.Fatalf("joined = %v, want recovered:false", j)
			}
			// Still joined live.
			pub.say("general", "after", "c-"+tc.name)
			if m := c.nextOf("chat"); m["content"] != "after" {
				t.Fatalf("got %v, want the live message", m)
			}
		})
	}
}

// A resume further behind than -edge.max-replay records answers
// recovered:false (page history instead) and continues live.
func TestResumeBeyondMaxReplay(t *testing.T) {
	e := startEdge(t, testBroker(t), func(c *edge.Config) { c.MaxReplay, c.RatePerSecond, c.RateBurst = 5, 1e6, 1e6 })
	pub := dial(t, e.URL, "pub")
	w := dial(t, e.URL, "watcher")
	w.join("general")
	pub.say("general", "m0", "c0")
	since := w.nextOf("chat")["pos"].(string)
	for i := 1; i <= 10; i++ {
		pub.say("general", fmt.Sprint("m", i), fmt.Sprint("c", i))
	}
	c := dial(t, e.URL, "late")
	c.send(map[string]any{"type": "join", "room": "general", "since": since})
	if j := c.nextOf("joined"); j["recovered"] != false {
		t.Fatalf("joined = %v, want recovered:false beyond max-replay", j)
	}
	pub.say("general", "live", "c-live")
	// Events appended before the join but still on their way through the
	// tail may arrive live first; then the live one.
	for {
		m := c.nextOf("chat")
		if m["content"] == "live" {
			break
		}
		if !strings.HasPrefix(m["content"].(string), "m") {
			t.Fatalf("got %v, want the live message", m)
		}
	}
}

// Many resumes at once take turns (-edge.max-replays) and each still gets
// every missed event, in order, once.
func TestConcurrentResumesQueue(t *testing.T) {
	e := startEdge(t, testBroker(t), func(c *edge.Config) { c.MaxReplays, c.RatePerSecond, c.RateBurst = 2, 1e6, 1e6 })
	pub := dial(t, e.URL, "pub")
	w := dial(t, e.URL, "watcher")
	w.join("general")
	pub.say("general", "m0", "c0")
	since := w.nextOf("chat")["pos"].(string)
	const missed, clients = 30, 24
	for i := 1; i <= missed; i++ {
		pub.say("general", fmt.Sprint("m", i), fmt.Sprint("c", i))
	}
	cs := make([]*client, clients)
	for i := range cs {
		cs[i] = dial(t, e.URL, fmt.Sprint("r", i))
	}
	for _, c := range cs {
		c.send(map[string]any{"type": "join", "room": "general", "since": since})
	}
	pub.say("general", "live", "c-live")
	for _, c := range cs {
		if j := c.nextOf("joined"); j["recovered"] != true {
			t.Fatalf("%s: joined = %v, want recovered", c.user, j)
		}
		for i := 1; i <= missed; i++ {
			if m := c.nextOf("chat"); m["content"] != fmt.Sprint("m", i) {
				t.Fatalf("%s: event %d = %v, want m%d", c.user, i, m["content"], i)
			}
		}
		if m := c.nextOf("chat"); m["content"] != "live" {
			t.Fatalf("%s: after the replay got %v, want live", c.user, m["content"])
		}
	}
}
