package chatevent

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// The tests named TestEventWireFormat* write their golden files with
// -update (make generate).

func TestEventWireFormatEdgeFrames(t *testing.T) {
	yes, no := true, false
	for _, tc := range []struct {
		name string
		got  []byte
		back any // a pointer to a zero frame to decode into
		want any
	}{
		{"welcome", WelcomeFrame{Username: "alice"}.Encode(), &WelcomeFrame{}, &WelcomeFrame{Type: TypeWelcome, Username: "alice"}},
		{"joined", JoinedFrame{Room: "general"}.Encode(), &JoinedFrame{}, &JoinedFrame{Type: TypeJoined, Room: "general"}},
		{"joined_recovered", JoinedFrame{Room: "general", Recovered: &yes}.Encode(), &JoinedFrame{}, &JoinedFrame{Type: TypeJoined, Room: "general", Recovered: &yes}},
		{"joined_not_recovered", JoinedFrame{Room: "general", Recovered: &no}.Encode(), &JoinedFrame{}, &JoinedFrame{Type: TypeJoined, Room: "general", Recovered: &no}},
		{"left", LeftFrame{Room: "general"}.Encode(), &LeftFrame{}, &LeftFrame{Type: TypeLeft, Room: "general"}},
		{"ack", AckFrame{ClientID: "c-1", ID: "01936c4e-8a3b-7cde-8f00-0123456789ab"}.Encode(), &AckFrame{}, &AckFrame{Type: TypeAck, ClientID: "c-1", ID: "01936c4e-8a3b-7cde-8f00-0123456789ab"}},
		{"error", ErrorFrame{Code: CodeInvalidMessage, Message: `room "General" is not valid: <a-z>`, ClientID: "c-1"}.Encode(), &ErrorFrame{},
			&ErrorFrame{Type: TypeError, Code: CodeInvalidMessage, Message: `room "General" is not valid: <a-z>`, ClientID: "c-1"}},
		{"error_no_client_id", ErrorFrame{Code: CodeInvalidMessage, Message: "frame must be a JSON object"}.Encode(), &ErrorFrame{},
			&ErrorFrame{Type: TypeError, Code: CodeInvalidMessage, Message: "frame must be a JSON object"}},
		{"typing_room", TypingFrame{Room: "general", Username: "bob"}.Encode(), &TypingFrame{}, &TypingFrame{Type: TypeTyping, Room: "general", Username: "bob"}},
		{"typing_dm", TypingFrame{Target: "alice", Username: "bob"}.Encode(), &TypingFrame{}, &TypingFrame{Type: TypeTyping, Target: "alice", Username: "bob"}},
		{"member", MemberFrame{Room: "design", Username: "bob", Action: ActionInvite, By: "alice"}.Encode(), &MemberFrame{},
			&MemberFrame{Type: TypeMember, Room: "design", Username: "bob", Action: ActionInvite, By: "alice"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			golden(t, "frame_"+tc.name+".json", append(tc.got, '\n'))
			if err := json.Unmarshal(tc.got, tc.back); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(tc.back, tc.want) {
				t.Fatalf("decoded %+v, want %+v", tc.back, tc.want)
			}
		})
	}
	// Encode sets the type whatever the caller put there.
	if got := string(AckFrame{Type: "chat", ClientID: "1", ID: "2"}.Encode()); !strings.HasPrefix(got, `{"type":"ack",`) {
		t.Fatalf("AckFrame with another Type encodes as %s", got)
	}
}

func TestEventWireFormatCloseCodes(t *testing.T) {
	var b strings.Builder
	for _, c := range []CloseCode{CloseGoingAway, CloseUnsupportedData, CloseInvalidPayload, CloseTokenExpired, CloseTooLarge, CloseInternal, CloseSlowClient, 1000} {
		fmt.Fprintf(&b, "%d label=%s reconnect=%v\n", int(c), c.Label(), c.Reconnect())
	}
	golden(t, "close_codes.txt", []byte(b.String()))
}

