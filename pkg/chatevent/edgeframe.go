package chatevent

import "encoding/json"

// Frames only the edge sends (besides the events themselves). Each type's
// Encode sets Type and returns the frame as sent in a WebSocket text frame;
// the golden files in testdata hold their exact bytes.

// WelcomeFrame is the first frame of every connection.
type WelcomeFrame struct {
	Type     string `json:"type"` // TypeWelcome
	Username string `json:"username"`
}

// Encode returns the frame's JSON.
func (f WelcomeFrame) Encode() []byte { f.Type = TypeWelcome; return mustMarshal(f) }

// JoinedFrame answers a join. Recovered is set only when the join had a
// since: true when the missed events follow, false when the log no longer
// holds them.
type JoinedFrame struct {
	Type      string `json:"type"` // TypeJoined
	Room      string `json:"room"`
	Recovered *bool  `json:"recovered,omitempty"`
}

// Encode returns the frame's JSON.
func (f JoinedFrame) Encode() []byte { f.Type = TypeJoined; return mustMarshal(f) }

// LeftFrame answers a leave.
//
// Its members are in the order "room", "type": the edge used to encode it
// from a map, whose keys encoding/json sorts; the order is kept so the bytes
// on the wire stay the same.
type LeftFrame struct {
	Room string `json:"room"`
	Type string `json:"type"` // TypeLeft
}

// Encode returns the frame's JSON.
func (f LeftFrame) Encode() []byte { f.Type = TypeLeft; return mustMarshal(f) }

// AckFrame acknowledges a chat or private frame after the broker
// acknowledged its durable write. ID is the stored event's id.
type AckFrame struct {
	Type     string `json:"type"` // TypeAck
	ClientID string `json:"client_id"`
	ID       string `json:"id"`
}

// Encode returns the frame's JSON.
func (f AckFrame) Encode() []byte { f.Type = TypeAck; return mustMarshal(f) }

// ErrorFrame reports a refused or failed frame. Code is one of the Code*
// constants; ClientID echoes the frame's client_id when it had one.
type ErrorFrame struct {
	Type     string `json:"type"` // TypeError
	Code     string `json:"code"`
	Message  string `json:"message"`
	ClientID string `json:"client_id,omitempty"`
}

// Encode returns the frame's JSON.
func (f ErrorFrame) Encode() []byte { f.Type = TypeError; return mustMarshal(f) }

// mustMarshal encodes one of the fixed frame structs above, which always
// encode (strings and a *bool only).
func mustMarshal(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic("chatevent: " + err.Error())
	}
	return b
}

// TypingFrame says Username is typing in Room, or to the receiving user
// (Target is then the receiver). Clients show it for TypingTTL unless
// another one follows.
type TypingFrame struct {
	Type     string `json:"type"` // TypeTyping
	Room     string `json:"room,omitempty"`
	Target   string `json:"target,omitempty"`
	Username string `json:"username"`
}

// Encode returns the frame's JSON.
func (f TypingFrame) Encode() []byte { f.Type = TypeTyping; return mustMarshal(f) }

// MemberFrame reports a change of Username's membership of Room: Action is
// one of the Action* constants, By who made it.
type MemberFrame struct {
	Type     string `json:"type"` // TypeMember
	Room     string `json:"room"`
	Username string `json:"username"`
	Action   string `json:"action"`
	By       string `json:"by,omitempty"`
}

// Encode returns the frame's JSON.
func (f MemberFrame) Encode() []byte { f.Type = TypeMember; return mustMarshal(f) }
