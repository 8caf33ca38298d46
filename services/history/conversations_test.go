package history_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/chatsys/chat/pkg/chatevent"
	"github.com/chatsys/chat/pkg/kafkaio"
	"github.com/chatsys/chat/pkg/pgutil/pgtest"
	"github.com/chatsys/chat/pkg/testutil"
	"github.com/chatsys/chat/services/history"
)

// reply is a decoded API answer.
type reply struct {
	Status int
	Raw    []byte
	Body   map[string]any
}

func (r reply) code() string {
	if e, ok := r.Body["error"].(map[string]any); ok {
		s, _ := e["code"].(string)
		return s
	}
	return ""
}

// call sends method path with body (nil: none) as user; an "admin:" prefix
// mints an admin token.
func call(t testing.TB, base, method, user, path string, body any) reply {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, base+path, rd)
	if user != "" {
		admin := false
		if u, ok := strings.CutPrefix(user, "admin:"); ok {
			user, admin = u, true
		}
		req.Header.Set("Authorization", "Bearer "+testutil.Token(t, testSecret, user, admin))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := reply{Status: resp.StatusCode, Raw: raw}
	if err := json.Unmarshal(raw, &r.Body); err != nil {
		t.Fatalf("%s %s: body is not a JSON object: %v: %s", method, path, err, raw)
	}
	return r
}

// must calls and fails unless the status is want.
func must(t testing.TB, want int, base, method, user, path string, body any) reply {
	t.Helper()
	r := call(t, base, method, user, path, body)
	if r.Status != want {
		t.Fatalf("%s %s as %s = %d %s, want %d", method, path, user, r.Status, r.Raw, want)
	}
	return r
}

// appendEvents appends edit, delete and read events (or messages) with the
// key rules of docs/conversations.md.
func appendEvents(t testing.TB, k kafkaio.Config, evs ...chatevent.Event) {
	t.Helper()
	for _, ev := range evs {
		b, err := ev.Encode()
		if err != nil {
			t.Fatal(err)
		}
		topic, key := k.RoomsTopic, chatevent.RoomKey(ev.Room)
		switch {
		case ev.Type == chatevent.TypeRead && ev.Room != "":
			topic, key = k.DirectTopic, chatevent.ReadKey(ev.Username)
		case ev.Target != "":
			topic, key = k.DirectTopic, chatevent.DMKey(ev.Username, ev.Target)
		}
		produceRaw(t, k, topic, kafka.Message{Key: []byte(key), Value: b})
	}
}

func contents(r apiResult) []string {
	var out []string
	for _, m := range r.Messages {
		out = append(out, m.Content)
	}
	return out
}

// A private room answers a non-member exactly as a room that does not
// exist; members read and search it; a removed member loses access.
func TestPrivateRoomIsLikeAMissingOne(t *testing.T) {
	k := topics(t, testBroker(t))
	db := pgtest.NewDatabase(t)
	h := startHistory(t, k, db)
	r := must(t, 201, h.URL, "POST", "alice", "/v1/rooms/secret", map[string]any{"private": true})
	if r.Body["room"] != "secret" || r.Body["private"] != true || r.Body["owner"] != "alice" || r.Body["role"] != "owner" {
		t.Fatalf("create = %s", r.Raw)
	}
	produce(t, k, event("chat", "secret", "", "alice", "plans for the zeppelin", "s1"),
		event("chat", "lobby", "", "carol", "zeppelin in public", "l1"))
	eventually(t, 20*time.Second, "rows", func() bool { return count(t, db, "SELECT count(*) FROM messages") == 2 })

	for _, path := range []string{"/v1/rooms/secret/messages", "/v1/rooms/secret"} {
		hidden := call(t, h.URL, "GET", "bob", path, nil)
		missing := call(t, h.URL, "GET", "bob", "/v1/rooms/nowhere"+path[len("/v1/rooms/secret"):], nil)
		if hidden.Status != 404 || hidden.code() != "not_found" || !bytes.Equal(hidden.Raw, missing.Raw) || hidden.Status != missing.Status {
			t.Fatalf("GET %s as a non-member = %d %s; a missing room = %d %s: want the same 404 not_found", path, hidden.Status, hidden.Raw, missing.Status, missing.Raw)
		}
	}
	hidden := get(t, h.URL, "bob", "/v1/search", vals("q", "zeppelin", "room", "secret"))
	missing := get(t, h.URL, "bob", "/v1/search", vals("q", "zeppelin", "room", "nowhere"))
	if hidden.Status != 404 || hidden.Error != missing.Error || hidden.Status != missing.Status {
		t.Fatalf("search of a private room = %d %+v, of a missing room = %d %+v", hidden.Status, hidden.Error, missing.Status, missing.Error)
	}
	if got := contents(get(t, h.URL, "bob", "/v1/search", vals("q", "zeppelin"))); !slices.Equal(got, []string{"zeppelin in public"}) {
		t.Fatalf("bob's global search = %q, want only the public message", got)
	}
	var rooms struct {
		Rooms []map[string]any `json:"rooms"`
	}
	getJSON(t, h.URL, "bob", "/v1/rooms", nil, &rooms)
	if len(rooms.Rooms) != 0 {
		t.Fatalf("bob's rooms = %v, want none", rooms.Rooms)
	}

	// The owner and admins read it.
	if got := contents(get(t, h.URL, "alice", "/v1/rooms/secret/messages", nil)); !slices.Equal(got, []string{"plans for the zeppelin"}) {
		t.Fatalf("alice reads %q", got)
	}
	must(t, 200, h.URL, "GET", "admin:root", "/v1/rooms/secret/messages", nil)

	// Invited, bob reads, searches and lists it.
	r = must(t, 200, h.URL, "POST", "alice", "/v1/rooms/secret/invite", map[string]string{"username": "bob"})
	if r.Body["role"] != "member" || r.Body["action"] != "invite" || r.Body["username"] != "bob" {
		t.Fatalf("invite = %s", r.Raw)
	}
	if got := contents(get(t, h.URL, "bob", "/v1/rooms/secret/messages", nil)); len(got) != 1 {
		t.Fatalf("invited bob reads %q", got)
	}
	if got := contents(get(t, h.URL, "bob", "/v1/search", vals("q", "zeppelin"))); len(got) != 2 {
		t.Fatalf("invited bob's search = %q, want both", got)
	}
	getJSON(t, h.URL, "bob", "/v1/rooms", nil, &rooms)
	if len(rooms.Rooms) != 1 || rooms.Rooms[0]["room"] != "secret" || rooms.Rooms[0]["role"] != "member" {
		t.Fatalf("bob's rooms = %v", rooms.Rooms)
	}
	r = must(t, 200, h.URL, "GET", "bob", "/v1/rooms/secret", nil)
	if fmt.Sprint(r.Body["members"]) != "[map[banned:false muted:false role:owner username:alice] map[banned:false muted:false role:member username:bob]]" {
		t.Fatalf("room = %s", r.Raw)
	}

	// Removed, he is a stranger again.
	must(t, 200, h.URL, "POST", "alice", "/v1/rooms/secret/remove", map[string]string{"username": "bob"})
	if r := get(t, h.URL, "bob", "/v1/rooms/secret/messages", nil); r.Status != 404 || r.Error.Code != "not_found" {
		t.Fatalf("removed bob reads %d %+v", r.Status, r.Error)
	}
	if got := contents(get(t, h.URL, "bob", "/v1/search", vals("q", "zeppelin"))); len(got) != 1 {
		t.Fatalf("removed bob's search = %q", got)
	}
}