func TestEventWireFormatPresence(t *testing.T) {
	const ts = "2026-11-27T10:11:12.345Z"
	for _, tc := range []struct {
		name, key string
		p         Presence
	}{
		{"connect", "alice", Presence{Type: PresenceConnect, Edge: "edge-1", User: "alice", Connections: 2, Timestamp: ts}},
		{"disconnect", "alice", Presence{Type: PresenceDisconnect, Edge: "edge-1", User: "alice", Timestamp: ts}},
		{"join", "alice", Presence{Type: PresenceJoin, Edge: "edge-1", User: "alice", Room: "general", Timestamp: ts}},
		{"leave", "alice", Presence{Type: PresenceLeave, Edge: "edge-1", User: "alice", Room: "general", Timestamp: ts}},
		{"heartbeat", "edge-1", Presence{Type: PresenceHeartbeat, Edge: "edge-1", Timestamp: ts}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := tc.p.Encode()
			if err != nil {
				t.Fatal(err)
			}
			golden(t, "presence_"+tc.name+".json", append(b, '\n'))
			if k := tc.p.Key(); k != tc.key {
				t.Errorf("Key() = %q, want %q", k, tc.key)
			}
			back, err := DecodePresence(b)
			if err != nil || back != tc.p {
				t.Fatalf("DecodePresence(Encode(x)) = %+v, %v; want %+v", back, err, tc.p)
			}
		})
	}
	if _, err := DecodePresence([]byte(`[1]`)); err == nil {
		t.Fatal("DecodePresence([1]) = nil error")
	}
}

func TestEventWireFormatDelivery(t *testing.T) {
	ev := Event{ID: "01936c4e-8a3b-7cde-8f00-0123456789ad", Type: TypePrivate, Target: "bob", Username: "alice", Content: "psst <b>&</b>", Timestamp: "2026-11-27T10:11:12.001Z", ClientID: "c-2"}
	pos := Pos{Partition: 3, Offset: 17}
	b, err := EncodeDelivery(ev, pos)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "delivery.json", append(b, '\n'))
	back, bpos, err := DecodeDelivery(b)
	want := ev
	want.Pos = "3:17"
	if err != nil || back != want || bpos != pos {
		t.Fatalf("DecodeDelivery(EncodeDelivery(x)) = %+v, %v, %v; want %+v, %v", back, bpos, err, want, pos)
	}
	if ev.Pos != "" {
		t.Fatal("EncodeDelivery changed its argument")
	}
	chat := Event{ID: ev.ID, Type: TypeChat, Room: "general", Username: "alice", Content: "x", Timestamp: ev.Timestamp, Pos: "1:2"}
	for name, in := range map[string]string{
		"not json":    `x`,
		"no pos":      strings.Replace(string(b), `,"pos":"3:17"`, ``, 1),
		"bad pos":     strings.Replace(string(b), `"3:17"`, `"3"`, 1),
		"invalid":     strings.Replace(string(b), `"target":"bob"`, `"target":"b b"`, 1),
		"not private": string(mustMarshal(&chat)),
	} {
		if _, _, err := DecodeDelivery([]byte(in)); !errors.Is(err, ErrInvalidEvent) {
			t.Errorf("%s: DecodeDelivery(%s) error = %v, want ErrInvalidEvent", name, in, err)
		}
	}
}

func TestEventWireFormatACL(t *testing.T) {
	const ts = "2026-11-27T10:11:12.345Z"
	for _, tc := range []struct {
		name, key string
		r         ACLRecord
	}{
		{"room", "room:design", ACLRecord{Type: ACLRoom, Room: "design", Username: "alice", Private: true, By: "alice", Timestamp: ts}},
		{"member", "member:design:bob", ACLRecord{Type: ACLMember, Room: "design", Username: "bob", Action: ActionMute, Role: RoleMember, Muted: true, By: "alice", Timestamp: ts}},
		{"block", "block:bob:mallory", ACLRecord{Type: ACLBlock, Username: "bob", Target: "mallory", Blocked: true, Timestamp: ts}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.r.Encode()
			golden(t, "acl_"+tc.name+".json", append(b, '\n'))
			if k := tc.r.Key(); k != tc.key {
				t.Errorf("Key() = %q, want %q", k, tc.key)
			}
			back, err := DecodeACL(b)
			if err != nil || back != tc.r {
				t.Fatalf("DecodeACL(Encode(x)) = %+v, %v; want %+v", back, err, tc.r)
			}
		})
	}
	for _, in := range []string{`x`, `{"type":"member","room":"design","username":"bob","action":"promote","timestamp":"x"}`,
		`{"type":"room","room":"Design","username":"alice"}`, `{"type":"block","username":"bob"}`, `{"type":"owner","username":"bob"}`} {
		if _, err := DecodeACL([]byte(in)); !errors.Is(err, ErrInvalidEvent) {
			t.Errorf("DecodeACL(%s) error = %v, want ErrInvalidEvent", in, err)
		}
	}
}

