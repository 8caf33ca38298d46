package edge

import (
	"hash/maphash"
	"sync"
	"time"

	"github.com/chatsys/chat/pkg/chatevent"
)

// sends remembers recent sends by (username, client_id), so that a resend
// (a client retrying after a lost ack, an ambiguous unavailable, a
// reconnect) is answered with the first send's ack, same id, and delivered
// once:
//
//   - a resend while the first is still being appended waits for its outcome;
//   - a resend after it was acknowledged gets the same ack, nothing is appended;
//   - a resend after it failed appends the same event again (same id and
//     timestamp), so if the failed attempt had in fact landed, history keeps
//     one row and edges deliver the id once (see recentIDs).
//
// Sends this edge appended are remembered, and so are the events it reads
// from the log (the rooms it serves, live or while resuming a room, from
// the resume position itself on; the private messages routed to it), so a
// client that reconnects to another edge is also answered with the first
// ack there when that edge saw the message. Entries expire after the window (default 10
// minutes) or when the table is full, oldest first.
type sends struct {
	mu     sync.Mutex
	window time.Duration
	max    int
	m      map[sendKey]*sendState
	fifo   []queued // insertion order, for expiry; fifo[head:] are live
	head   int
	// orphans counts queue entries whose send was forgotten (refused
	// before its append): they are dropped when they outnumber the table,
	// so refused sends cannot grow the queue behind a fresh entry.
	orphans int
}

// queued is a send in the expiry queue: st is the state it was queued
// for (a forgotten key sent again has a new state, and its old entry must
// not expire the new one).
type queued struct {
	k  sendKey
	st *sendState
}

// maxRememberedSends bounds the table (about 400 bytes an entry live, map
// and queue included: 80 MB full).
const maxRememberedSends = 200_000

type sendKey struct{ user, clientID string }

type sendState struct {
	id      string
	fp      uint64           // fingerprint of what the send asked for
	ev      *chatevent.Event // while an attempt is pending or failed: what is appended (again); nil once acknowledged
	at      time.Time
	pending bool
	err     error // of the last attempt, when not pending
	waiters []func(id string, err error)
}

// sendAction says what handleFrame does with a chat or private frame.
type sendAction int

const (
	sendAppend   sendAction = iota // append ev, a new event
	sendRetry                      // append ev again: the last attempt failed (it may have landed), same id
	sendWait                       // the first attempt is in flight: its outcome answers this one too
	sendAcked                      // already acknowledged: answer with ev.ID
	sendConflict                   // the client_id was used for a different message: refuse this one
)

// fpSeed seeds the fingerprints of this process's sends table.
var fpSeed = maphash.MakeSeed()

// fingerprint identifies what a send asks for (its type, conversation and
// content; for an edit or delete, the message id in place of the
// conversation): a resend asks for the same, and a client_id reused for
// anything else is refused rather than answered with the first send's ack
// (which would drop the new message while acknowledging it).
func fingerprint(typ, room, target, content string) uint64 {
	var h maphash.Hash
	h.SetSeed(fpSeed)
	for _, f := range [...]string{typ, room, target, content} {
		h.WriteString(f)
		h.WriteByte(0) // none of them holds a NUL (the edge refuses it)
	}
	return h.Sum64()
}

// fingerprintOf is the fingerprint of an event read from the log.
func fingerprintOf(ev *chatevent.Event) uint64 {
	switch ev.Type {
	case chatevent.TypeEdit, chatevent.TypeDelete:
		return fingerprint(ev.Type, ev.ID, "", ev.Content)
	}
	return fingerprint(ev.Type, ev.Room, ev.Target, ev.Content)
}

func newSends(window time.Duration, max int) *sends {
	return &sends{window: window, max: max, m: map[sendKey]*sendState{}}
}

// expireLocked drops entries older than the window, and the oldest ones
// beyond max; pending entries are kept (their outcome is still awaited).
func (s *sends) expireLocked(now time.Time) {
expire:
	for n := 0; s.head < len(s.fifo) && n < 1024; n++ { // bounded work per call
		q := s.fifo[s.head]
		switch st := q.st; {
		case s.m[q.k] != st: // forgotten
			s.orphans--
		case !st.pending && now.Sub(st.at) < s.window && len(s.m) <= s.max:
			break expire
		case !st.pending:
			delete(s.m, q.k)
		default: // pending: keep, re-queue at the back
			s.fifo = append(s.fifo, q)
		}
		s.fifo[s.head] = queued{}
		s.head++
	}
	if s.orphans > len(s.m)+1024 {
		live := s.fifo[:0]
		for _, q := range s.fifo[s.head:] {
			if s.m[q.k] == q.st {
				live = append(live, q)
			}
		}
		clear(s.fifo[len(live):])
		s.fifo, s.head, s.orphans = live, 0, 0
		return
	}
	// Reclaim the expired prefix once it is most of the slice: each entry
	// is moved at most once per reclaim, so expiry costs O(1) amortised
	// (copying the whole queue on every expiry made each send O(table)).
	if s.head > 1024 && s.head*2 > len(s.fifo) {
		s.fifo = append(s.fifo[:0], s.fifo[s.head:]...)
		s.head = 0
	}
}