// A room another process created a moment ago is not refused: the
// follower syncs before a refusal.
func TestAccessGrantedElsewhereIsSeen(t *testing.T) {
	k := topics(t, testBroker(t))
	db := pgtest.NewDatabase(t)
	h1 := startHistory(t, k, db)
	h2 := startHistory(t, k, db, func(c *history.Config) { c.GroupID = "second-" + c.GroupID })
	must(t, 201, h1.URL, "POST", "alice", "/v1/rooms/hq", map[string]any{"private": true})
	must(t, 200, h1.URL, "POST", "alice", "/v1/rooms/hq/invite", map[string]string{"username": "bob"})
	// No wait: h2's first answer already counts the invitation.
	must(t, 200, h2.URL, "GET", "bob", "/v1/rooms/hq", nil)
	must(t, 409, h2.URL, "POST", "carol", "/v1/rooms/hq", nil)
}

func TestCreateRoomConflicts(t *testing.T) {
	k := topics(t, testBroker(t))
	db := pgtest.NewDatabase(t)
	h := startHistory(t, k, db)
	produce(t, k, event("chat", "busy", "", "carol", "already here", "b1"))
	eventually(t, 20*time.Second, "row", func() bool { return count(t, db, "SELECT count(*) FROM messages") == 1 })
	if r := must(t, 409, h.URL, "POST", "alice", "/v1/rooms/busy", nil); r.code() != "conflict" {
		t.Fatalf("create over messages = %s", r.Raw)
	}
	r := must(t, 201, h.URL, "POST", "alice", "/v1/rooms/fresh", nil)
	if r.Body["private"] != false || r.Body["owner"] != "alice" {
		t.Fatalf("create = %s", r.Raw)
	}
	for _, user := range []string{"alice", "bob"} {
		if r := must(t, 409, h.URL, "POST", user, "/v1/rooms/fresh", map[string]any{"private": true}); r.code() != "conflict" {
			t.Fatalf("second create = %s", r.Raw)
		}
	}
	if r := must(t, 400, h.URL, "POST", "alice", "/v1/rooms/Not%20A%20Room", nil); r.code() != "invalid_request" {
		t.Fatalf("bad name = %s", r.Raw)
	}
	if r := must(t, 400, h.URL, "POST", "alice", "/v1/rooms/other", "not an object"); r.code() != "invalid_request" {
		t.Fatalf("bad body = %s", r.Raw)
	}
	// Public: anyone reads it; it exists without messages.
	if r := get(t, h.URL, "bob", "/v1/rooms/fresh/messages", nil); r.Status != 200 || len(r.Messages) != 0 {
		t.Fatalf("new public room = %d %+v", r.Status, r.Messages)
	}
}

