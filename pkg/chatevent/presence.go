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

// Topic chat.deliveries carries private messages to the edges that hold
// their sender or target:
//
//	key:   the edge id; an edge reads only the partition its id hashes to
//	       (murmur2, as every producer) and skips records of other edges.
//	value: the private Event JSON with "pos" set to its chat.direct position.
const TopicDeliveries = "chat.deliveries"
