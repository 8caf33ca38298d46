package router

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/chatsys/chat/pkg/chatevent"
)

// TestDeliveriesFor checks the targeting decision: one delivery record per
// edge holding the sender or the target (a room read: the reader), keyed by
// the edge, carrying the event with its chat.direct pos (a read: the
// position read); nothing for what is not a valid chat.direct event.
func TestDeliveriesFor(t *testing.T) {
	cfg := testConfig(testKafka(t, "127.0.0.1:1")) // no I/O: the decision only
	r, err := New(cfg, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	for _, p := range []chatevent.Presence{
		{Type: chatevent.PresenceConnect, Edge: "e1", User: "alice", Connections: 1},
		{Type: chatevent.PresenceConnect, Edge: "e2", User: "bob", Connections: 2},
		{Type: chatevent.PresenceConnect, Edge: "e3", User: "bob", Connections: 1},
		{Type: chatevent.PresenceConnect, Edge: "e3", User: "carol", Connections: 1},
		{Type: chatevent.PresenceConnect, Edge: "e4", User: "dave", Connections: 1},
		{Type: chatevent.PresenceDisconnect, Edge: "e4", User: "dave"},
	} {
		r.t.apply(&p, t0)
	}
	msg := func(typ, from, to string, offset int64) kafka.Message {
		ev := chatevent.Event{ID: chatevent.NewID(), Type: typ, Username: from, Target: to, Content: "hi",
			Timestamp: chatevent.FormatTime(t0), ClientID: fmt.Sprint("c", offset)}
		if typ != chatevent.TypePrivate {
			ev.Target, ev.Room = "", "general"
		}
		b, err := ev.Encode()
		if err != nil {
			t.Fatal(err)
		}
		return kafka.Message{Topic: "chat.direct", Partition: 3, Offset: offset, Key: []byte(chatevent.DMKey(from, to)), Value: b}
	}
	ev := func(e chatevent.Event, offset int64) kafka.Message {
		e.ID, e.Timestamp, e.ClientID = chatevent.NewID(), chatevent.FormatTime(t0), fmt.Sprint("c", offset)
		if e.Type == chatevent.TypeEdit {
			e.Content = "hi"
		}
		b, err := e.Encode()
		if err != nil {
			t.Fatal(err)
		}
		return kafka.Message{Topic: "chat.direct", Partition: 3, Offset: offset, Value: b}
	}
	for _, tc := range []struct {
		name string
		in   kafka.Message
		want string // "edge@pos" of each record, in order
	}{
		{"sender and target on different edges", msg(chatevent.TypePrivate, "alice", "bob", 10), "e1@3:10 e2@3:10 e3@3:10"},
		{"target sharing an edge with someone else", msg(chatevent.TypePrivate, "carol", "alice", 11), "e1@3:11 e3@3:11"},
		{"to oneself", msg(chatevent.TypePrivate, "alice", "alice", 12), "e1@3:12"},
		{"target offline", msg(chatevent.TypePrivate, "alice", "dave", 13), "e1@3:13"},
		{"both offline", msg(chatevent.TypePrivate, "dave", "erin", 14), ""},
		{"invalid target (policy refuses)", msg(chatevent.TypePrivate, "alice", "not valid!", 15), ""},
		{"not a private message", msg(chatevent.TypeChat, "alice", "bob", 16), ""},
		{"edit of a DM", ev(chatevent.Event{Type: chatevent.TypeEdit, Username: "carol", Target: "bob", EditedAt: chatevent.FormatTime(t0)}, 30), "e2@3:30 e3@3:30"},
		{"delete of a DM", ev(chatevent.Event{Type: chatevent.TypeDelete, Username: "alice", Target: "dave"}, 31), "e1@3:31"},
		{"DM read receipt", ev(chatevent.Event{Type: chatevent.TypeRead, Username: "bob", Target: "alice", Pos: "2:5"}, 32), "e1@2:5 e2@2:5 e3@2:5"},
		{"room read", ev(chatevent.Event{Type: chatevent.TypeRead, Username: "bob", Room: "general", Pos: "1:9"}, 33), "e2@1:9 e3@1:9"},
		{"room edit (lives in chat.rooms)", ev(chatevent.Event{Type: chatevent.TypeEdit, Username: "bob", Room: "general", EditedAt: chatevent.FormatTime(t0)}, 34), ""},
		{"undecodable", kafka.Message{Topic: "chat.direct", Partition: 3, Offset: 17, Value: []byte("{oops")}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, spans := r.deliveriesFor(context.Background(), []kafka.Message{tc.in})
			endSpans(spans)
			var got []string
			for _, m := range out {
				ev, _, err := chatevent.DecodeDelivery(m.Value)
				if err != nil {
					t.Fatalf("delivery value does not decode: %v", err)
				}
				in, _ := chatevent.Decode(tc.in.Value)
				if ev.ID != in.ID || ev.Content != in.Content || ev.Username != in.Username {
					t.Errorf("delivery carries %+v, want the routed event %+v", ev, in)
				}
				hasSchema := false
				for _, h := range m.Headers {
					hasSchema = hasSchema || (h.Key == chatevent.HeaderSchema && string(h.Value) == "1")
				}
				if !hasSchema {
					t.Errorf("delivery headers %v lack %s: 1", m.Headers, chatevent.HeaderSchema)
				}
				got = append(got, string(m.Key)+"@"+ev.Pos)
			}
			if g := strings.Join(got, " "); g != tc.want {
				t.Errorf("deliveriesFor(%s) = %q, want %q", tc.name, g, tc.want)
			}
		})
	}
	// A batch keeps log order: each message's records follow the previous one's.
	out, spans := r.deliveriesFor(context.Background(), []kafka.Message{msg(chatevent.TypePrivate, "bob", "alice", 20), msg(chatevent.TypePrivate, "alice", "carol", 21)})
	endSpans(spans)
	var got []string
	for _, m := range out {
		ev, _ := chatevent.Decode(m.Value)
		got = append(got, string(m.Key)+"@"+ev.Pos)
	}
	if g, want := strings.Join(got, " "), "e1@3:20 e2@3:20 e3@3:20 e1@3:21 e3@3:21"; g != want {
		t.Errorf("deliveriesFor(batch) = %q, want %q", g, want)
	}
}