func TestManagePermissions(t *testing.T) {
	k := topics(t, testBroker(t))
	db := pgtest.NewDatabase(t)
	h := startHistory(t, k, db)
	must(t, 201, h.URL, "POST", "alice", "/v1/rooms/team", map[string]any{"private": true})
	for _, u := range []string{"bob", "carol", "dave"} {
		must(t, 200, h.URL, "POST", "alice", "/v1/rooms/team/invite", map[string]string{"username": u})
	}
	if r := must(t, 200, h.URL, "POST", "alice", "/v1/rooms/team/mod", map[string]string{"username": "dave"}); r.Body["role"] != "mod" {
		t.Fatalf("mod = %s", r.Raw)
	}
	// A mod mutes a member.
	r := must(t, 200, h.URL, "POST", "dave", "/v1/rooms/team/mute", map[string]string{"username": "carol"})
	if r.Body["muted"] != true || r.Body["role"] != "member" {
		t.Fatalf("mute = %s", r.Raw)
	}
	for _, tc := range []struct {
		actor, action, subject string
		status                 int
		code                   string
	}{
		{"bob", "mute", "carol", 403, "forbidden"}, // a member does not moderate
		{"dave", "mod", "bob", 403, "forbidden"},   // mod is the owner's
		{"dave", "ban", "alice", 403, "forbidden"}, // nobody touches the owner
		{"alice", "remove", "alice", 403, "forbidden"},
		{"eve", "invite", "eve", 404, "not_found"}, // eve may not even see the room
		{"bob", "promote", "carol", 404, "not_found"},
		{"alice", "mute", "no body!", 400, "invalid_user"},
		{"alice", "ban", "", 400, "invalid_user"},
	} {
		r := call(t, h.URL, "POST", tc.actor, "/v1/rooms/team/"+tc.action, map[string]string{"username": tc.subject})
		if r.Status != tc.status || r.code() != tc.code {
			t.Errorf("%s %s %s = %d %s, want %d %s", tc.actor, tc.action, tc.subject, r.Status, r.Raw, tc.status, tc.code)
		}
	}
	if r := call(t, h.URL, "POST", "alice", "/v1/rooms/team/mute", nil); r.Status != 400 || r.code() != "invalid_request" {
		t.Fatalf("no body = %d %s", r.Status, r.Raw)
	}
	must(t, 200, h.URL, "POST", "alice", "/v1/rooms/team/mod", map[string]string{"username": "bob"})
	must(t, 200, h.URL, "POST", "dave", "/v1/rooms/team/ban", map[string]string{"username": "carol"})
	must(t, 200, h.URL, "POST", "bob", "/v1/rooms/team/remove", map[string]string{"username": "bob"}) // leaves
	must(t, 200, h.URL, "POST", "admin:root", "/v1/rooms/team/unmod", map[string]string{"username": "dave"})
	r = must(t, 200, h.URL, "GET", "alice", "/v1/rooms/team", nil)
	want := "[map[banned:false muted:false role:owner username:alice] map[banned:true muted:true role: username:carol] map[banned:false muted:false role:member username:dave]]"
	if got := fmt.Sprint(r.Body["members"]); got != want {
		t.Fatalf("members = %s\nwant %s", got, want)
	}
	// Public ownerless rooms: only admins moderate.
	produce(t, k, event("chat", "lobby", "", "bob", "hi", "x1"))
	eventually(t, 20*time.Second, "row", func() bool { return count(t, db, "SELECT count(*) FROM messages") == 1 })
	must(t, 403, h.URL, "POST", "bob", "/v1/rooms/lobby/mute", map[string]string{"username": "carol"})
	must(t, 200, h.URL, "POST", "admin:root", "/v1/rooms/lobby/mute", map[string]string{"username": "carol"})
	// A room nobody has written in yet (people may be in it): admins
	// moderate it too, and the ban holds; others learn nothing about it.
	must(t, 404, h.URL, "POST", "bob", "/v1/rooms/unused/ban", map[string]string{"username": "carol"})
	must(t, 200, h.URL, "POST", "admin:root", "/v1/rooms/unused/ban", map[string]string{"username": "carol"})
	eventually(t, 20*time.Second, "the ban in the table", func() bool {
		return count(t, db, "SELECT count(*) FROM room_members WHERE room = 'unused' AND username = 'carol' AND banned") == 1
	})
	must(t, 400, h.URL, "POST", "admin:root", "/v1/rooms/Not_Valid/ban", map[string]string{"username": "carol"})
	// No roles in a room that does not exist: they would carry over to a
	// private room created under its name.
	must(t, 404, h.URL, "POST", "admin:root", "/v1/rooms/unused/invite", map[string]string{"username": "dave"})
	must(t, 404, h.URL, "POST", "admin:root", "/v1/rooms/unused/mod", map[string]string{"username": "dave"})
}

