package chatevent

// Topic chat.rooms carries every room event: chat messages, system
// announcements and (later) join/leave notices.
//
// Record format:
//
//	key:     RoomKey(room) — the room name, or BroadcastKey for a system
//	         event addressed to everyone; all events of one room therefore
//	         live in one partition, in order.
//	value:   Event.Encode(): the event JSON without "pos".
//	headers: HeaderSchema = SchemaVersion as decimal text; W3C trace context
//	         ("traceparent", "tracestate") when the producer traced the write.
//
// Partitioning uses the murmur2 hash of the key (the Java client's default),
// so any Kafka client computes the same partition for a room.
const TopicRooms = "chat.rooms"

// BroadcastKey is the key of a system event that is not addressed to one
// room. It cannot collide with a room name (room names never start with "_").
const BroadcastKey = "_all"

// RoomKey returns the Kafka key of a room's events.
func RoomKey(room string) string {
	if room == "" {
		return BroadcastKey
	}
	return room
}
