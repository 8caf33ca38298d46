package edge

import (
	"runtime"
	"sync"
	"sync/atomic"

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

// deliverDirect fans a fetched batch of private messages out to the local
// connections of their senders and targets. It never blocks.
func (h *hub) deliverDirect(ds []*delivery) {
	for len(ds) > 0 {
		n := min(len(ds), fanoutChunk)
		h.deliverDirectChunk(ds[:n])
		ds = ds[n:]
	}
}

func (h *hub) deliverDirectChunk(ds []*delivery) {
	touched := getTouched()
	h.mu.RLock()
	for _, d := range ds {
		for c := range h.users[d.ev.Username] {
			if c.push(d.frame, d.ev.Type) {
				*touched = append(*touched, c)
			}
		}
		if d.ev.Target != d.ev.Username {
			for c := range h.users[d.ev.Target] {
				if c.push(d.frame, d.ev.Type) {
					*touched = append(*touched, c)
				}
			}
		}
	}
	h.mu.RUnlock()
	flushTouched(touched)
}

// fanoutChunk is how many events of a fetched batch are queued before the
// touched connections are written: a big batch for one connection (a burst
// of DMs) goes out in pieces well below the send queue's bound, so only a
// client that really stops reading overflows it.
const fanoutChunk = 64

// touchedPool recycles the lists of connections a fan-out queued frames to.
var touchedPool = sync.Pool{New: func() any { s := make([]*conn, 0, 256); return &s }}

func getTouched() *[]*conn { return touchedPool.Get().(*[]*conn) }

// flushTouched writes out what a fan-out queued for every connection in
// touched, and recycles the list. Connections nobody is writing are
// flushed by a few flushers (this goroutine and up to GOMAXPROCS-1 helpers),
// not by one goroutine each.
func flushTouched(touched *[]*conn) {
	list := (*touched)[:0]
	for _, c := range *touched {
		if c.takeFlush() {
			list = append(list, c)
		}
	}
	flushAll(list)
	clear(*touched)
	*touched = (*touched)[:0]
	touchedPool.Put(touched)
}

// flushChunk is the fewest connections worth handing to another flusher.
const flushChunk = 64

// flushAll flushes conns (each with its write token held), splitting the
// list among up to GOMAXPROCS goroutines.
func flushAll(conns []*conn) {
	parts := min(runtime.GOMAXPROCS(0), (len(conns)+flushChunk-1)/flushChunk)
	if parts <= 1 {
		for _, c := range conns {
			c.flushOut()
		}
		return
	}
	var wg sync.WaitGroup
	per := (len(conns) + parts - 1) / parts
	for i := per; i < len(conns); i += per {
		part := conns[i:min(i+per, len(conns))]
		wg.Go(func() {
			for _, c := range part {
				c.flushOut()
			}
		})
	}
	for _, c := range conns[:per] {
		c.flushOut()
	}
	wg.Wait()
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

// recipients counts the local subscriptions of room.
func (h *hub) recipients(room string) int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if room == "" {
		return len(h.conns)
	}
	return len(h.rooms[room])
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

// connsInSlot appends to out the open connections whose sequence number is
// slot modulo slots.
func (h *hub) connsInSlot(out []*conn, slot, slots uint64) []*conn {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for c := range h.conns {
		if c.seq%slots == slot {
			out = append(out, c)
		}
	}
	return out
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

// deliver fans a fetched batch of room events out: each to its room's
// subscriptions, or, for a system event without a room, to every
// connection. Every frame is queued before any writer is woken, so a
// connection that gets several events from the batch writes them with one
// system call. It never blocks.
func (h *hub) deliver(ds []*delivery) {
	for len(ds) > 0 {
		n := min(len(ds), fanoutChunk)
		h.deliverChunk(ds[:n])
		ds = ds[n:]
	}
}

func (h *hub) deliverChunk(ds []*delivery) {
	touched := getTouched()
	h.mu.RLock()
	for _, d := range ds {
		if d.ev.Room == "" {
			for c := range h.conns {
				if c.push(d.frame, d.ev.Type) {
					*touched = append(*touched, c)
				}
			}
			continue
		}
		for s := range h.rooms[d.ev.Room] {
			if s.offer(d) {
				*touched = append(*touched, s.c)
			}
		}
	}
	h.mu.RUnlock()
	flushTouched(touched)
}

// maxPending bounds the live events a subscription buffers while it replays.
const maxPending = 10000

// sub is one connection's membership of one room.
type sub struct {
	c    *conn
	room string

	// revoked: the member lost access (chat.acl); the hub no longer holds
	// the subscription and the reader drops it from c.rooms.
	revoked atomic.Bool

	mu        sync.Mutex
	replaying bool        // live deliveries are buffered in pending
	pending   []*delivery // live deliveries that arrived during the replay
	last      int64       // offset of the last event delivered; -1 none
}

// offer queues a live event (push: the caller flushes s.c when it reports
// true), or buffers it while the subscription replays.
func (s *sub) offer(d *delivery) (flush bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.replaying {
		if len(s.pending) >= maxPending {
			s.c.kill(CloseSlowClient, "too far behind while resuming")
			return false
		}
		s.pending = append(s.pending, d)
		return false
	}
	if d.pos.Offset <= s.last {
		return false
	}
	s.last = d.pos.Offset
	return s.c.push(d.frame, d.ev.Type)
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
