// Package chatevent is the wire contract of the chat: the events stored in the
// log and sent to clients, the frames clients send and the ones only the edge
// sends, the WebSocket close codes, their validation limits, topic names,
// Kafka key rules and the records of chat.presence and chat.deliveries.
//
// A change to anything in this package is a change to the wire protocol; the
// golden files in testdata make such changes visible in review.
package chatevent

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	jsonv2 "github.com/go-json-experiment/json"
	jsonv1 "github.com/go-json-experiment/json/v1"
	"github.com/google/uuid"
)

// SchemaVersion is the version of the event encoding. It travels in the
// Kafka record header HeaderSchema, never in the JSON body.
const SchemaVersion = 1

// HeaderSchema is the Kafka record header that carries SchemaVersion.
const HeaderSchema = "chat-schema"

// Event types stored in the log and sent to clients.
const (
	TypeChat    = "chat"    // a room message from a user
	TypePrivate = "private" // a direct message from a user to a target user
	TypeSystem  = "system"  // an announcement by an admin, to one room or to everyone
	TypeJoin    = "join"
	TypeLeave   = "leave"
	// TypeEdit replaces the content of message ID (a chat or private event)
	// by its author; it lives in the message's conversation (same key).
	TypeEdit = "edit"
	// TypeDelete removes message ID (by its author, or in a room by a
	// moderator); it lives in the message's conversation (same key).
	TypeDelete = "delete"
	// TypeRead records how far Username has read a conversation: Pos is the
	// position of the last event read (for reads only, Pos is part of the
	// stored event). It lives in chat.direct (see ReadKey).
	TypeRead = "read"
)

// Frame types only the edge sends.
const (
	TypeWelcome = "welcome"
	TypeJoined  = "joined"
	TypeLeft    = "left"
	TypeAck     = "ack"
	TypeError   = "error"
	// TypeTyping says a user is typing in a room or to a target; it travels
	// through chat.typing and is never stored (see TypingFrame).
	TypeTyping = "typing"
	// TypeMember reports a membership change of a room (see MemberFrame).
	TypeMember = "member"
)

// TimeLayout is the timestamp format on the wire: RFC 3339, UTC, milliseconds.
const TimeLayout = "2006-01-02T15:04:05.000Z"

// Limits on user input. They are the defaults of the edge's flags.
const (
	MaxContentChars  = 4000 // characters (Unicode code points) per message
	MaxClientIDBytes = 128
)

var (
	roomRE     = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)
	usernameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)
)

// ValidRoom reports whether s is a well-formed room name:
// [a-z0-9][a-z0-9_-]{0,63}.
func ValidRoom(s string) bool { return roomRE.MatchString(s) }

// ValidUsername reports whether s is a well-formed username:
// [A-Za-z0-9][A-Za-z0-9_.-]{0,63}. Usernames come from the token's sub claim.
func ValidUsername(s string) bool { return usernameRE.MatchString(s) }

// Event is one stored event. Its JSON encoding (without Pos) is the Kafka
// record value; clients receive it with Pos set to its log position.
type Event struct {
	ID        string `json:"id"`
	Type      string `json:"type"`
	Room      string `json:"room,omitempty"`
	Target    string `json:"target,omitempty"`
	Username  string `json:"username"`
	Content   string `json:"content,omitempty"`
	Timestamp string `json:"timestamp"`
	ClientID  string `json:"client_id,omitempty"`
	// EditedAt is set on an edit event (when it was made) and on a history
	// row whose content an edit replaced.
	EditedAt string `json:"edited_at,omitempty"`
	// Pos is the log position "<partition>:<offset>". It is empty in the
	// log itself and set when the event is delivered or read from history;
	// a read event is the exception: its Pos is the position read up to,
	// stored with it.
	Pos string `json:"pos,omitempty"`
}

// NewID returns a new time-ordered event id (UUIDv7).
func NewID() string {
	id, err := uuid.NewV7()
	if err != nil {
		// NewV7 fails only when the system random source fails.
		panic(fmt.Sprintf("chatevent: uuid: %v", err))
	}
	return id.String()
}

// FormatTime returns t as a wire timestamp (UTC, milliseconds).
func FormatTime(t time.Time) string { return t.UTC().Format(TimeLayout) }

// Time parses the event's timestamp.
func (e *Event) Time() (time.Time, error) { return time.Parse(time.RFC3339Nano, e.Timestamp) }

// Encode returns the event's JSON encoding as stored in the log (Pos is
// dropped: the position is assigned by the log).
func (e *Event) Encode() ([]byte, error) {
	c := *e
	if c.Type != TypeRead {
		c.Pos = ""
	}
	return json.Marshal(&c)
}

