package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/chatsys/chat/pkg/kafkaio"
	"github.com/chatsys/chat/pkg/pgutil/pgtest"
)

// apiDo sends a JSON request as user and returns the status and the body.
func apiDo(t *testing.T, method, addr, user, path string, body any) (int, map[string]any) {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, "http://"+addr+path, r)
	req.Header.Set("Authorization", "Bearer "+mpToken(t, user))
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	var out map[string]any
	json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// wsAs dials an edge as user and collects its frames.
func wsAs(t *testing.T, p *proc, user string) (*websocket.Conn, *collector) {
	t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial("ws://"+p.addr+"/ws?token="+mpToken(t, user), nil)
	if err != nil {
		t.Fatalf("dial %s as %s: %v", p.name, user, err)
	}
	t.Cleanup(func() { ws.Close() })
	c := collect(ws)
	waitFor(t, 10*time.Second, user+" welcomed", func() bool { return len(c.ofType("welcome")) == 1 })
	return ws, c
}

// lastOf returns the newest frame of typ matching pred, or nil.
func (c *collector) lastOf(typ string, pred func(map[string]any) bool) map[string]any {
	fs := c.ofType(typ)
	for i := len(fs) - 1; i >= 0; i-- {
		if pred == nil || pred(fs[i]) {
			return fs[i]
		}
	}
	return nil
}

func field(k, v string) func(map[string]any) bool {
	return func(m map[string]any) bool { return m[k] == v }
}

// answered waits for the ack or error naming clientID and returns it.
func answered(t *testing.T, c *collector, clientID string) map[string]any {
	t.Helper()
	var got map[string]any
	waitFor(t, 10*time.Second, "an answer to "+clientID, func() bool {
		got = c.lastOf("ack", field("client_id", clientID))
		if got == nil {
			got = c.lastOf("error", field("client_id", clientID))
		}
		return got != nil
	})
	return got
}

// joinAnswer sends join room and returns "joined" or the error code.
func joinAnswer(t *testing.T, ws *websocket.Conn, c *collector, room, clientID string) string {
	t.Helper()
	before := len(c.ofType("joined"))
	ws.WriteJSON(map[string]string{"type": "join", "room": room, "client_id": clientID})
	var res string
	waitFor(t, 10*time.Second, "an answer to the join of "+room, func() bool {
		if js := c.ofType("joined"); len(js) > before && js[len(js)-1]["room"] == room {
			res = "joined"
		} else if e := c.lastOf("error", field("client_id", clientID)); e != nil {
			res = e["code"].(string)
		}
		return res != ""
	})
	return res
}

