package chatevent

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	goldenfile "github.com/chatsys/chat/pkg/testutil/golden"
	"strings"
	"testing"
	"unicode/utf8"
)

var update = flag.Bool("update", false, "rewrite golden files")

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	goldenfile.Check(t, name, got, *update, "; this is a wire change")
}

func TestEventWireFormat(t *testing.T) {
	for _, tc := range []struct {
		name string
		ev   Event
	}{
		{"chat", Event{ID: "01936c4e-8a3b-7cde-8f00-0123456789ab", Type: TypeChat, Room: "general", Username: "alice", Content: "hello <b>world</b> & \"you\"", Timestamp: "2026-11-27T10:11:12.345Z", ClientID: "c-1"}},
		{"system_broadcast", Event{ID: "01936c4e-8a3b-7cde-8f00-0123456789ac", Type: TypeSystem, Username: "root", Content: "maintenance at noon", Timestamp: "2026-11-27T10:11:12.000Z"}},
		{"private", Event{ID: "01936c4e-8a3b-7cde-8f00-0123456789ad", Type: TypePrivate, Target: "bob", Username: "alice", Content: "psst", Timestamp: "2026-11-27T10:11:12.001Z", ClientID: "c-2"}},
		{"edit", Event{ID: "01936c4e-8a3b-7cde-8f00-0123456789ab", Type: TypeEdit, Room: "general", Username: "alice", Content: "hello world", Timestamp: "2026-11-27T10:12:00.000Z", EditedAt: "2026-11-27T10:12:00.000Z", ClientID: "c-3"}},
		{"delete_dm", Event{ID: "01936c4e-8a3b-7cde-8f00-0123456789ad", Type: TypeDelete, Target: "bob", Username: "alice", Timestamp: "2026-11-27T10:13:00.000Z", ClientID: "c-4"}},
		{"read_room", Event{ID: "01936c4e-8a3b-7cde-8f00-0123456789ae", Type: TypeRead, Room: "general", Username: "alice", Timestamp: "2026-11-27T10:14:00.000Z", Pos: "5:42"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := tc.ev.Encode()
			if err != nil {
				t.Fatal(err)
			}
			golden(t, tc.name+".json", append(b, '\n'))
			back, err := Decode(b)
			if err != nil {
				t.Fatalf("Decode(Encode(%v)) error: %v", tc.ev, err)
			}
			if back != tc.ev {
				t.Fatalf("Decode(Encode(x)) = %+v, want %+v", back, tc.ev)
			}
		})
	}
	// pos is never stored in the log.
	ev := Event{ID: "01936c4e-8a3b-7cde-8f00-0123456789ab", Type: TypeChat, Room: "r", Username: "u", Content: "x", Timestamp: "2026-11-27T10:11:12.345Z", Pos: "3:17"}
	b, _ := ev.Encode()
	if bytes.Contains(b, []byte(`"pos"`)) {
		t.Fatalf("Encode kept pos: %s", b)
	}
}

