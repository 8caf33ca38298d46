package chatevent

import (
	"bytes"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	"github.com/google/uuid"
)

// Frame is a frame a client sends to the edge. Which fields are required
// depends on Type:
//
//	join    {room, since?}            since is a Pos string from a delivered event
//	leave   {room}
//	chat    {room, content, client_id}
//	private {target, content, client_id}
//	typing  {room} or {target}
//	read    {room, pos} or {target, pos}   pos of the last event read
//	edit    {id, content, client_id}        id of the author's message
//	delete  {id, client_id}
//
// A "username" in the frame is ignored: the username always comes from the
// token.
type Frame struct {
	Type     string `json:"type"`
	Room     string `json:"room,omitempty"`
	Target   string `json:"target,omitempty"`
	Content  string `json:"content,omitempty"`
	ClientID string `json:"client_id,omitempty"`
	Since    string `json:"since,omitempty"`
	ID       string `json:"id,omitempty"`
	Pos      string `json:"pos,omitempty"`
}

// FrameError is a frame that was rejected. Code is the stable error code sent
// to the client; ClientID echoes the frame's client_id when one could be read.
type FrameError struct {
	Code     string
	Message  string
	ClientID string
}

func (e *FrameError) Error() string { return e.Code + ": " + e.Message }

// Error codes sent in {"type":"error"} frames. They are stable: clients
// branch on them.
const (
	CodeInvalidMessage = "invalid_message" // malformed or invalid frame; the connection stays open
	CodeTooLarge       = "too_large"       // never sent as an error frame: a frame above the read limit is closed with 1009 (the metrics' label)
	CodeRateLimited    = "rate_limited"    // per-user message rate exceeded; retry later
	CodeForbidden      = "forbidden"       // the user may not do this
	CodeUnavailable    = "unavailable"     // the log did not acknowledge the write; not acked, retry
	CodeTooManyRooms   = "too_many_rooms"  // the connection joined the maximum number of rooms
	CodeNotFound       = "not_found"       // edit/delete: no such message, or not one this user may change
	// CodeTooManyConnections answers a WebSocket handshake (HTTP 429) over
	// the per-user or per-address connection limit.
	CodeTooManyConnections = "too_many_connections"
)

// Limits bound what DecodeFrame accepts. The zero value means the package
// defaults (MaxContentChars).
type Limits struct {
	MaxContentChars int
}

func (l Limits) maxContent() int {
	if l.MaxContentChars > 0 {
		return l.MaxContentChars
	}
	return MaxContentChars
}

// frameNames are the member names DecodeFrame knows; a frame may carry
// other members (ignored, for forward compatibility) but no case variant of
// these.
var frameNames = []string{"type", "room", "target", "content", "client_id", "since", "username", "id", "pos"}

// decodeStrict decodes b into f with the JSON v2 semantics the contract
// needs: duplicate names, case variants of known names and invalid UTF-8
// are errors, where encoding/json would take the last value or fold case.
func decodeStrict(b []byte, f *Frame) error {
	// One pass: members the Frame does not name land in Unknown (usually
	// empty), where case variants of known names are looked for.
	w := frameWire{}
	if err := json.Unmarshal(b, &w, json.MatchCaseInsensitiveNames(false)); err != nil {
		return err
	}
	*f = w.Frame
	if len(w.Unknown) == 0 {
		return nil
	}
	dec := jsontext.NewDecoder(bytes.NewReader(w.Unknown))
	if _, err := dec.ReadToken(); err != nil { // {
		return err
	}
	for dec.PeekKind() == '"' {
		tok, err := dec.ReadToken()
		if err != nil {
			return err
		}
		if name := tok.String(); CaseVariant(name, frameNames) != "" {
			return fmt.Errorf("member %q: names are case-sensitive, want %q", name, CaseVariant(name, frameNames))
		}
		if err := dec.SkipValue(); err != nil {
			return err
		}
	}
	return nil
}

// frameWire is a Frame as decoded: the members it does not name are kept,
// in order, in Unknown.
type frameWire struct {
	Frame
	Unknown jsontext.Value `json:",embed"` // the embedded fallback

}