// ErrInvalidEvent is wrapped by Decode and Validate errors.
var ErrInvalidEvent = errors.New("invalid event")

// Decode parses a log record value into an event and validates it.
func Decode(b []byte) (Event, error) {
	var e Event
	if err := jsonv2.Unmarshal(b, &e, v1Semantics); err != nil {
		return Event{}, fmt.Errorf("%w: %v", ErrInvalidEvent, err)
	}
	if err := e.Validate(); err != nil {
		return Event{}, err
	}
	return e, nil
}

// v1Semantics decodes stored events as encoding/json does (case-insensitive
// names, the last of duplicate names, invalid UTF-8 replaced): records
// written by any past version keep decoding the same, at a third of
// encoding/json's cost (the edge and history decode every record).
var v1Semantics = jsonv1.DefaultOptionsV1()

// Validate checks the server-stamped fields of a stored event.
func (e *Event) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidEvent, fmt.Sprintf(format, args...))
	}
	if _, err := uuid.Parse(e.ID); err != nil {
		return bad("id %q is not a UUID", e.ID)
	}
	if _, err := e.Time(); err != nil {
		return bad("timestamp %q is not RFC 3339", e.Timestamp)
	}
	switch e.Type {
	case TypeChat, TypeJoin, TypeLeave:
		if !ValidRoom(e.Room) {
			return bad("room %q is not a valid room name", e.Room)
		}
		if e.Target != "" {
			return bad("a %s event has a room and no target", e.Type)
		}
	case TypePrivate:
		if !ValidUsername(e.Target) {
			return bad("target %q is not a valid username", e.Target)
		}
		if e.Room != "" {
			return bad("a private event has a target and no room")
		}
	case TypeEdit, TypeDelete, TypeRead:
		if (e.Room == "") == (e.Target == "") {
			return bad("%s needs exactly one of room and target", e.Type)
		}
		if e.Room != "" && !ValidRoom(e.Room) {
			return bad("room %q is not a valid room name", e.Room)
		}
		if e.Target != "" && !ValidUsername(e.Target) {
			return bad("target %q is not a valid username", e.Target)
		}
		if e.Type == TypeRead {
			if _, err := ParsePos(e.Pos); err != nil {
				return bad("read: %v", err)
			}
		}
		if e.Type == TypeEdit {
			if _, err := time.Parse(time.RFC3339Nano, e.EditedAt); err != nil {
				return bad("edited_at %q is not RFC 3339", e.EditedAt)
			}
		}
	case TypeSystem:
		if e.Room != "" && !ValidRoom(e.Room) {
			return bad("room %q is not a valid room name", e.Room)
		}
	default:
		return bad("unknown type %q", e.Type)
	}
	if e.Type != TypeSystem && !ValidUsername(e.Username) {
		return bad("username %q is not valid", e.Username)
	}
	if !utf8.ValidString(e.Content) || !utf8.ValidString(e.ClientID) {
		return bad("content or client_id is not valid UTF-8")
	}
	if strings.IndexByte(e.Content, 0) >= 0 || strings.IndexByte(e.ClientID, 0) >= 0 {
		// PostgreSQL text cannot hold U+0000: such an event could never be stored.
		return bad("content or client_id contains NUL (U+0000)")
	}
	return nil
}

// Pos is a log position: partition and offset.
type Pos struct {
	Partition int
	Offset    int64
}

// String returns the wire form "<partition>:<offset>".
func (p Pos) String() string {
	return strconv.Itoa(p.Partition) + ":" + strconv.FormatInt(p.Offset, 10)
}

// ParsePos parses "<partition>:<offset>" with both parts non-negative.
func ParsePos(s string) (Pos, error) {
	ps, os, ok := strings.Cut(s, ":")
	if !ok {
		return Pos{}, fmt.Errorf("position %q: want <partition>:<offset>", s)
	}
	p, err1 := strconv.Atoi(ps)
	o, err2 := strconv.ParseInt(os, 10, 64)
	// Canonical decimal only, as positions are written: no sign, no
	// leading zero ("+7:1" and "07:0001" are not positions).
	canonical := strconv.Itoa(p) == ps && strconv.FormatInt(o, 10) == os
	if err1 != nil || err2 != nil || !canonical || p < 0 || o < 0 || p > 1<<20 {
		return Pos{}, fmt.Errorf("position %q: want <partition>:<offset>", s)
	}
	return Pos{Partition: p, Offset: o}, nil
}
