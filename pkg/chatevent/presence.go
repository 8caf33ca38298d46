package chatevent

import "encoding/json"

// Topic chat.presence carries what edges know about who is connected:
//
//	key:   the username for connect, disconnect, join and leave (a user's
//	       presence events stay in order); the edge id for heartbeats.
//	value: Presence JSON.
//
// Every router instance reads all of it and rebuilds its tables from it.
const TopicPresence = "chat.presence"

// Presence types.
const (
	PresenceConnect    = "connect"    // Connections: the user's connections on the edge now (≥ 1)
	PresenceDisconnect = "disconnect" // the user has no connection on the edge any more (after the grace period)
	PresenceJoin       = "join"       // the user joined Room on the edge
	PresenceLeave      = "leave"      // the user left Room on the edge (or closed the last connection in it)
	PresenceHeartbeat  = "heartbeat"  // the edge is alive
)

// Presence is one record of chat.presence.
type Presence struct {
	Type        string `json:"type"`
	Edge        string `json:"edge"`
	User        string `json:"user,omitempty"`
	Room        string `json:"room,omitempty"`
	Connections int    `json:"connections,omitempty"`
	Timestamp   string `json:"timestamp"`
}

// Encode returns the record value.
func (p *Presence) Encode() ([]byte, error) { return json.Marshal(p) }

// Key returns the record key: the edge id for a heartbeat, the username
// otherwise.
func (p *Presence) Key() string {
	if p.Type == PresenceHeartbeat {
		return p.Edge
	}
	return p.User
}

// DecodePresence parses a record value. It fails only when the value is not
// JSON of this shape: a reader decides what to do with types and fields it
// does not know.
func DecodePresence(b []byte) (Presence, error) {
	var p Presence
	err := json.Unmarshal(b, &p)
	return p, err
}