// Records of chat.acl land in the tables; a record that does not decode
// is dead-lettered and does not stall the partition.
func TestACLRecordsLandInTables(t *testing.T) {
	k := topics(t, testBroker(t))
	db := pgtest.NewDatabase(t)
	h := startHistory(t, k, db)
	must(t, 201, h.URL, "POST", "alice", "/v1/rooms/club", map[string]any{"private": true})
	must(t, 200, h.URL, "POST", "alice", "/v1/rooms/club/invite", map[string]string{"username": "bob"})
	must(t, 200, h.URL, "POST", "alice", "/v1/rooms/club/invite", map[string]string{"username": "carol"})
	must(t, 200, h.URL, "POST", "alice", "/v1/rooms/club/mute", map[string]string{"username": "carol"})
	must(t, 200, h.URL, "PUT", "bob", "/v1/blocks/mallory", nil)
	eventually(t, 20*time.Second, "acl tables", func() bool {
		return count(t, db, "SELECT count(*) FROM rooms WHERE room = 'club' AND private AND owner = 'alice'") == 1 &&
			count(t, db, "SELECT count(*) FROM room_members WHERE room = 'club'") == 2 &&
			count(t, db, "SELECT count(*) FROM room_members WHERE username = 'carol' AND role = 'member' AND muted AND NOT banned") == 1 &&
			count(t, db, "SELECT count(*) FROM blocks WHERE username = 'bob' AND blocked = 'mallory'") == 1
	})
	produceRaw(t, k, k.ACLTopic,
		kafka.Message{Key: []byte("member:club:x"), Value: []byte("{not json")},
		kafka.Message{Key: []byte("member:club:x"), Value: []byte(`{"type":"member","room":"club","username":"x","action":"dance"}`)})
	must(t, 200, h.URL, "POST", "alice", "/v1/rooms/club/remove", map[string]string{"username": "bob"})
	must(t, 200, h.URL, "DELETE", "bob", "/v1/blocks/mallory", nil)
	eventually(t, 20*time.Second, "removals after the bad records", func() bool {
		return count(t, db, "SELECT count(*) FROM room_members WHERE room = 'club'") == 1 &&
			count(t, db, "SELECT count(*) FROM blocks") == 0
	})
	if n := count(t, db, "SELECT count(*) FROM dead_letters WHERE topic = $1 AND value IS NOT NULL AND error <> ''", k.ACLTopic); n != 2 {
		t.Fatalf("dead letters of the acl topic = %d, want 2", n)
	}
}

func TestBlocksRoundTrip(t *testing.T) {
	k := topics(t, testBroker(t))
	h := startHistory(t, k, pgtest.NewDatabase(t))
	blocked := func() string {
		return fmt.Sprint(must(t, 200, h.URL, "GET", "alice", "/v1/blocks", nil).Body["blocked"])
	}
	if got := blocked(); got != "[]" {
		t.Fatalf("blocks at first = %s", got)
	}
	for _, u := range []string{"mallory", "eve"} {
		r := must(t, 200, h.URL, "PUT", "alice", "/v1/blocks/"+u, nil)
		if r.Body["username"] != u || r.Body["blocked"] != true {
			t.Fatalf("block = %s", r.Raw)
		}
	}
	must(t, 200, h.URL, "PUT", "alice", "/v1/blocks/eve", nil) // again: still blocked once
	if got := blocked(); got != "[eve mallory]" {
		t.Fatalf("blocks = %s", got)
	}
	if r := must(t, 200, h.URL, "DELETE", "alice", "/v1/blocks/eve", nil); r.Body["blocked"] != false {
		t.Fatalf("unblock = %s", r.Raw)
	}
	if got := blocked(); got != "[mallory]" {
		t.Fatalf("blocks after unblocking = %s", got)
	}
	if got := fmt.Sprint(must(t, 200, h.URL, "GET", "mallory", "/v1/blocks", nil).Body["blocked"]); got != "[]" {
		t.Fatalf("mallory's blocks = %s", got)
	}
	must(t, 400, h.URL, "PUT", "alice", "/v1/blocks/not%20valid", nil)
	must(t, 400, h.URL, "PUT", "alice", "/v1/blocks/alice", nil)
}

// message fetches one message as user.
func message(t testing.TB, base, user, id string) reply {
	t.Helper()
	return call(t, base, "GET", user, "/v1/messages/"+id, nil)
}

