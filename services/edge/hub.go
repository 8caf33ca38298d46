package edge

import (
	"sync"

	"github.com/chatsys/chat/pkg/chatevent"
)

// hub maps rooms to the local subscriptions that joined them. Deliveries
// are fanned out under a read lock; each subscription filters by offset so a
// resumed join never shows an event twice.
type hub struct {
	mu    sync.RWMutex
	rooms map[string]map[*sub]struct{}
	conns map[*conn]struct{}
	users map[string]map[*conn]struct{} // for private messages
}

func newHub() *hub {
	return &hub{rooms: map[string]map[*sub]struct{}{}, conns: map[*conn]struct{}{}, users: map[string]map[*conn]struct{}{}}
}

func (h *hub) addConn(c *conn) {
	h.mu.Lock()
	h.conns[c] = struct{}{}
	m := h.users[c.id.Username]
	if m == nil {
		m = map[*conn]struct{}{}
		h.users[c.id.Username] = m
	}
	m[c] = struct{}{}
	h.mu.Unlock()
}

func (h *hub) removeConn(c *conn) {
	h.mu.Lock()
	delete(h.conns, c)
	if m := h.users[c.id.Username]; m != nil {
		delete(m, c)
		if len(m) == 0 {
			delete(h.users, c.id.Username)
		}
	}
	h.mu.Unlock()
}

// deliverDirect sends a private message to the local connections of its
// sender and its target. It never blocks.
func (h *hub) deliverDirect(d *delivery) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for c := range h.users[d.ev.Username] {
		c.send(d.frame, d.ev.Type)
	}
	if d.ev.Target != d.ev.Username {
		for c := range h.users[d.ev.Target] {
			c.send(d.frame, d.ev.Type)
		}
	}
}

func (h *hub) addSub(s *sub) {
	h.mu.Lock()
	m := h.rooms[s.room]
	if m == nil {
		m = map[*sub]struct{}{}
		h.rooms[s.room] = m
	}
	m[s] = struct{}{}
	h.mu.Unlock()
}

func (h *hub) removeSub(s *sub) {
	h.mu.Lock()
	if m := h.rooms[s.room]; m != nil {
		delete(m, s)
		if len(m) == 0 {
			delete(h.rooms, s.room)
		}
	}
	h.mu.Unlock()
}

// serves reports whether a chat.rooms record with this key has a local
// recipient: a room with a subscription here, or a broadcast.
func (h *hub) serves(key []byte) bool {
	if string(key) == chatevent.BroadcastKey {
		return true
	}
	h.mu.RLock()
	_, ok := h.rooms[string(key)]
	h.mu.RUnlock()
	return ok
}

// snapshotConns returns the open connections.
func (h *hub) snapshotConns() []*conn {
	h.mu.RLock()
	defer h.mu.RUnlock()
	out := make([]*conn, 0, len(h.conns))
	for c := range h.conns {
		out = append(out, c)
	}
	return out
}

// deliver fans d out: to the room's subscriptions, or for a system event
// without a room to every connection. It never blocks.
func (h *hub) deliver(d *delivery) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if d.ev.Room == "" {
		for c := range h.conns {
			c.send(d.frame, d.ev.Type)
		}
		return
	}
	for s := range h.rooms[d.ev.Room] {
		s.offer(d)
	}
}

// maxPending bounds the live events a subscription buffers while it replays.
const maxPending = 10000

// sub is one connection's membership of one room.
type sub struct {
	c    *conn
	room string

	mu        sync.Mutex
	replaying bool        // live deliveries are buffered in pending
	pending   []*delivery // live deliveries that arrived during the replay
	last      int64       // offset of the last event delivered; -1 none
}

// offer delivers a live event, or buffers it while the subscription replays.
func (s *sub) offer(d *delivery) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.replaying {
		if len(s.pending) >= maxPending {
			s.c.kill(CloseSlowClient, "too far behind while resuming")
			return
		}
		s.pending = append(s.pending, d)
		return
	}
	if d.pos.Offset <= s.last {
		return
	}
	s.last = d.pos.Offset
	s.c.send(d.frame, d.ev.Type)
}

// takePending returns the buffered live events, or, when there are none,
// ends the replay so later events go straight to the connection.
func (s *sub) takePending() []*delivery {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.pending
	s.pending = nil
	if len(p) == 0 {
		s.replaying = false
	}
	return p
}
