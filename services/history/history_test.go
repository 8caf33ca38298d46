package history_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/chatsys/chat/pkg/chatevent"
	"github.com/chatsys/chat/pkg/pgutil/pgtest"
	"github.com/chatsys/chat/services/history"
)

func TestPagesThroughAThousandMessagesExactlyOnce(t *testing.T) {
	k := topics(t, testBroker(t))
	db := pgtest.NewDatabase(t)
	h := startHistory(t, k, db)
	const n = 1000
	var sent []chatevent.Event
	for i := 0; i < n; i++ {
		sent = append(sent, event("chat", "general", "", fmt.Sprint("u", i%7), fmt.Sprint("message ", i), fmt.Sprint("c", i)))
	}
	produce(t, k, sent...)
	produce(t, k, event("chat", "other", "", "x", "elsewhere", "o1"))
	eventually(t, 20*time.Second, "1000 rows", func() bool { return count(t, db, "SELECT count(*) FROM messages WHERE room = 'general'") == n })

	// Backwards from the newest, 37 at a time.
	seen := map[string]bool{}
	var order []string
	cursor := ""
	for {
		q := vals("limit", "37")
		if cursor != "" {
			q.Set("before", cursor)
		}
		r := get(t, h.URL, "alice", "/v1/rooms/general/messages", q)
		if r.Status != 200 {
			t.Fatalf("page: status %d %+v", r.Status, r.Error)
		}
		if len(r.Messages) == 0 {
			break
		}
		for _, m := range r.Messages {
			if seen[m.ID] {
				t.Fatalf("message %s returned twice", m.ID)
			}
			if m.Room != "general" || m.Pos == "" {
				t.Fatalf("message %+v: want room general with pos", m)
			}
			seen[m.ID] = true
			order = append(order, m.ID)
		}
		cursor = r.Messages[len(r.Messages)-1].ID
	}
	if len(seen) != n {
		t.Fatalf("paged %d distinct messages, want %d", len(seen), n)
	}
	for i := 1; i < len(order); i++ {
		if order[i] >= order[i-1] {
			t.Fatalf("page order broken at %d: %s after %s, want newest first", i, order[i], order[i-1])
		}
	}
	// Forwards from the oldest with after.
	fwd := 0
	cursor = order[len(order)-1]
	fwd++
	for {
		r := get(t, h.URL, "alice", "/v1/rooms/general/messages", vals("limit", "200", "after", cursor))
		if len(r.Messages) == 0 {
			break
		}
		fwd += len(r.Messages)
		cursor = r.Messages[len(r.Messages)-1].ID
	}
	if fwd != n {
		t.Fatalf("paged forward %d messages, want %d", fwd, n)
	}
	// Same ids and positions as in the log.
	byID := map[string]chatevent.Event{}
	r := get(t, h.URL, "alice", "/v1/rooms/general/messages", vals("limit", "1"))
	byID[r.Messages[0].ID] = r.Messages[0]
	newest := sent[n-1]
	if got, ok := byID[newest.ID]; !ok || got.Content != newest.Content || got.Timestamp != newest.Timestamp || got.ClientID != newest.ClientID {
		t.Fatalf("newest message = %+v, want %+v", r.Messages[0], newest)
	}
}

func TestAPIErrors(t *testing.T) {
	k := topics(t, testBroker(t))
	h := startHistory(t, k, pgtest.NewDatabase(t))
	for _, tc := range []struct {
		name, user, path string
		q                []string
		status           int
		code             string
	}{
		{"no token", "", "/v1/rooms/general/messages", nil, 401, "unauthorized"},
		{"token in the query string", "", "/v1/rooms/general/messages", []string{"token", "x.y.z"}, 401, "unauthorized"},
		{"limit zero", "a", "/v1/rooms/general/messages", []string{"limit", "0"}, 400, "invalid_limit"},
		{"limit too big", "a", "/v1/rooms/general/messages", []string{"limit", "201"}, 400, "invalid_limit"},
		{"limit not a number", "a", "/v1/rooms/general/messages", []string{"limit", "ten"}, 400, "invalid_limit"},
		{"bad before", "a", "/v1/rooms/general/messages", []string{"before", "zzz"}, 400, "invalid_cursor"},
		{"bad after", "a", "/v1/rooms/general/messages", []string{"after", "1' OR '1'='1"}, 400, "invalid_cursor"},
		{"before and after", "a", "/v1/rooms/general/messages", []string{"before", chatevent.NewID(), "after", chatevent.NewID()}, 400, "invalid_cursor"},
		{"bad room", "a", "/v1/rooms/Bad%20Room/messages", nil, 400, "invalid_room"},
		{"bad peer", "a", "/v1/dm/bad%20peer/messages", nil, 400, "invalid_user"},
		{"empty search", "a", "/v1/search", nil, 400, "invalid_query"},
		{"NUL in search", "a", "/v1/search", []string{"q", "a\x00b"}, 400, "invalid_query"},
		{"NUL in room search", "a", "/v1/search", []string{"q", "\x00", "room", "general"}, 400, "invalid_query"},
		{"search bad room", "a", "/v1/search", []string{"q", "x", "room", "NO"}, 400, "invalid_room"},
		{"missing room", "a", "/v1/rooms/empty/messages", nil, 404, "not_found"},
		{"search missing room", "a", "/v1/search", []string{"q", "x", "room", "empty"}, 404, "not_found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := get(t, h.URL, tc.user, tc.path, vals(tc.q...))
			if r.Status != tc.status || r.Error.Code != tc.code {
				t.Fatalf("GET %s %v = %d %q, want %d %q", tc.path, tc.q, r.Status, r.Error.Code, tc.status, tc.code)
			}
			if tc.status != 200 && r.Error.Message == "" {
				t.Fatalf("error without message")
			}
			if tc.status == 200 && r.Messages == nil {
				t.Fatalf("200 without a messages array")
			}
		})
	}
}