func TestEditAndDelete(t *testing.T) {
	k := topics(t, testBroker(t))
	db := pgtest.NewDatabase(t)
	h := startHistory(t, k, db)
	mine := event("chat", "general", "", "alice", "original banana", "e1")
	theirs := event("chat", "general", "", "bob", "bob's banana", "e2")
	dm := event("private", "", "bob", "alice", "private durian", "e3")
	produce(t, k, mine, theirs, dm)
	eventually(t, 20*time.Second, "rows", func() bool { return count(t, db, "SELECT count(*) FROM messages") == 3 })

	// Edit by the author.
	r := must(t, 200, h.URL, "PATCH", "alice", "/v1/messages/"+mine.ID, map[string]string{"content": "edited cherry", "client_id": "c9"})
	if r.Body["id"] != mine.ID || r.Body["type"] != "edit" || r.Body["room"] != "general" || r.Body["username"] != "alice" ||
		r.Body["content"] != "edited cherry" || r.Body["edited_at"] == nil || r.Body["client_id"] != "c9" || r.Body["pos"] == nil {
		t.Fatalf("edit = %s", r.Raw)
	}
	eventually(t, 20*time.Second, "the edit in history", func() bool {
		m := message(t, h.URL, "bob", mine.ID)
		return m.Body["content"] == "edited cherry" && m.Body["edited_at"] != nil
	})
	if got := contents(get(t, h.URL, "bob", "/v1/search", vals("q", "banana"))); !slices.Equal(got, []string{"bob's banana"}) {
		t.Fatalf("search for the replaced text = %q", got)
	}
	if got := contents(get(t, h.URL, "bob", "/v1/search", vals("q", "cherry"))); !slices.Equal(got, []string{"edited cherry"}) {
		t.Fatalf("search for the new text = %q", got)
	}
	page := get(t, h.URL, "bob", "/v1/rooms/general/messages", nil)
	if page.Messages[1].ID != mine.ID || page.Messages[1].EditedAt == "" || page.Messages[1].Content != "edited cherry" {
		t.Fatalf("page = %+v", page.Messages)
	}

	// Not the author: 404, whoever it is (an admin too: edits are the author's).
	for _, u := range []string{"bob", "admin:root"} {
		if r := must(t, 404, h.URL, "PATCH", u, "/v1/messages/"+mine.ID, map[string]string{"content": "hijack"}); r.code() != "not_found" {
			t.Fatalf("edit by %s = %s", u, r.Raw)
		}
	}
	must(t, 404, h.URL, "PATCH", "alice", "/v1/messages/"+chatevent.NewID(), map[string]string{"content": "x"})
	must(t, 400, h.URL, "PATCH", "alice", "/v1/messages/"+mine.ID, map[string]string{"content": ""})
	must(t, 400, h.URL, "PATCH", "alice", "/v1/messages/"+mine.ID, map[string]string{"content": "nul\x00"})
	must(t, 400, h.URL, "PATCH", "alice", "/v1/messages/not-an-id", map[string]string{"content": "x"})

	// A DM: the peer sees the edit; others do not see the message at all.
	must(t, 200, h.URL, "PATCH", "alice", "/v1/messages/"+dm.ID, map[string]string{"content": "private elderberry"})
	eventually(t, 20*time.Second, "the DM edit", func() bool {
		p := get(t, h.URL, "bob", "/v1/dm/alice/messages", nil)
		return len(p.Messages) == 1 && p.Messages[0].Content == "private elderberry"
	})
	must(t, 404, h.URL, "GET", "carol", "/v1/messages/"+dm.ID, nil)
	must(t, 404, h.URL, "DELETE", "bob", "/v1/messages/"+dm.ID, nil) // the receiver does not delete

	// Delete: not by another member; by the author.
	must(t, 404, h.URL, "DELETE", "bob", "/v1/messages/"+mine.ID, nil)
	r = must(t, 200, h.URL, "DELETE", "alice", "/v1/messages/"+mine.ID, nil)
	if r.Body["id"] != mine.ID || r.Body["type"] != "delete" || r.Body["username"] != "alice" || r.Body["room"] != "general" {
		t.Fatalf("delete = %s", r.Raw)
	}
	eventually(t, 20*time.Second, "the tombstone", func() bool { return message(t, h.URL, "bob", mine.ID).Body["deleted"] == true })
	tomb := message(t, h.URL, "bob", mine.ID).Body
	if _, ok := tomb["content"]; ok || tomb["username"] != nil || tomb["pos"] == nil || tomb["room"] != "general" || tomb["timestamp"] == nil {
		t.Fatalf("tombstone = %v", tomb)
	}
	if got := contents(get(t, h.URL, "bob", "/v1/search", vals("q", "cherry"))); len(got) != 0 {
		t.Fatalf("search finds a deleted message: %q", got)
	}
	must(t, 404, h.URL, "PATCH", "alice", "/v1/messages/"+mine.ID, map[string]string{"content": "revive"})
	must(t, 200, h.URL, "DELETE", "alice", "/v1/messages/"+mine.ID, nil) // again: fine

	// An admin (a moderator anywhere) deletes someone else's message.
	must(t, 200, h.URL, "DELETE", "admin:root", "/v1/messages/"+theirs.ID, nil)
	eventually(t, 20*time.Second, "the moderated delete", func() bool { return message(t, h.URL, "bob", theirs.ID).Body["deleted"] == true })
	if got := contents(get(t, h.URL, "bob", "/v1/search", vals("q", "banana"))); len(got) != 0 {
		t.Fatalf("search after deletes = %q", got)
	}

	// A room's mod deletes; a muted author may not edit.
	must(t, 201, h.URL, "POST", "olga", "/v1/rooms/quiet", nil)
	must(t, 200, h.URL, "POST", "olga", "/v1/rooms/quiet/mod", map[string]string{"username": "mia"})
	q1 := event("chat", "quiet", "", "alice", "loud one", "q1")
	q2 := event("chat", "quiet", "", "alice", "loud two", "q2")
	produce(t, k, q1, q2)
	eventually(t, 20*time.Second, "quiet rows", func() bool { return count(t, db, "SELECT count(*) FROM messages WHERE room = 'quiet'") == 2 })
	must(t, 200, h.URL, "DELETE", "mia", "/v1/messages/"+q1.ID, nil)
	must(t, 200, h.URL, "POST", "mia", "/v1/rooms/quiet/mute", map[string]string{"username": "alice"})
	if r := must(t, 403, h.URL, "PATCH", "alice", "/v1/messages/"+q2.ID, map[string]string{"content": "still loud"}); r.code() != "forbidden" {
		t.Fatalf("muted edit = %s", r.Raw)
	}

	// An edit retried with its client_id (its answer lost) after a newer
	// edit is answered with the first one's event, not appended again.
	r1 := must(t, 200, h.URL, "PATCH", "alice", "/v1/messages/"+dm.ID, map[string]string{"content": "first text", "client_id": "rt1"})
	must(t, 200, h.URL, "PATCH", "alice", "/v1/messages/"+dm.ID, map[string]string{"content": "newer text", "client_id": "rt2"})
	if r3 := must(t, 200, h.URL, "PATCH", "alice", "/v1/messages/"+dm.ID, map[string]string{"content": "first text", "client_id": "rt1"}); r3.Body["pos"] != r1.Body["pos"] {
		t.Fatalf("retried edit = %s, want the first attempt's event (pos %v)", r3.Raw, r1.Body["pos"])
	}
	eventually(t, 20*time.Second, "the newer edit stays", func() bool {
		p := get(t, h.URL, "bob", "/v1/dm/alice/messages", nil)
		return len(p.Messages) == 1 && p.Messages[0].Content == "newer text"
	})

	// Right after a delete, before the writer applied it to the table
	// (held off here: the table is locked against writes, not reads), a
	// second delete appends nothing and an edit is not_found: no client
	// sees the deleted message changed again.
	unlock := lockMessages(t, db, "EXCLUSIVE")
	defer unlock()
	if r := must(t, 200, h.URL, "DELETE", "alice", "/v1/messages/"+dm.ID, nil); r.Body["pos"] == nil {
		t.Fatalf("delete = %s, want a pos", r.Raw)
	}
	if r := must(t, 200, h.URL, "DELETE", "alice", "/v1/messages/"+dm.ID, nil); r.Body["pos"] != nil {
		t.Fatalf("second delete = %s: appended again", r.Raw)
	}
	must(t, 404, h.URL, "PATCH", "alice", "/v1/messages/"+dm.ID, map[string]string{"content": "zombie"})
	if m := message(t, h.URL, "alice", dm.ID).Body; m["deleted"] == true {
		t.Fatal("the writer applied the delete through the lock: the test proves nothing")
	}
}

