package chatevent

import (
	"encoding/json"
	"fmt"
)

// Topic chat.deliveries carries private messages to the edges that hold
// their sender or target:
//
//	key:     the edge id; an edge reads only the partition its id hashes to
//	         (murmur2, as every producer) and skips records of other edges.
//	value:   EncodeDelivery: the private Event JSON with "pos" set to its
//	         chat.direct position. The edge sends the value to its clients
//	         as it is: it is the "private" frame.
//	headers: as on chat.rooms (the router continues the sender's trace).
const TopicDeliveries = "chat.deliveries"

// EncodeDelivery returns the chat.deliveries record value of private
// message ev, read from chat.direct at pos.
func EncodeDelivery(ev Event, pos Pos) ([]byte, error) {
	ev.Pos = pos.String()
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
	if ev.Type != TypePrivate {
		return Event{}, Pos{}, fmt.Errorf("%w: delivery of type %q, want %q", ErrInvalidEvent, ev.Type, TypePrivate)
	}
	pos, err := ParsePos(ev.Pos)
	if err != nil {
		return Event{}, Pos{}, fmt.Errorf("%w: %v", ErrInvalidEvent, err)
	}
	return ev, pos, nil
}