func TestDecodeRejects(t *testing.T) {
	for _, tc := range []struct{ name, in string }{
		{"not json", `x`},
		{"bad id", `{"id":"nope","type":"chat","room":"r","username":"u","timestamp":"2026-11-27T10:11:12.345Z"}`},
		{"bad time", `{"id":"01936c4e-8a3b-7cde-8f00-0123456789ab","type":"chat","room":"r","username":"u","timestamp":"yesterday"}`},
		{"unknown type", `{"id":"01936c4e-8a3b-7cde-8f00-0123456789ab","type":"x","room":"r","username":"u","timestamp":"2026-11-27T10:11:12.345Z"}`},
		{"NUL in content", `{"id":"01936c4e-8a3b-7cde-8f00-0123456789ab","type":"chat","room":"r","username":"u","content":"a\u0000","timestamp":"2026-11-27T10:11:12.345Z"}`},
		{"chat without room", `{"id":"01936c4e-8a3b-7cde-8f00-0123456789ab","type":"chat","username":"u","timestamp":"2026-11-27T10:11:12.345Z"}`},
		{"chat with a target", `{"id":"01936c4e-8a3b-7cde-8f00-0123456789ab","type":"chat","room":"r","target":"bob","username":"u","timestamp":"2026-11-27T10:11:12.345Z"}`},
		{"private with a room", `{"id":"01936c4e-8a3b-7cde-8f00-0123456789ab","type":"private","room":"r","target":"bob","username":"u","timestamp":"2026-11-27T10:11:12.345Z"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Decode([]byte(tc.in)); err == nil {
				t.Fatalf("Decode(%s) = nil error, want one", tc.in)
			}
		})
	}
}

func TestPos(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{{"0:0", true}, {"11:123456789", true}, {"", false}, {"1", false}, {"a:1", false}, {"1:-1", false}, {"-1:1", false}, {"1:2:3", false}, {"+7:1", false}, {"07:1", false}, {"7:0001", false}, {"7: 1", false}} {
		p, err := ParsePos(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("ParsePos(%q) error = %v, want ok %v", tc.in, err, tc.ok)
		}
		if err == nil && p.String() != tc.in {
			t.Errorf("ParsePos(%q).String() = %q, want %q", tc.in, p.String(), tc.in)
		}
	}
}

func TestDecodeFrame(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		wantErr  bool
		want     Frame
	}{
		{"join", `{"type":"join","room":"general"}`, false, Frame{Type: "join", Room: "general"}},
		{"join since", `{"type":"join","room":"general","since":"3:17"}`, false, Frame{Type: "join", Room: "general", Since: "3:17"}},
		{"chat ignores username", `{"type":"chat","room":"a-b_c","content":"hi","client_id":"1","username":"mallory"}`, false, Frame{Type: "chat", Room: "a-b_c", Content: "hi", ClientID: "1"}},
		{"private", `{"type":"private","target":"bob","content":"hi","client_id":"2"}`, false, Frame{Type: "private", Target: "bob", Content: "hi", ClientID: "2"}},
		{"room uppercase", `{"type":"join","room":"General"}`, true, Frame{}},
		{"room leading dash", `{"type":"join","room":"-x"}`, true, Frame{}},
		{"room 64 chars", `{"type":"join","room":"` + strings.Repeat("a", 64) + `"}`, false, Frame{Type: "join", Room: strings.Repeat("a", 64)}},
		{"private bad target", `{"type":"private","target":"bob smith","content":"hi","client_id":"2"}`, true, Frame{}},
		{"number", `42`, true, Frame{}},
		{"chat NUL in content", `{"type":"chat","room":"general","content":"a\u0000b","client_id":"1"}`, true, Frame{}},
		{"private NUL in content", `{"type":"private","target":"bob","content":"\u0000","client_id":"1"}`, true, Frame{}},
		{"duplicate room", `{"type":"chat","room":"a","room":"b","content":"hi","client_id":"1"}`, true, Frame{}},
		{"duplicate type", `{"type":"join","type":"leave","room":"a"}`, true, Frame{}},
		{"case variant ROOM", `{"type":"join","ROOM":"a","room":"b"}`, true, Frame{}},
		{"case variant Content", `{"type":"chat","room":"a","Content":"x","content":"hi","client_id":"1"}`, true, Frame{}},
		{"unknown member ignored", `{"type":"join","room":"a","future":{"x":1}}`, false, Frame{Type: "join", Room: "a"}},
		{"NUL in client_id", `{"type":"chat","room":"general","content":"hi","client_id":"a\u0000"}`, true, Frame{}},
		{"typing room", `{"type":"typing","room":"general"}`, false, Frame{Type: "typing", Room: "general"}},
		{"typing target", `{"type":"typing","target":"bob"}`, false, Frame{Type: "typing", Target: "bob"}},
		{"typing both", `{"type":"typing","room":"general","target":"bob"}`, true, Frame{}},
		{"read room", `{"type":"read","room":"general","pos":"3:17"}`, false, Frame{Type: "read", Room: "general", Pos: "3:17"}},
		{"read without pos", `{"type":"read","target":"bob"}`, true, Frame{}},
		{"edit", `{"type":"edit","id":"01936c4e-8a3b-7cde-8f00-0123456789ab","content":"fixed","client_id":"e"}`, false,
			Frame{Type: "edit", ID: "01936c4e-8a3b-7cde-8f00-0123456789ab", Content: "fixed", ClientID: "e"}},
		{"edit empty", `{"type":"edit","id":"01936c4e-8a3b-7cde-8f00-0123456789ab","content":"","client_id":"e"}`, true, Frame{}},
		{"delete", `{"type":"delete","id":"01936c4e-8a3b-7cde-8f00-0123456789ab","client_id":"d"}`, false,
			Frame{Type: "delete", ID: "01936c4e-8a3b-7cde-8f00-0123456789ab", ClientID: "d"}},
		{"delete braces id", `{"type":"delete","id":"{01936c4e-8a3b-7cde-8f00-0123456789ab}","client_id":"d"}`, true, Frame{}},
		{"case variant Pos", `{"type":"read","room":"a","Pos":"1:2","pos":"1:2"}`, true, Frame{}},
		// A member of another type: ambiguous where it would change the
		// destination, dropped elsewhere.
		{"lone surrogate", `{"type":"chat","room":"general","content":"lone \ud800 x","client_id":"1"}`, true, Frame{}},
		{"chat with a target", `{"type":"chat","room":"general","target":"bob","content":"hi","client_id":"1"}`, true, Frame{}},
		{"private with a room", `{"type":"private","room":"secret","target":"bob","content":"hi","client_id":"1"}`, true, Frame{}},
		{"join drops others' members", `{"type":"join","room":"a","target":"bob","content":"x","id":"01936c4e-8a3b-7cde-8f00-0123456789ab","pos":"1:2"}`, false, Frame{Type: "join", Room: "a"}},
		{"delete drops content", `{"type":"delete","id":"01936c4e-8a3b-7cde-8f00-0123456789ab","content":"x","room":"a","client_id":"d"}`, false,
			Frame{Type: "delete", ID: "01936c4e-8a3b-7cde-8f00-0123456789ab", ClientID: "d"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeFrame([]byte(tc.in), Limits{})
			if (err != nil) != tc.wantErr {
				t.Fatalf("DecodeFrame(%s) error = %v, want error %v", tc.in, err, tc.wantErr)
			}
			if got != tc.want {
				t.Fatalf("DecodeFrame(%s) = %+v, want %+v", tc.in, got, tc.want)
			}
		})
	}
}

// A refused frame's error names its client_id whatever made it invalid, so
// a client knows which pending send failed.
func TestDecodeFrameErrorNamesTheSend(t *testing.T) {
	for _, tc := range []struct{ in, msg string }{
		{`{"type":"chat","room":"general","content":"lone \ud800 x","client_id":"m18"}`, `member "content" is not valid text`},
		{`{"type":"private","target":"bob","content":"x","content":"y","client_id":"m18"}`, "duplicate member content"},
		{`{"type":"chat","room":"general","target":"bob","content":"x","client_id":"m18"}`, "no target"},
	} {
		_, err := DecodeFrame([]byte(tc.in), Limits{})
		var fe *FrameError
		if !errors.As(err, &fe) || fe.ClientID != "m18" || fe.Code != CodeInvalidMessage || !strings.Contains(fe.Message, tc.msg) {
			t.Errorf("DecodeFrame(%s) = %#v, want invalid_message for m18 saying %q", tc.in, err, tc.msg)
		}
	}
}

func FuzzDecodeFrame(f *testing.F) {
	for _, s := range []string{
		`{"type":"join","room":"general","since":"1:2"}`,
		`{"type":"chat","room":"general","content":"hi","client_id":"x"}`,
		`{"type":"private","target":"bob","content":"hi","client_id":"x"}`,
		`{"type":"leave","room":"r"}`, `[]`, `null`, `{"type":7}`, "{\"content\":\"\xff\"}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := DecodeFrame(b, Limits{})
		if err != nil {
			if _, ok := err.(*FrameError); !ok {
				t.Fatalf("DecodeFrame error %T, want *FrameError", err)
			}
			return
		}
		// An accepted frame is well-formed by every rule the edge relies on.
		switch fr.Type {
		case TypeJoin, TypeLeave, TypeChat:
			if !ValidRoom(fr.Room) {
				t.Fatalf("accepted room %q", fr.Room)
			}
		case TypePrivate:
			if !ValidUsername(fr.Target) {
				t.Fatalf("accepted target %q", fr.Target)
			}
		default:
			t.Fatalf("accepted type %q", fr.Type)
		}
		if fr.Type == TypeChat || fr.Type == TypePrivate {
			n := utf8.RuneCountInString(fr.Content)
			if n == 0 || n > MaxContentChars || !utf8.ValidString(fr.Content) || fr.ClientID == "" {
				t.Fatalf("accepted content of %d chars / client_id %q", n, fr.ClientID)
			}
		}
		if _, err := json.Marshal(fr); err != nil {
			t.Fatal(err)
		}
	})
}

// DecodeObject refuses case variants of a struct's names, tagged or not.
func TestDecodeObjectCaseVariants(t *testing.T) {
	var v struct {
		Room string `json:"room"`
		Note string
	}
	for _, b := range []string{`{"ROOM":"a"}`, `{"note":"b"}`, `{"room":"a","room":"b"}`, `null`, `[]`, `{"room":"a"} {}`} {
		if err := DecodeObject([]byte(b), &v); err == nil {
			t.Errorf("DecodeObject(%s) accepted", b)
		}
	}
	if err := DecodeObject([]byte(`{"room":"a","Note":"b","other":1}`), &v); err != nil || v.Room != "a" || v.Note != "b" {
		t.Errorf("DecodeObject of a valid object: %+v, %v", v, err)
	}
}