// An edit in the same batch as its message applies after the insert.
func TestEditInTheMessagesBatch(t *testing.T) {
	k := topics(t, testBroker(t))
	db := pgtest.NewDatabase(t)
	m := event("chat", "general", "", "alice", "first draft", "d1")
	ed := chatevent.Event{ID: m.ID, Type: chatevent.TypeEdit, Room: "general", Username: "alice", Content: "final text",
		Timestamp: chatevent.FormatTime(time.Now()), EditedAt: chatevent.FormatTime(time.Now())}
	forged := ed
	forged.Username, forged.Content = "mallory", "forged" // an edit by someone else changes nothing
	b1, _ := m.Encode()
	b2, _ := ed.Encode()
	b3, _ := forged.Encode()
	// Appended before the writer starts, so that one batch holds all three.
	if _, err := k.EnsureTopics(t.Context(), k.AllTopics()...); err != nil {
		t.Fatal(err)
	}
	produceRaw(t, k, k.RoomsTopic, kafka.Message{Key: []byte("general"), Value: b1}, kafka.Message{Key: []byte("general"), Value: b2},
		kafka.Message{Key: []byte("general"), Value: b3})
	startHistory(t, k, db)
	eventually(t, 20*time.Second, "the edited row", func() bool {
		return count(t, db, "SELECT count(*) FROM messages WHERE content = 'final text' AND edited_at IS NOT NULL") == 1
	})
	if n := count(t, db, "SELECT count(*) FROM messages"); n != 1 {
		t.Fatalf("rows = %d, want 1 (edits are not messages)", n)
	}
}

type unreadEntry struct {
	Room     string `json:"room"`
	Peer     string `json:"peer"`
	Unread   int    `json:"unread"`
	LastRead string `json:"last_read"`
	PeerRead string `json:"peer_read"`
}

func unreadOf(t testing.TB, base, user string) map[string]unreadEntry {
	t.Helper()
	var out struct {
		Conversations []unreadEntry `json:"conversations"`
	}
	getJSON(t, base, user, "/v1/unread", nil, &out)
	m := map[string]unreadEntry{}
	for _, c := range out.Conversations {
		m[c.Room+"@"+c.Peer] = c
	}
	return m
}

func TestUnreadCounts(t *testing.T) {
	k := topics(t, testBroker(t))
	db := pgtest.NewDatabase(t)
	h := startHistory(t, k, db)
	var room []chatevent.Event
	for i := range 4 {
		room = append(room, event("chat", "general", "", "alice", fmt.Sprint("room ", i), fmt.Sprint("r", i)))
	}
	room = append(room, event("chat", "general", "", "bob", "bob's own", "rb"))
	dms := []chatevent.Event{event("private", "", "bob", "alice", "dm 1", "d1"), event("private", "", "bob", "alice", "dm 2", "d2")}
	produce(t, k, append(room, dms...)...)
	eventually(t, 20*time.Second, "rows", func() bool { return count(t, db, "SELECT count(*) FROM messages") == 7 })

	// Before any read: DMs count from the start, rooms are not listed.
	u := unreadOf(t, h.URL, "bob")
	if len(u) != 1 || u["@alice"].Unread != 2 || u["@alice"].LastRead != "" {
		t.Fatalf("bob's unread before reading = %+v", u)
	}
	byContent := map[string]string{}
	for _, m := range get(t, h.URL, "bob", "/v1/rooms/general/messages", nil).Messages {
		byContent[m.Content] = m.Pos
	}
	dmPage := get(t, h.URL, "bob", "/v1/dm/alice/messages", nil).Messages // newest first
	read := func(room, target, pos string) chatevent.Event {
		return chatevent.Event{ID: chatevent.NewID(), Type: chatevent.TypeRead, Room: room, Target: target, Username: "bob",
			Timestamp: chatevent.FormatTime(time.Now()), Pos: pos}
	}
	appendEvents(t, k, read("general", "", byContent["room 1"]), read("", "alice", dmPage[1].Pos))
	eventually(t, 20*time.Second, "read positions", func() bool {
		u := unreadOf(t, h.URL, "bob")
		return u["general@"].Unread == 2 && u["general@"].LastRead == byContent["room 1"] && u["@alice"].Unread == 1 && u["@alice"].LastRead == dmPage[1].Pos
	})
	// A stale read does not move the position back; later messages count,
	// deleted ones do not.
	later := event("chat", "general", "", "carol", "later", "r9")
	appendEvents(t, k, read("general", "", byContent["room 0"]), later)
	eventually(t, 20*time.Second, "a later message", func() bool { return unreadOf(t, h.URL, "bob")["general@"].Unread == 3 })
	must(t, 200, h.URL, "DELETE", "carol", "/v1/messages/"+later.ID, nil)
	eventually(t, 20*time.Second, "a deleted message", func() bool { return unreadOf(t, h.URL, "bob")["general@"].Unread == 2 })
	if u := unreadOf(t, h.URL, "bob")["general@"]; u.LastRead != byContent["room 1"] {
		t.Fatalf("a stale read moved the position: %+v", u)
	}
	if n := count(t, db, "SELECT count(*) FROM read_state WHERE username = 'bob'"); n != 2 {
		t.Fatalf("read_state rows = %d", n)
	}
	// The sender sees how far the peer read (a read receipt after a reload).
	if u := unreadOf(t, h.URL, "alice")["@bob"]; u.PeerRead != dmPage[1].Pos || u.Unread != 0 {
		t.Fatalf("alice's view of her DMs with bob = %+v, want peer_read %s", u, dmPage[1].Pos)
	}
	if u := unreadOf(t, h.URL, "bob")["@alice"]; u.PeerRead != "" {
		t.Fatalf("bob's view = %+v: alice read nothing", u)
	}
}

