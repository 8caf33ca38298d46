package chatevent

// Topic chat.direct carries private messages (type "private").
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

// Conversation returns the conversation an event belongs to: "room:<name>"
// for room events, DMKey for private messages, "" for a broadcast.
func Conversation(e *Event) string {
	switch {
	case e.Type == TypePrivate:
		return DMKey(e.Username, e.Target)
	case e.Room != "":
		return "room:" + e.Room
	}
	return ""
}

// MayMessage is the policy deciding who may send a private message to
// whom, enforced by the edge: any signed-in user may write to any other
// well-formed username (to themselves too: a note to self).
func MayMessage(from, to string) bool { return ValidUsername(from) && ValidUsername(to) }