func TestDuplicatesBecomeOneRow(t *testing.T) {
	k := topics(t, testBroker(t))
	db := pgtest.NewDatabase(t)
	h := startHistory(t, k, db)
	a := event("chat", "general", "", "alice", "once", "a1")
	retry := event("chat", "general", "", "alice", "once", "a1") // a retried send: new id, same client_id
	b := event("chat", "general", "", "bob", "hello", "b1")
	produce(t, k, a, a, b, retry, b) // the log is at-least-once
	eventually(t, 20*time.Second, "rows", func() bool { return count(t, db, "SELECT count(*) FROM messages") == 2 })

	// The same log range consumed again by a second group: still one row each.
	h.stop(t)
	h2 := startHistory(t, k, db, func(c *history.Config) { c.GroupID = "second-" + c.GroupID })
	eventually(t, 20*time.Second, "second consumer caught up", func() bool { return h2.Lag() == 0 && count(t, db, "SELECT count(*) FROM messages") == 2 })
	produce(t, k, event("chat", "general", "", "carol", "marker", "m1"))
	eventually(t, 20*time.Second, "marker", func() bool { return count(t, db, "SELECT count(*) FROM messages") == 3 })
	if n := count(t, db, "SELECT count(*) FROM messages WHERE username = 'alice'"); n != 1 {
		t.Fatalf("alice's rows = %d, want 1", n)
	}
	if n := count(t, db, "SELECT count(*) FROM messages WHERE id = $1", a.ID); n != 1 {
		t.Fatalf("the first of the retried sends is kept: rows with its id = %d, want 1", n)
	}
}

func TestPoisonRecordGoesToDeadLetters(t *testing.T) {
	k := topics(t, testBroker(t))
	db := pgtest.NewDatabase(t)
	startHistory(t, k, db)
	good1 := event("chat", "general", "", "alice", "before", "g1")
	good2 := event("chat", "general", "", "alice", "after", "g2")
	b1, _ := good1.Encode()
	b2, _ := good2.Encode()
	nul := []byte(strings.Replace(string(b2), `"after"`, `"a\u0000b"`, 1))
	produceRaw(t, k, k.RoomsTopic,
		kafka.Message{Key: []byte("general"), Value: b1},
		kafka.Message{Key: []byte("general"), Value: []byte("\x00not json at all")},
		kafka.Message{Key: []byte("general"), Value: []byte(`{"id":"x","type":"chat"}`)},
		kafka.Message{Key: []byte("general"), Value: nul}, // PostgreSQL cannot store U+0000
		kafka.Message{Key: []byte("general"), Value: b2})
	eventually(t, 20*time.Second, "both good rows", func() bool { return count(t, db, "SELECT count(*) FROM messages") == 2 })
	if n := count(t, db, "SELECT count(*) FROM dead_letters WHERE topic = $1 AND log_offset IN (1, 2, 3) AND value IS NOT NULL AND error <> ''", k.RoomsTopic); n != 3 {
		t.Fatalf("dead letters = %d, want 3 with raw bytes, position and error", n)
	}
	if n := count(t, db, "SELECT count(*) FROM dead_letters WHERE value = '\\x006e6f74206a736f6e20617420616c6c'::bytea"); n != 1 {
		t.Fatalf("raw bytes of the poison record not kept verbatim")
	}
}