// Membership changes are computed one at a time from the current state: a
// mute racing a ban never writes the ban away (each record is the whole
// membership after its action).
func TestConcurrentChangesOfOneMembership(t *testing.T) {
	k := topics(t, testBroker(t))
	db := pgtest.NewDatabase(t)
	h := startHistory(t, k, db)
	must(t, 201, h.URL, "POST", "alice", "/v1/rooms/team", map[string]any{"private": true})
	must(t, 200, h.URL, "POST", "alice", "/v1/rooms/team/invite", map[string]string{"username": "bob"})
	var wg sync.WaitGroup
	for i := range 12 {
		action := "mute"
		if i == 5 {
			action = "ban"
		}
		wg.Go(func() {
			if r := call(t, h.URL, "POST", "alice", "/v1/rooms/team/"+action, map[string]string{"username": "bob"}); r.Status != 200 {
				t.Errorf("%s: %d %s", action, r.Status, r.Raw)
			}
		})
	}
	wg.Wait()
	r := must(t, 200, h.URL, "GET", "alice", "/v1/rooms/team", nil)
	for _, m := range r.Body["members"].([]any) {
		if m := m.(map[string]any); m["username"] == "bob" {
			if m["banned"] != true || m["muted"] != true {
				t.Fatalf("bob after a ban and mutes in parallel: %v, want banned and muted", m)
			}
			return
		}
	}
	t.Fatalf("bob is not listed: %s", r.Raw)
}