// DecodeFrame parses and validates one client frame. Every failure is a
// *FrameError with code CodeInvalidMessage; it never panics on any input.
func DecodeFrame(b []byte, lim Limits) (Frame, error) {
	invalid := func(clientID, format string, args ...any) (Frame, error) {
		return Frame{}, &FrameError{Code: CodeInvalidMessage, Message: fmt.Sprintf(format, args...), ClientID: clientID}
	}
	trimmed := bytes.TrimLeft(b, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return invalid("", "frame must be a JSON object")
	}
	var f Frame
	if err := decodeStrict(b, &f); err != nil {
		return invalid(salvageClientID(b), "frame is not valid: %s", JSONProblem(err))
	}
	if !utf8.ValidString(f.ClientID) || len(f.ClientID) > MaxClientIDBytes || strings.IndexByte(f.ClientID, 0) >= 0 {
		return invalid("", "client_id must be at most %d bytes of UTF-8 text without NUL", MaxClientIDBytes)
	}
	cid := f.ClientID
	switch f.Type {
	case TypeJoin:
		if err := checkRoom(f.Room); err != "" {
			return invalid(cid, "%s", err)
		}
		if f.Since != "" {
			if _, err := ParsePos(f.Since); err != nil {
				return invalid(cid, "since: %v", err)
			}
		}
	case TypeLeave:
		if err := checkRoom(f.Room); err != "" {
			return invalid(cid, "%s", err)
		}
	case TypeChat:
		if f.Target != "" {
			// Ambiguous: a message to the room, or to the user?
			return invalid(cid, "a chat frame has a room and no target (a private message is type private)")
		}
		if err := checkRoom(f.Room); err != "" {
			return invalid(cid, "%s", err)
		}
		if err := checkContent(f.Content, lim.maxContent()); err != "" {
			return invalid(cid, "%s", err)
		}
		if f.ClientID == "" {
			return invalid(cid, "client_id is required")
		}
	case TypePrivate:
		if f.Room != "" {
			return invalid(cid, "a private frame has a target and no room (a room message is type chat)")
		}
		if f.Target == "" {
			return invalid(cid, "target is required")
		}
		if !ValidUsername(f.Target) {
			return invalid(cid, "target %q is not a valid username", f.Target)
		}
		if err := checkContent(f.Content, lim.maxContent()); err != "" {
			return invalid(cid, "%s", err)
		}
		if f.ClientID == "" {
			return invalid(cid, "client_id is required")
		}
	case TypeTyping, TypeRead:
		if (f.Room == "") == (f.Target == "") {
			return invalid(cid, "%s needs exactly one of room and target", f.Type)
		}
		if f.Room != "" {
			if err := checkRoom(f.Room); err != "" {
				return invalid(cid, "%s", err)
			}
		} else if !ValidUsername(f.Target) {
			return invalid(cid, "target %q is not a valid username", f.Target)
		}
		if f.Type == TypeRead {
			if f.Pos == "" {
				return invalid(cid, "pos is required")
			}
			if _, err := ParsePos(f.Pos); err != nil {
				return invalid(cid, "pos: %v", err)
			}
		}
	case TypeEdit, TypeDelete:
		if f.ID == "" {
			return invalid(cid, "id is required")
		}
		u, err := uuid.Parse(f.ID)
		if err != nil || len(f.ID) != 36 {
			return invalid(cid, "id %q is not a message id", f.ID)
		}
		f.ID = u.String() // canonical (lower case), as events carry it

		if f.Type == TypeEdit {
			if err := checkContent(f.Content, lim.maxContent()); err != "" {
				return invalid(cid, "%s", err)
			}
		}
		if f.ClientID == "" {
			return invalid(cid, "client_id is required")
		}
	case "":
		return invalid(cid, "type is required")
	default:
		return invalid(cid, "unknown type %q", f.Type)
	}
	return f.only(), nil
}

// only returns the frame with just the members its type takes: a member
// that belongs to another type is ignored like an unknown one, so nothing
// after decoding can read meaning into it.
func (f Frame) only() Frame {
	out := Frame{Type: f.Type, ClientID: f.ClientID}
	switch f.Type {
	case TypeJoin:
		out.Room, out.Since = f.Room, f.Since
	case TypeLeave:
		out.Room = f.Room
	case TypeChat:
		out.Room, out.Content = f.Room, f.Content
	case TypePrivate:
		out.Target, out.Content = f.Target, f.Content
	case TypeTyping:
		out.Room, out.Target = f.Room, f.Target
	case TypeRead:
		out.Room, out.Target, out.Pos = f.Room, f.Target, f.Pos
	case TypeEdit:
		out.ID, out.Content = f.ID, f.Content
	case TypeDelete:
		out.ID = f.ID
	}
	return out
}

func checkRoom(room string) string {
	if room == "" {
		return "room is required"
	}
	if !ValidRoom(room) {
		return fmt.Sprintf("room %q is not valid: want [a-z0-9][a-z0-9_-]{0,63}", room)
	}
	return ""
}

func checkContent(content string, max int) string {
	n := utf8.RuneCountInString(content)
	switch {
	case n == 0:
		return "content must not be empty"
	case n > max:
		return fmt.Sprintf("content is %d characters, the limit is %d", n, max)
	case !utf8.ValidString(content):
		return "content is not valid UTF-8"
	case strings.IndexByte(content, 0) >= 0:
		return "content must not contain NUL (U+0000)"
	}
	return ""
}

// salvageClientID reads a string client_id from a frame that failed to decode
// as a whole (say, a mistyped other field), so the error can name it.
func salvageClientID(b []byte) string {
	var probe struct {
		ClientID jsontext.Value `json:"client_id"`
	}
	// Lenient where the frame was refused, so that a bad member elsewhere
	// (a duplicate, a lone surrogate in content) still names its send.
	if json.Unmarshal(b, &probe, jsontext.AllowDuplicateNames(true), jsontext.AllowInvalidUTF8(true)) != nil {
		return ""
	}
	var s string
	if json.Unmarshal(probe.ClientID, &s) != nil || len(s) > MaxClientIDBytes {
		return ""
	}
	return s
}