// TestConversationsAcrossProcesses drives issue 12's features through real
// WebSocket clients on two edges sharing a broker, with the router and
// history each in their own process.
func TestConversationsAcrossProcesses(t *testing.T) {
	dir := dataDir(t)
	brokerAddr := freeAddr(t)
	env := []string{"CHAT_KAFKA_BROKERS=" + brokerAddr, "CHAT_JWT_SECRET=" + mpSecret, "CHAT_DATA_DIR=" + dir,
		"CHAT_EDGE_HEARTBEAT=300ms", "CHAT_EDGE_PRESENCE_GRACE=300ms", "CHAT_KAFKA_PRESENCE_PARTITIONS=4", "CHAT_EDGE_DRAIN_DURATION=100ms"}
	startProc(t, env, "broker", "-target=broker", "-broker.addr="+brokerAddr)
	router := startProc(t, env, "router", "-target=router")
	hist := startProc(t, append(env, "CHAT_DATABASE_URL="+pgtest.NewDatabase(t)), "history", "-target=history", "-history.batch-wait=20ms")
	env = append(env, "CHAT_EDGE_HISTORY_URL=http://"+hist.addr, "CHAT_EDGE_ROUTER_URL=http://"+router.addr)
	edge1 := startProc(t, env, "edge1", "-target=edge", "-edge.id=edge1")
	edge2 := startProc(t, env, "edge2", "-target=edge", "-edge.id=edge2")

	aliceWS, alice := wsAs(t, edge1, "alice")
	alice2WS, alice2 := wsAs(t, edge2, "alice") // alice's second device
	bobWS, bob := wsAs(t, edge2, "bob")

	// Answers for a room that does not exist: a private room must look the same.
	missing := map[string]int{}
	for _, probe := range []struct{ addr, path string }{
		{hist.addr, "/v1/rooms/%s/messages"}, {hist.addr, "/v1/search?q=plans&room=%s"}, {hist.addr, "/v1/rooms/%s"}, {router.addr, "/v1/rooms/%s/members"},
	} {
		code, body := apiDo(t, "GET", probe.addr, "bob", fmt.Sprintf(probe.path, "nowhere"), nil)
		missing[probe.path] = code
		if code != 404 || body["error"].(map[string]any)["code"] != "not_found" {
			t.Fatalf("GET %s of a missing room: %d %v, want 404 not_found", probe.path, code, body)
		}
		// The page asks its own edge, which forwards to the service.
		if pc, pb := apiDo(t, "GET", edge1.addr, "bob", fmt.Sprintf(probe.path, "nowhere"), nil); pc != code || fmt.Sprint(pb) != fmt.Sprint(body) {
			t.Fatalf("GET %s through the edge: %d %v, want the service's %d %v", probe.path, pc, pb, code, body)
		}
	}
	for _, path := range []string{"/v1/rooms", "/v1/unread", "/v1/dm"} {
		code, body := apiDo(t, "GET", hist.addr, "alice", path, nil)
		if pc, pb := apiDo(t, "GET", edge2.addr, "alice", path, nil); code != 200 || pc != code || fmt.Sprint(pb) != fmt.Sprint(body) {
			t.Fatalf("GET %s through the edge: %d %v, want the service's %d %v", path, pc, pb, code, body)
		}
	}
	waitFor(t, 15*time.Second, "alice's two connections in the router's answer, through the edge", func() bool {
		on, n := presenceOf(t, edge2.addr, "alice")
		return on && n == 2
	})
	invisible := func(t *testing.T, user string) {
		t.Helper()
		for _, probe := range []struct{ addr, path string }{
			{hist.addr, "/v1/rooms/%s/messages"}, {hist.addr, "/v1/search?q=plans&room=%s"}, {hist.addr, "/v1/rooms/%s"}, {router.addr, "/v1/rooms/%s/members"},
		} {
			code, body := apiDo(t, "GET", probe.addr, user, fmt.Sprintf(probe.path, "design"), nil)
			_, missingBody := apiDo(t, "GET", probe.addr, user, fmt.Sprintf(probe.path, "nowhere"), nil)
			if code != missing[probe.path] || fmt.Sprint(body) != fmt.Sprint(missingBody) {
				t.Fatalf("GET %s of the private room as %s: %d %v; a missing room: %d %v", probe.path, user, code, body, missing[probe.path], missingBody)
			}
		}
	}

	t.Run("private room", func(t *testing.T) {
		if code, body := apiDo(t, "POST", hist.addr, "alice", "/v1/rooms/design", map[string]any{"private": true}); code != 201 {
			t.Fatalf("create: %d %v", code, body)
		}
		if got := joinAnswer(t, aliceWS, alice, "design", "j1"); got != "joined" {
			t.Fatalf("the owner's join: %s", got)
		}
		aliceWS.WriteJSON(map[string]string{"type": "chat", "room": "design", "content": "secret plans", "client_id": "c1"})
		if a := answered(t, alice, "c1"); a["type"] != "ack" {
			t.Fatalf("owner's chat: %v", a)
		}
		// Until edge 2 has read the room record the room is public there: a
		// join then succeeds (and is put out when the record arrives).
		waitFor(t, 10*time.Second, "a non-member's join is refused", func() bool {
			switch got := joinAnswer(t, bobWS, bob, "design", fmt.Sprint("j2-", time.Now().UnixNano())); got {
			case "forbidden":
				return true
			case "joined":
				bobWS.WriteJSON(map[string]string{"type": "leave", "room": "design"})
				return false
			default:
				t.Fatalf("a non-member's join: %s, want forbidden", got)
				return false
			}
		})
		invisible(t, "bob")

		if code, body := apiDo(t, "POST", hist.addr, "alice", "/v1/rooms/design/invite", map[string]string{"username": "bob"}); code != 200 {
			t.Fatalf("invite: %d %v", code, body)
		}
		if got := joinAnswer(t, bobWS, bob, "design", "j3"); got != "joined" {
			t.Fatalf("the invited member's join: %s", got)
		}
		var page struct{ Messages []map[string]any }
		waitFor(t, 15*time.Second, "the member reads the room's message", func() bool {
			return apiGet(t, hist.addr, "bob", "/v1/rooms/design/messages", &page) == 200 && len(page.Messages) == 1
		})
		var found struct{ Messages []map[string]any }
		waitFor(t, 15*time.Second, "the member's search finds the room's message", func() bool {
			return apiGet(t, hist.addr, "bob", "/v1/search?q=plans&room=design", &found) == 200 && len(found.Messages) == 1
		})

		// Muted: may read, may not write.
		apiDo(t, "POST", hist.addr, "alice", "/v1/rooms/design/mute", map[string]string{"username": "bob"})
		// bob's edge applied the mute when it tells him so.
		waitFor(t, 15*time.Second, "bob is told he is muted", func() bool { return bob.lastOf("member", field("action", "mute")) != nil })
		bobWS.WriteJSON(map[string]string{"type": "chat", "room": "design", "content": "can I talk?", "client_id": "c2"})
		if a := answered(t, bob, "c2"); a["code"] != "forbidden" {
			t.Fatalf("a muted member's chat: %v, want forbidden", a)
		}
		if code := apiGet(t, hist.addr, "bob", "/v1/rooms/design/messages", &page); code != 200 {
			t.Fatalf("a muted member reads history: %d", code)
		}
		apiDo(t, "POST", hist.addr, "alice", "/v1/rooms/design/unmute", map[string]string{"username": "bob"})

		// Removed: the subscription ends and the room is invisible again.
		if code, body := apiDo(t, "POST", hist.addr, "alice", "/v1/rooms/design/remove", map[string]string{"username": "bob"}); code != 200 {
			t.Fatalf("remove: %d %v", code, body)
		}
		waitFor(t, 15*time.Second, "bob's subscription of design ends", func() bool { return bob.lastOf("left", field("room", "design")) != nil })
		if m := alice.lastOf("member", field("action", "remove")); m == nil || m["username"] != "bob" {
			waitFor(t, 15*time.Second, "alice sees the removal", func() bool { return alice.lastOf("member", field("action", "remove")) != nil })
		}
		invisible(t, "bob")

		// Banned from a public room: cannot rejoin.
		if code, body := apiDo(t, "POST", hist.addr, "root", "/v1/rooms/lobby", nil); code != 201 {
			t.Fatalf("create lobby: %d %v", code, body)
		}
		if got := joinAnswer(t, bobWS, bob, "lobby", "j4"); got != "joined" {
			t.Fatalf("join lobby: %s", got)
		}
		apiDo(t, "POST", hist.addr, "root", "/v1/rooms/lobby/ban", map[string]string{"username": "bob"})
		waitFor(t, 15*time.Second, "bob is put out of lobby", func() bool { return bob.lastOf("left", field("room", "lobby")) != nil })
		if got := joinAnswer(t, bobWS, bob, "lobby", "j5"); got != "forbidden" {
			t.Fatalf("a banned user's join: %s", got)
		}

		// A restarted edge enforces the same state.
		edge3 := startProc(t, env, "edge3", "-target=edge", "-edge.id=edge3")
		bob3WS, bob3 := wsAs(t, edge3, "bob")
		if got := joinAnswer(t, bob3WS, bob3, "design", "j6"); got != "forbidden" {
			t.Fatalf("bob joins design on a new edge: %s", got)
		}
		if got := joinAnswer(t, bob3WS, bob3, "lobby", "j7"); got != "forbidden" {
			t.Fatalf("banned bob joins lobby on a new edge: %s", got)
		}
	})

	t.Run("typing crosses edges and never reaches history", func(t *testing.T) {
		for _, c := range []struct {
			ws *websocket.Conn
			cl *collector
		}{{aliceWS, alice}, {bobWS, bob}} {
			if got := joinAnswer(t, c.ws, c.cl, "general", fmt.Sprint("g", time.Now().UnixNano())); got != "joined" {
				t.Fatal(got)
			}
		}
		aliceWS.WriteJSON(map[string]string{"type": "typing", "room": "general"})
		waitFor(t, 15*time.Second, "bob sees alice typing", func() bool { return bob.lastOf("typing", field("username", "alice")) != nil })
		aliceWS.WriteJSON(map[string]string{"type": "chat", "room": "general", "content": "after typing", "client_id": "t1"})
		answered(t, alice, "t1")
		var page struct{ Messages []map[string]any }
		waitFor(t, 15*time.Second, "history has the message", func() bool {
			return apiGet(t, hist.addr, "bob", "/v1/rooms/general/messages", &page) == 200 && len(page.Messages) == 1
		})
		for _, m := range page.Messages {
			if m["type"] != "chat" {
				t.Fatalf("history of general holds %v", m)
			}
		}
	})

	t.Run("read positions reach the other device and the peer; unread agrees", func(t *testing.T) {
		var poss []string
		for i := range 2 {
			bobWS.WriteJSON(map[string]string{"type": "private", "target": "alice", "content": fmt.Sprint("dm ", i), "client_id": fmt.Sprint("dm", i)})
			answered(t, bob, fmt.Sprint("dm", i))
		}
		waitFor(t, 10*time.Second, "alice gets both DMs", func() bool { return len(alice.ofType("private")) == 2 })
		for _, f := range alice.ofType("private") {
			poss = append(poss, f["pos"].(string))
		}
		aliceWS.WriteJSON(map[string]string{"type": "read", "target": "bob", "pos": poss[0]})
		waitFor(t, 10*time.Second, "alice's other device and bob get the read position", func() bool {
			return alice2.lastOf("read", field("pos", poss[0])) != nil && bob.lastOf("read", field("pos", poss[0])) != nil
		})
		if r := bob.lastOf("read", nil); r["username"] != "alice" || r["target"] != "bob" {
			t.Fatalf("bob's read receipt: %v", r)
		}
		unreadFrom := func(peer string) (float64, string) {
			code, body := apiDo(t, "GET", hist.addr, "alice", "/v1/unread", nil)
			if code != 200 {
				t.Fatalf("unread: %d %v", code, body)
			}
			for _, c := range body["conversations"].([]any) {
				c := c.(map[string]any)
				if c["peer"] == peer {
					lr, _ := c["last_read"].(string)
					return c["unread"].(float64), lr
				}
			}
			return -1, ""
		}
		waitFor(t, 15*time.Second, "history has the read position", func() bool { n, lr := unreadFrom("bob"); return n == 1 && lr == poss[0] })
		bobWS.WriteJSON(map[string]string{"type": "private", "target": "alice", "content": "one more", "client_id": "dm2"})
		answered(t, bob, "dm2")
		waitFor(t, 15*time.Second, "unread counts the later message", func() bool { n, _ := unreadFrom("bob"); return n == 2 })

		// A position outside the conversation's partition is refused.
		part, _, _ := strings.Cut(poss[0], ":")
		n, _ := strconv.Atoi(part)
		aliceWS.WriteJSON(map[string]string{"type": "read", "target": "bob", "pos": fmt.Sprintf("%d:99999", (n+1)%12), "client_id": "rp"})
		if a := answered(t, alice, "rp"); a["code"] != "invalid_message" {
			t.Fatalf("read at another partition's position: %v, want invalid_message", a)
		}
		aliceWS.WriteJSON(map[string]string{"type": "read", "target": "bob", "pos": part + ":99999999", "client_id": "rp2"})
		if a := answered(t, alice, "rp2"); a["code"] != "invalid_message" {
			t.Fatalf("read past the partition's end: %v, want invalid_message", a)
		}

		// A room read reaches the reader's devices only.
		pos := alice.lastOf("chat", field("client_id", "t1"))["pos"].(string)
		aliceWS.WriteJSON(map[string]string{"type": "read", "room": "general", "pos": pos})
		waitFor(t, 10*time.Second, "alice's other device gets the room read", func() bool { return alice2.lastOf("read", field("room", "general")) != nil })
		if bob.lastOf("read", field("room", "general")) != nil {
			t.Fatal("bob got alice's room read position")
		}
		_ = alice2WS
	})

	t.Run("edit and delete through the WebSocket", func(t *testing.T) {
		aliceWS.WriteJSON(map[string]string{"type": "chat", "room": "general", "content": "teh typo", "client_id": "e0"})
		id := answered(t, alice, "e0")["id"].(string)
		bobWS.WriteJSON(map[string]string{"type": "edit", "id": id, "content": "hijack", "client_id": "e1"})
		if a := answered(t, bob, "e1"); a["code"] != "not_found" {
			t.Fatalf("bob edits alice's message: %v, want not_found", a)
		}
		// The edit may reach history before the message: retry until it is there.
		var editCID string
		waitFor(t, 10*time.Second, "alice's edit is acknowledged", func() bool {
			editCID = fmt.Sprint("e2-", time.Now().UnixNano())
			aliceWS.WriteJSON(map[string]string{"type": "edit", "id": id, "content": "the fixed text", "client_id": editCID})
			return answered(t, alice, editCID)["type"] == "ack"
		})
		waitFor(t, 10*time.Second, "bob sees the edit in place", func() bool {
			e := bob.lastOf("edit", field("id", id))
			return e != nil && e["content"] == "the fixed text" && e["edited_at"] != nil && e["pos"] != nil && e["room"] == "general"
		})

		// A late resend of that edit, after a newer one, is answered with
		// the same ack and changes nothing: the newer text stays.
		aliceWS.WriteJSON(map[string]string{"type": "edit", "id": id, "content": "the final text", "client_id": "e3"})
		if a := answered(t, alice, "e3"); a["type"] != "ack" {
			t.Fatalf("second edit: %v", a)
		}
		aliceWS.WriteJSON(map[string]string{"type": "edit", "id": id, "content": "the fixed text", "client_id": editCID})
		waitFor(t, 10*time.Second, "the resent edit is answered", func() bool {
			var acks []map[string]any
			for _, a := range alice.ofType("ack") {
				if a["client_id"] == editCID {
					acks = append(acks, a)
				}
			}
			if len(acks) == 2 && acks[1]["id"] != id {
				t.Fatalf("resent edit acked with %v, want id %s", acks[1], id)
			}
			return len(acks) == 2
		})
		// The same client_id for another text of the message is another
		// edit: refused, nothing changed.
		aliceWS.WriteJSON(map[string]string{"type": "edit", "id": id, "content": "a third text", "client_id": editCID})
		waitFor(t, 10*time.Second, "the edit under a used client_id is refused", func() bool {
			e := alice.lastOf("error", field("client_id", editCID))
			return e != nil && e["code"] == "invalid_message"
		})
		// A chat sent after the answer lands behind anything the resend
		// appended, in the same partition: once bob has it, the resend's
		// edit would have arrived.
		aliceWS.WriteJSON(map[string]string{"type": "chat", "room": "general", "content": "after the resend", "client_id": "e4"})
		waitFor(t, 10*time.Second, "bob gets the chat after the resend", func() bool {
			return bob.lastOf("chat", field("client_id", "e4")) != nil
		})
		if e := bob.lastOf("edit", field("id", id)); e["content"] != "the final text" {
			t.Fatalf("after the resend bob's last edit of %s is %v, want the final text", id, e)
		}
		waitFor(t, 30*time.Second, "history keeps the final text", func() bool {
			var m map[string]any
			return apiGet(t, hist.addr, "bob", "/v1/messages/"+id, &m) == 200 && m["content"] == "the final text"
		})
		// A client_id is one edit of one message: reused for an edit of
		// another message it is a new edit; an id in capitals is acked
		// with its canonical form.
		aliceWS.WriteJSON(map[string]string{"type": "chat", "room": "general", "content": "another one", "client_id": "o1"})
		other := answered(t, alice, "o1")["id"].(string)
		waitFor(t, 10*time.Second, "the edit of the other message (same client_id as an earlier edit) is applied", func() bool {
			acksBefore, errsBefore := len(alice.ofType("ack")), len(alice.ofType("error"))
			aliceWS.WriteJSON(map[string]string{"type": "edit", "id": strings.ToUpper(other), "content": "another, edited", "client_id": editCID})
			var a map[string]any
			waitFor(t, 10*time.Second, "an answer", func() bool {
				if acks := alice.ofType("ack"); len(acks) > acksBefore {
					a = acks[len(acks)-1]
				} else if errs := alice.ofType("error"); len(errs) > errsBefore {
					a = errs[len(errs)-1] // not_found: history may not have the message yet
					if a["client_id"] != editCID || a["code"] != "not_found" {
						t.Fatalf("edit of %s: %v", other, a)
					}
				}
				return a != nil
			})
			if a["type"] == "ack" && a["id"] != other {
				t.Fatalf("edit of %s acked with %v, want its canonical id", other, a)
			}
			return a["type"] == "ack"
		})
		waitFor(t, 10*time.Second, "bob sees the other message edited", func() bool {
			e := bob.lastOf("edit", field("id", other))
			return e != nil && e["content"] == "another, edited"
		})
		var found struct{ Messages []map[string]any }
		waitFor(t, 30*time.Second, "history serves the new text, search finds it and not the old", func() bool {
			var old struct{ Messages []map[string]any }
			return apiGet(t, hist.addr, "bob", "/v1/search?q=final&room=general", &found) == 200 && len(found.Messages) == 1 &&
				found.Messages[0]["edited_at"] != nil &&
				apiGet(t, hist.addr, "bob", "/v1/search?q=typo&room=general", &old) == 200 && len(old.Messages) == 0
		})

		aliceWS.WriteJSON(map[string]string{"type": "delete", "id": id, "client_id": "d1"})
		if a := answered(t, alice, "d1"); a["type"] != "ack" || a["id"] != id {
			t.Fatalf("delete: %v", a)
		}
		waitFor(t, 10*time.Second, "bob sees the delete", func() bool { return bob.lastOf("delete", field("id", id)) != nil })
		waitFor(t, 30*time.Second, "history holds a tombstone and search forgets the text", func() bool {
			var page struct{ Messages []map[string]any }
			if apiGet(t, hist.addr, "bob", "/v1/rooms/general/messages", &page) != 200 {
				return false
			}
			for _, m := range page.Messages {
				if m["id"] == id {
					_, hasContent := m["content"]
					return m["deleted"] == true && !hasContent &&
						apiGet(t, hist.addr, "bob", "/v1/search?q=final&room=general", &found) == 200 && len(found.Messages) == 0
				}
			}
			return false
		})
	})

	t.Run("a block stops DMs and appends nothing", func(t *testing.T) {
		if code, body := apiDo(t, "PUT", hist.addr, "carol", "/v1/blocks/alice", nil); code != 200 {
			t.Fatalf("block: %d %v", code, body)
		}
		k := kafkaio.Config{Brokers: brokerAddr}
		end := func() (n int64) {
			for p := range 12 {
				_, next, err := k.Offsets(context.Background(), "chat.direct", p)
				if err != nil {
					t.Fatal(err)
				}
				n += next
			}
			return n
		}
		// The edges apply the block within milliseconds of the answer.
		waitFor(t, 15*time.Second, "the block is enforced", func() bool {
			cid := fmt.Sprint("b0-", time.Now().UnixNano())
			aliceWS.WriteJSON(map[string]string{"type": "private", "target": "carol", "content": "hello?", "client_id": cid})
			return answered(t, alice, cid)["code"] == "forbidden"
		})
		before := end()
		aliceWS.WriteJSON(map[string]string{"type": "private", "target": "carol", "content": "hello?", "client_id": "b1"})
		if a := answered(t, alice, "b1"); a["code"] != "forbidden" {
			t.Fatalf("a DM to a user who blocked the sender: %v, want forbidden", a)
		}
		if got := end(); got != before {
			t.Fatalf("chat.direct grew by %d records", got-before)
		}
		apiDo(t, "DELETE", hist.addr, "carol", "/v1/blocks/"+url.PathEscape("alice"), nil)
		waitFor(t, 15*time.Second, "the unblock is enforced", func() bool {
			cid := fmt.Sprint("b2-", time.Now().UnixNano())
			aliceWS.WriteJSON(map[string]string{"type": "private", "target": "carol", "content": "hello again", "client_id": cid})
			return answered(t, alice, cid)["type"] == "ack"
		})
	})

	t.Run("an edit waiting on a stopped history holds up nothing else", func(t *testing.T) {
		aliceWS.WriteJSON(map[string]string{"type": "chat", "room": "general", "content": "first draft", "client_id": "s0"})
		id := answered(t, alice, "s0")["id"].(string)
		waitFor(t, 30*time.Second, "history has the message", func() bool {
			cid := fmt.Sprint("s1-", time.Now().UnixNano())
			aliceWS.WriteJSON(map[string]string{"type": "edit", "id": id, "content": "second draft", "client_id": cid})
			return answered(t, alice, cid)["type"] == "ack"
		})
		if err := hist.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		stopped := true
		resume := func() {
			if stopped {
				hist.cmd.Process.Signal(syscall.SIGCONT)
				stopped = false
			}
		}
		defer resume()
		aliceWS.WriteJSON(map[string]string{"type": "edit", "id": id, "content": "third draft", "client_id": "s2"})
		// Eight edits may wait for history; the ninth and tenth are refused
		// at once.
		for i := range 9 {
			aliceWS.WriteJSON(map[string]string{"type": "edit", "id": id, "content": "third draft", "client_id": fmt.Sprint("x", i)})
		}
		aliceWS.WriteJSON(map[string]string{"type": "chat", "room": "general", "content": "meanwhile", "client_id": "s3"})
		// The edge gives history 10 s to answer an edit; the chat sent after
		// them must not wait for that.
		waitFor(t, 15*time.Second, "the chat sent after the edits is acknowledged", func() bool {
			return alice.lastOf("ack", field("client_id", "s3")) != nil
		})
		for _, cid := range []string{"x7", "x8"} {
			if a := answered(t, alice, cid); a["code"] != "unavailable" {
				t.Fatalf("edit %s beyond the eight waiting: %v, want unavailable", cid, a)
			}
		}
		if a := alice.lastOf("ack", field("client_id", "s2")); a != nil {
			t.Fatalf("the edit was acknowledged while history was stopped: %v", a)
		}
		resume()
		if a := answered(t, alice, "s2"); a["type"] != "ack" {
			t.Fatalf("the edit after history resumed: %v, want an ack", a)
		}
		waitFor(t, 10*time.Second, "bob sees the third draft", func() bool {
			e := bob.lastOf("edit", field("id", id))
			return e != nil && e["content"] == "third draft"
		})
	})

	t.Run("the page's API requests through an edge while history is down", func(t *testing.T) {
		hist.cmd.Process.Signal(syscall.SIGTERM)
		hist.cmd.Wait()
		code, body := apiDo(t, "GET", edge1.addr, "alice", "/v1/rooms/general/messages", nil)
		if code != 503 || body["error"].(map[string]any)["code"] != "unavailable" {
			t.Fatalf("history down, through the edge: %d %v, want 503 unavailable", code, body)
		}
		if code, _ := apiDo(t, "GET", edge1.addr, "alice", "/v1/presence?user=alice", nil); code != 200 {
			t.Fatalf("presence through the edge while history is down: %d, want 200", code)
		}
	})
}