// GET /v1/rooms carries a validator: a client polling it gets 304 Not
// Modified, with no body, until the ACL changes what it would list; the
// validator is per user.
func TestRoomListRevalidates(t *testing.T) {
	k := topics(t, testBroker(t))
	db := pgtest.NewDatabase(t)
	h := startHistory(t, k, db)
	list := func(user, etag string) (int, string, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", h.URL+"/v1/rooms", nil)
		req.Header.Set("Authorization", "Bearer "+token(t, user))
		if etag != "" {
			req.Header.Set("If-None-Match", etag)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.Header.Get("Cache-Control") != "private, no-cache" || resp.Header.Get("Vary") != "Authorization" {
			t.Fatalf("GET /v1/rooms: Cache-Control %q, Vary %q", resp.Header.Get("Cache-Control"), resp.Header.Get("Vary"))
		}
		return resp.StatusCode, resp.Header.Get("ETag"), string(body)
	}
	must(t, 201, h.URL, "POST", "alice", "/v1/rooms/open", nil)
	status, etag, body := list("bob", "")
	if status != 200 || etag == "" || !strings.Contains(body, `"room":"open"`) {
		t.Fatalf("first GET = %d, ETag %q, %s", status, etag, body)
	}
	if status, again, body := list("bob", etag); status != 304 || again != etag || body != "" {
		t.Fatalf("GET with If-None-Match %s = %d, ETag %q, body %q: want 304, the same ETag, no body", etag, status, again, body)
	}
	if status, _, _ := list("bob", `W/"other", `+etag); status != 304 {
		t.Fatalf("If-None-Match with a list of tags = %d, want 304", status)
	}
	if status, other, body := list("alice", etag); status != 200 || other == etag || !strings.Contains(body, `"role":"owner"`) {
		t.Fatalf("alice with bob's ETag = %d, ETag %q, %s: want her own list", status, other, body)
	}

	// An invitation to a private room changes bob's list: the old
	// validator no longer matches.
	must(t, 201, h.URL, "POST", "alice", "/v1/rooms/secret", map[string]any{"private": true})
	must(t, 200, h.URL, "POST", "alice", "/v1/rooms/secret/invite", map[string]string{"username": "bob"})
	status, next, body := list("bob", etag)
	if status != 200 || next == etag || !strings.Contains(body, `"room":"secret"`) {
		t.Fatalf("after the invitation = %d, ETag %q (was %q), %s", status, next, etag, body)
	}
	if status, _, _ := list("bob", next); status != 304 {
		t.Fatalf("the new validator = %d, want 304", status)
	}
}

// An edit is bounded by -history.max-content, as messages are by the
// edges' -edge.max-content.
func TestEditContentLimit(t *testing.T) {
	k := topics(t, testBroker(t))
	db := pgtest.NewDatabase(t)
	h := startHistory(t, k, db, func(c *history.Config) { c.MaxContentChars = 20 })
	mine := event("chat", "general", "", "alice", "short", "l1")
	produce(t, k, mine)
	eventually(t, 20*time.Second, "the row", func() bool { return count(t, db, "SELECT count(*) FROM messages") == 1 })
	r := must(t, 400, h.URL, "PATCH", "alice", "/v1/messages/"+mine.ID, map[string]string{"content": strings.Repeat("é", 21)})
	if r.code() != "invalid_request" || !strings.Contains(string(r.Raw), "longer than 20 characters") {
		t.Fatalf("21 characters = %s", r.Raw)
	}
	must(t, 200, h.URL, "PATCH", "alice", "/v1/messages/"+mine.ID, map[string]string{"content": strings.Repeat("é", 20)})
}

// Request bodies are decoded as strictly as frames: duplicates, case
// variants and invalid text are 400 invalid_request, nothing is done.
func TestBodiesAreDecodedStrictly(t *testing.T) {
	k := topics(t, testBroker(t))
	db := pgtest.NewDatabase(t)
	h := startHistory(t, k, db)
	mine := event("chat", "general", "", "alice", "original", "s1")
	produce(t, k, mine)
	eventually(t, 20*time.Second, "the row", func() bool { return count(t, db, "SELECT count(*) FROM messages") == 1 })
	for _, tc := range []struct{ method, path, body, says string }{
		{"POST", "/v1/rooms/dup", `{"private":true,"private":false}`, "duplicate member private"},
		{"POST", "/v1/rooms/variant", `{"Private":true}`, `"Private": names are case-sensitive`},
		{"POST", "/v1/rooms/typed", `{"private":"yes"}`, `member "private" has the wrong type`},
		{"POST", "/v1/rooms/list", `[]`, "not a valid JSON object"},
		{"POST", "/v1/rooms/list", `null`, "not a valid JSON object"},
		{"PATCH", "/v1/messages/" + mine.ID, `{"content":"a","content":"b"}`, "duplicate member content"},
		{"PATCH", "/v1/messages/" + mine.ID, `{"content":"lone \ud800 x"}`, `member "content" is not valid text`},
		{"POST", "/v1/rooms/general/invite", `{"username":"bob","USERNAME":"carol"}`, "case-sensitive"},
	} {
		r := call(t, h.URL, tc.method, "alice", tc.path, json.RawMessage(tc.body))
		msg, _ := r.Body["error"].(map[string]any)["message"].(string)
		if r.Status != 400 || r.code() != "invalid_request" || !strings.Contains(msg, tc.says) {
			t.Errorf("%s %s %s = %d %s, want 400 invalid_request saying %q", tc.method, tc.path, tc.body, r.Status, r.Raw, tc.says)
		}
	}
	var rooms struct {
		Rooms []map[string]any `json:"rooms"`
	}
	getJSON(t, h.URL, "alice", "/v1/rooms", nil, &rooms)
	if len(rooms.Rooms) != 0 {
		t.Fatalf("rooms = %v, want none created", rooms.Rooms)
	}
	if m := message(t, h.URL, "alice", mine.ID); m.Body["content"] != "original" {
		t.Fatalf("message = %s, want it unchanged", m.Raw)
	}
}

// An edit sent right after the message's ack finds it, although history
// stores it a moment later.
func TestEditOfAMessageNotStoredYet(t *testing.T) {
	k := topics(t, testBroker(t))
	db := pgtest.NewDatabase(t)
	h := startHistory(t, k, db)
	// History consuming (its group joined, its writer warm): the 2 s an
	// edit waits is then for the message alone, as in a running system.
	produce(t, k, event("chat", "general", "", "bob", "warm-up", "w1"))
	eventually(t, 30*time.Second, "the warm-up stored", func() bool { return count(t, db, "SELECT count(*) FROM messages") == 1 })
	mine := event("chat", "general", "", "alice", "just sent", "n1")
	req, _ := http.NewRequest("PATCH", h.URL+"/v1/messages/"+mine.ID, strings.NewReader(`{"content":"just fixed"}`))
	req.Header.Set("Authorization", "Bearer "+token(t, "alice"))
	type answer struct {
		status int
		body   string
		err    error
	}
	done := make(chan answer, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- answer{err: err}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		done <- answer{status: resp.StatusCode, body: string(b)}
	}()
	time.Sleep(200 * time.Millisecond) // the edit is waiting by now (it waits at most 2 s in all)
	produce(t, k, mine)
	a := <-done
	if a.err != nil || a.status != 200 || !strings.Contains(a.body, `"content":"just fixed"`) {
		t.Fatalf("edit = %d %s %v, want 200 with the new text", a.status, a.body, a.err)
	}
}
