package chatevent

import (
	"encoding/json"
	"fmt"
)

// Topic chat.deliveries carries the events of chat.direct (private
// messages, their edits and deletes, read positions) to the edges that hold
// their sender or target:
//
//	key:     the edge id; an edge reads only the partition its id hashes to
//	         (murmur2, as every producer) and skips records of other edges.
//	value:   EncodeDelivery: the Event JSON with "pos" set to its
//	         chat.direct position (a read keeps its own pos: the position
//	         read). The edge sends the value to its clients as it is: it is
//	         the "private" (or "edit", "delete", "read") frame.
//	headers: as on chat.rooms (the router continues the sender's trace).
const TopicDeliveries = "chat.deliveries"

// EncodeDelivery returns the chat.deliveries record value of private
// message ev, read from chat.direct at pos.
func EncodeDelivery(ev Event, pos Pos) ([]byte, error) {
	if ev.Type != TypeRead {
		ev.Pos = pos.String()
	}
	return json.Marshal(&ev)
}

// DecodeDelivery parses a chat.deliveries record value: a valid private
// event with a valid pos. Errors wrap ErrInvalidEvent.
func DecodeDelivery(b []byte) (Event, Pos, error) {
	var ev Event
	if err := json.Unmarshal(b, &ev); err != nil {
		return Event{}, Pos{}, fmt.Errorf("%w: %v", ErrInvalidEvent, err)
	}
	if err := ev.Validate(); err != nil {
		return Event{}, Pos{}, err
	}
	switch ev.Type {
	case TypePrivate, TypeEdit, TypeDelete, TypeRead:
	default:
		return Event{}, Pos{}, fmt.Errorf("%w: delivery of type %q", ErrInvalidEvent, ev.Type)
	}
	pos, err := ParsePos(ev.Pos)
	if err != nil {
		return Event{}, Pos{}, fmt.Errorf("%w: %v", ErrInvalidEvent, err)
	}
	return ev, pos, nil
}