func TestACLPolicy(t *testing.T) {
	a := NewACL()
	apply := func(r ACLRecord) { a.Apply(r) }
	member := func(room, user, action string) {
		m := a.Member(room, user).After(action)
		apply(ACLRecord{Type: ACLMember, Room: room, Username: user, Action: action, Role: m.Role, Muted: m.Muted, Banned: m.Banned})
	}
	// Public and ownerless by default.
	if !a.MayJoin("lobby", "bob", false) || !a.MayWrite("lobby", "bob", false) || a.MayModerate("lobby", "bob", false) {
		t.Fatal("an unknown room is not public and ownerless")
	}
	apply(ACLRecord{Type: ACLRoom, Room: "design", Username: "alice", Private: true})
	apply(ACLRecord{Type: ACLRoom, Room: "design", Username: "mallory", Private: false}) // a later creation is ignored
	if ri, ok := a.Room("design"); !ok || !ri.Private || ri.Owner != "alice" {
		t.Fatalf("Room(design) = %+v, %v", ri, ok)
	}
	for _, c := range []struct {
		name string
		got  bool
		want bool
	}{
		{"owner reads", a.MayRead("design", "alice", false), true},
		{"stranger reads", a.MayRead("design", "bob", false), false},
		{"admin reads", a.MayRead("design", "root", true), true},
		{"owner manages", a.MayManage("design", "alice", ActionInvite, "bob", false), true},
		{"stranger manages", a.MayManage("design", "bob", ActionInvite, "bob", false), false},
	} {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	member("design", "bob", ActionInvite)
	member("design", "carol", ActionMod)
	if !a.MayJoin("design", "bob", false) || !a.MayModerate("design", "carol", false) {
		t.Fatal("invited member or mod lacks access")
	}
	if !a.MayManage("design", "carol", ActionMute, "bob", false) || a.MayManage("design", "carol", ActionMod, "bob", false) ||
		a.MayManage("design", "carol", ActionBan, "alice", false) || a.MayManage("design", "bob", ActionMute, "carol", false) {
		t.Fatal("mod powers are wrong")
	}
	member("design", "bob", ActionMute)
	if !a.MayRead("design", "bob", false) || a.MayWrite("design", "bob", false) {
		t.Fatal("a muted member must read and not write")
	}
	member("design", "bob", ActionBan)
	if a.MayJoin("design", "bob", false) || a.MayRead("design", "bob", false) {
		t.Fatal("a banned user keeps access")
	}
	member("lobby", "eve", ActionBan)
	if a.MayJoin("lobby", "eve", false) || !a.MayRead("lobby", "eve", false) {
		t.Fatal("a user banned from a public room may rejoin, or may not read it")
	}
	member("design", "carol", ActionRemove)
	if a.MayRead("design", "carol", false) {
		t.Fatal("a removed member keeps access")
	}
	// Leaving (or being removed) does not lift a mute: a muted user who
	// removes themself from a public room and joins again is still muted.
	member("lobby", "mallory", ActionInvite)
	member("lobby", "mallory", ActionMute)
	if !a.MayManage("lobby", "mallory", ActionRemove, "mallory", false) {
		t.Fatal("a member may not remove themself")
	}
	member("lobby", "mallory", ActionRemove)
	if !a.MayJoin("lobby", "mallory", false) || a.MayWrite("lobby", "mallory", false) {
		t.Fatal("a muted user who removed themself may write again, or may not rejoin the public room")
	}
	apply(ACLRecord{Type: ACLBlock, Username: "bob", Target: "eve", Blocked: true})
	if MayMessage("eve", "bob", a) || !MayMessage("bob", "eve", a) || !MayMessage("eve", "bob", nil) {
		t.Fatal("MayMessage does not follow blocks")
	}
	apply(ACLRecord{Type: ACLBlock, Username: "bob", Target: "eve", Blocked: false})
	if !MayMessage("eve", "bob", a) {
		t.Fatal("an unblock is not applied")
	}
}