func TestPrivateConversationsStayPrivate(t *testing.T) {
	k := topics(t, testBroker(t))
	db := pgtest.NewDatabase(t)
	h := startHistory(t, k, db)
	produce(t, k,
		event("private", "", "bob", "alice", "secret for bob", "p1"),
		event("private", "", "alice", "bob", "reply to alice", "p2"),
		event("private", "", "dave", "carol", "secret for dave", "p3"),
		event("chat", "general", "", "carol", "public secret", "p4"))
	eventually(t, 20*time.Second, "rows", func() bool { return count(t, db, "SELECT count(*) FROM messages") == 4 })

	r := get(t, h.URL, "alice", "/v1/dm/bob/messages", nil)
	if len(r.Messages) != 2 || r.Messages[0].Content != "reply to alice" {
		t.Fatalf("alice's conversation with bob = %+v, want both messages newest first", r.Messages)
	}
	for _, peer := range []string{"carol", "dave"} {
		if r := get(t, h.URL, "alice", "/v1/dm/"+peer+"/messages", nil); len(r.Messages) != 0 {
			t.Fatalf("alice reading dm/%s got %+v, want nothing", peer, r.Messages)
		}
	}
	// Conversations with news, for a client coming back online.
	var convs struct {
		Conversations []history.Conversation `json:"conversations"`
	}
	getJSON(t, h.URL, "alice", "/v1/dm", nil, &convs)
	if len(convs.Conversations) != 1 || convs.Conversations[0].Peer != "bob" || convs.Conversations[0].Count != 2 || convs.Conversations[0].Latest.Content != "reply to alice" {
		t.Fatalf("alice's conversations = %+v, want bob with 2 messages", convs)
	}
	first := r.Messages[1].ID
	getJSON(t, h.URL, "alice", "/v1/dm", vals("since", first), &convs)
	if len(convs.Conversations) != 1 || convs.Conversations[0].Count != 1 {
		t.Fatalf("since the first DM = %+v, want bob with 1 message", convs)
	}
	getJSON(t, h.URL, "dave", "/v1/dm", nil, &convs)
	if len(convs.Conversations) != 1 || convs.Conversations[0].Peer != "carol" {
		t.Fatalf("dave's conversations = %+v, want only carol", convs)
	}

	r = get(t, h.URL, "alice", "/v1/search", vals("q", "secret"))
	var contents []string
	for _, m := range r.Messages {
		contents = append(contents, m.Content)
	}
	if len(r.Messages) != 2 {
		t.Fatalf("alice searching secret got %v, want her own DM and the public message", contents)
	}
	for _, m := range r.Messages {
		if m.Content == "secret for dave" {
			t.Fatalf("search leaked carol's DM to alice")
		}
	}
}

func TestSearch(t *testing.T) {
	k := topics(t, testBroker(t))
	db := pgtest.NewDatabase(t)
	h := startHistory(t, k, db)
	produce(t, k,
		event("chat", "general", "", "a", "the quick brown fox", "s1"),
		event("chat", "general", "", "a", "fox fox fox", "s2"),
		event("chat", "random", "", "a", "a lazy fox in random", "s3"),
		event("chat", "general", "", "a", "Crème brûlée 🍮 ÜBER", "s4"),
		event("chat", "general", "", "a", "Robert'); DROP TABLE messages;--", "s5"))
	eventually(t, 20*time.Second, "rows", func() bool { return count(t, db, "SELECT count(*) FROM messages") == 5 })
	for _, tc := range []struct {
		name, q, room string
		want          []string
	}{
		{"best first", "fox", "", []string{"fox fox fox", "a lazy fox in random", "the quick brown fox"}},
		{"room filter", "fox", "random", []string{"a lazy fox in random"}},
		{"phrase", `"quick brown"`, "", []string{"the quick brown fox"}},
		{"exclusion", "fox -lazy -quick", "", []string{"fox fox fox"}},
		{"unicode, case-folded", "crème über", "", []string{"Crème brûlée 🍮 ÜBER"}},
		{"sql-looking input is text", "'); DROP TABLE messages;--", "", []string{"Robert'); DROP TABLE messages;--"}},
		{"operators only", `" & | ! ( ) :*`, "", nil},
		{"no match", "zebra", "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := vals("q", tc.q)
			if tc.room != "" {
				q.Set("room", tc.room)
			}
			r := get(t, h.URL, "alice", "/v1/search", q)
			if r.Status != http.StatusOK {
				t.Fatalf("search %q: %d %+v", tc.q, r.Status, r.Error)
			}
			var got []string
			for _, m := range r.Messages {
				got = append(got, m.Content)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("search %q = %q, want %q", tc.q, got, tc.want)
			}
		})
	}
	if n := count(t, db, "SELECT count(*) FROM messages"); n != 5 {
		t.Fatalf("messages after searches = %d, want 5", n)
	}
}