// begin looks a send up (fp its fingerprint). For sendAppend it returns
// the event to append (mk makes a new one), for sendRetry the event of the
// failed attempt; for sendWait it registers wait, called with the first
// attempt's outcome; for sendAcked and sendConflict it returns an event
// with only the first send's id set.
func (s *sends) begin(user, clientID string, fp uint64, mk func() chatevent.Event, wait func(id string, err error)) (chatevent.Event, sendAction) {
	now := time.Now()
	k := sendKey{user, clientID}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expireLocked(now)
	st := s.m[k]
	switch {
	case st == nil:
		ev := mk()
		st = &sendState{id: ev.ID, fp: fp, ev: &ev, at: now, pending: true}
		s.m[k] = st
		s.fifo = append(s.fifo, queued{k, st})
		return ev, sendAppend
	case st.fp != fp:
		return chatevent.Event{ID: st.id}, sendConflict
	case st.pending:
		st.waiters = append(st.waiters, wait)
		return *st.ev, sendWait
	case st.err == nil:
		return chatevent.Event{ID: st.id}, sendAcked
	default: // the last attempt failed: try the same event again
		st.pending, st.err = true, nil
		return *st.ev, sendRetry
	}
}

// finish records an attempt's outcome and answers the sends that waited.
func (s *sends) finish(user, clientID string, err error) {
	s.mu.Lock()
	st := s.m[sendKey{user, clientID}]
	if st == nil {
		s.mu.Unlock()
		return
	}
	st.pending, st.err = false, err
	if err == nil {
		st.ev = nil // only the id answers a resend now (most of an entry's memory)
	}
	st.at = time.Now()
	waiters := st.waiters
	st.waiters = nil
	id := st.id
	s.mu.Unlock()
	for _, w := range waiters {
		w(id, err)
	}
}

// forget ends a send that was never appended (refused before the append):
// sends that waited on it get err, and a later resend is a new send.
func (s *sends) forget(user, clientID string, err error) {
	s.finish(user, clientID, err)
	s.mu.Lock()
	if st := s.m[sendKey{user, clientID}]; st != nil && !st.pending {
		delete(s.m, sendKey{user, clientID}) // its queue entry is an orphan now
		s.orphans++
	}
	s.mu.Unlock()
}

// changeKey is the client_id under which an edit or delete of message id
// is remembered: a client_id reused for another message, or for a chat,
// is a different send.
func changeKey(typ, id, clientID string) string {
	return typ + "\x00" + id + "\x00" + clientID // a client_id holds no NUL
}

// seen records an event read from the log (its send was acknowledged by
// whichever edge appended it), unless this send is already known.
func (s *sends) seen(ev *chatevent.Event) {
	if ev.ClientID == "" {
		return
	}
	cid := ev.ClientID
	switch ev.Type {
	case chatevent.TypeEdit, chatevent.TypeDelete:
		cid = changeKey(ev.Type, ev.ID, cid)
	case chatevent.TypeChat, chatevent.TypePrivate:
	default:
		return
	}
	k := sendKey{ev.Username, cid}
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[k]; ok {
		return
	}
	s.expireLocked(now)
	st := &sendState{id: ev.ID, fp: fingerprintOf(ev), at: now}
	s.m[k] = st
	s.fifo = append(s.fifo, queued{k, st})
}

// recentIDs remembers the ids of the last events delivered from one
// partition, so an event appended twice (a retry after an ambiguous
// failure: same id) is delivered once. A retry goes to the same partition
// as its first attempt (same key), so a per-partition window suffices.
type recentIDs struct {
	ring []string
	next int
	set  map[string]struct{}
}

func newRecentIDs(n int) *recentIDs {
	return &recentIDs{ring: make([]string, n), set: make(map[string]struct{}, n)}
}

// add reports whether id is new, and remembers it.
func (r *recentIDs) add(id string) bool {
	if _, dup := r.set[id]; dup {
		return false
	}
	if old := r.ring[r.next]; old != "" {
		delete(r.set, old)
	}
	r.ring[r.next] = id
	r.set[id] = struct{}{}
	r.next = (r.next + 1) % len(r.ring)
	return true
}

// has reports whether id is remembered.
func (r *recentIDs) has(id string) bool {
	_, ok := r.set[id]
	return ok
}

// onceFilter decides which events of one partition are delivered: each
// message once (a retried append's second copy is dropped), each delete
// once, no message whose delete came before it (the router delivers a
// private message late to an edge where its recipient just connected, and
// may do so after a delete), and no edit of a message deleted before it in the partition (an
// edit can be appended after the delete when two history instances each
// checked the table before the delete reached it; the table ignores it,
// and so do clients).
//
// A message is also dropped when the same user's message with the same
// client_id, under another id, was delivered before it: a resend that an
// edge could not recognise (sent through an edge that had not seen the
// first) is appended with a new id, and history keeps only the first.
type onceFilter struct {
	recent  *recentIDs // message ids delivered
	deleted *recentIDs // ids of messages deleted
	sends   *recentIDs // username + client_id of the messages delivered
}

func newOnceFilter() onceFilter {
	return onceFilter{recent: newRecentIDs(recentIDWindow), deleted: newRecentIDs(recentIDWindow), sends: newRecentIDs(recentIDWindow)}
}

// keep reports whether ev is delivered, and remembers it.
func (f onceFilter) keep(ev *chatevent.Event) bool {
	switch ev.Type {
	case chatevent.TypeEdit:
		return !f.deleted.has(ev.ID) // several edits of one message are not duplicates
	case chatevent.TypeDelete:
		return f.deleted.add(ev.ID)
	}
	if !f.recent.add(ev.ID) || f.deleted.has(ev.ID) {
		return false // a copy, or a message whose delete came first (the router's late delivery)
	}
	if ev.ClientID != "" && (ev.Type == chatevent.TypeChat || ev.Type == chatevent.TypePrivate) {
		return f.sends.add(ev.Username + "\x00" + ev.ClientID)
	}
	return true
}
