package chatevent

// Topic chat.direct carries private messages (type "private"), their edits
// and deletes (keyed like the message), and read positions (type "read"):
// a DM read is keyed like the conversation, a room read by ReadKey.
//
// Record format:
//
//	key:     DMKey(username, target) — "dm:<a>:<b>" with a < b, so both
//	         directions of one conversation share a partition and an order.
//	value:   Event.Encode().
//	headers: as on chat.rooms.
const TopicDirect = "chat.direct"

// DMKey returns the conversation key of two users, the same either way round.
func DMKey(a, b string) string {
	if b < a {
		a, b = b, a
	}
	return "dm:" + a + ":" + b
}

// ReadKey is the chat.direct key of a room read position: the reader's, so
// the router delivers it to the reader's connections.
func ReadKey(username string) string { return "read:" + username }

// Conversation returns the conversation an event belongs to: "room:<name>"
// for room events, DMKey for private messages (and their edits, deletes
// and reads), "" for a broadcast.
func Conversation(e *Event) string {
	switch {
	case e.Target != "" && e.Type != TypeSystem:
		return DMKey(e.Username, e.Target)
	case e.Room != "":
		return "room:" + e.Room
	}
	return ""
}

// Blocks answers whether blocker has blocked blocked (see ACL).
type Blocks interface {
	Blocked(blocker, blocked string) bool
}

// MayMessage is the policy deciding who may send a private message (or a
// typing notice) to whom, enforced by the edge: a signed-in user may write
// to any well-formed username (to themselves too: a note to self) that has
// not blocked them. blocks may be nil (nobody blocked anyone).
func MayMessage(from, to string, blocks Blocks) bool {
	if !ValidUsername(from) || !ValidUsername(to) {
		return false
	}
	return blocks == nil || !blocks.Blocked(to, from)
}
