package router

import (
	"sort"
	"sync"
	"time"

	"github.com/chatsys/chat/pkg/chatevent"
)

// edgeState is what one edge reported.
type edgeState struct {
	lastBeat time.Time                      // last record from the edge (record time while catching up, our clock after)
	stamp    time.Time                      // record timestamp of the newest record from the edge (the same for every router)
	users    map[string]int                 // user → connections
	rooms    map[string]map[string]struct{} // room → users
}

// table is the presence state rebuilt from chat.presence, with the position
// in each partition it reflects. Safe for concurrent use.
type table struct {
	mu       sync.RWMutex
	edges    map[string]*edgeState
	lastSeen map[string]time.Time // user → when last seen connected (offline users only matter)
	pos      []int64              // per presence partition: the next offset to apply
	applied  int64                // records applied since the last snapshot (or load)
}

func newTable() *table {
	return &table{edges: map[string]*edgeState{}, lastSeen: map[string]time.Time{}}
}

func (t *table) edge(id string) *edgeState {
	e := t.edges[id]
	if e == nil {
		e = &edgeState{users: map[string]int{}, rooms: map[string]map[string]struct{}{}}
		t.edges[id] = e
	}
	return e
}

// setPositions sets where each partition's replay starts.
func (t *table) setPositions(pos []int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.pos = append([]int64(nil), pos...)
}

// positions returns, per partition, the next offset to apply.
func (t *table) positions() []int64 {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return append([]int64(nil), t.pos...)
}

// applyRecord applies the record at offset of partition (p is nil for a
// record that does not decode) and moves the partition's position past it,
// both under one lock so a snapshot is an exact cut of the log. It reports
// whether the record is a connect of a user the edge had no connection of.
func (t *table) applyRecord(partition int, offset int64, p *chatevent.Presence, at, stamp time.Time) (arrived bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if p != nil {
		if p.Type == chatevent.PresenceConnect {
			e := t.edges[p.Edge]
			arrived = e == nil || e.users[p.User] == 0
		}
		t.applyLocked(p, at, stamp)
	}
	if partition < len(t.pos) && offset >= t.pos[partition] {
		t.pos[partition] = offset + 1
	}
	t.applied++
	return arrived
}

// apply updates the table with one presence record seen at at (record
// time and our clock alike).
func (t *table) apply(p *chatevent.Presence, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.applyLocked(p, at, at)
}

// applyLocked applies p: at is when the router counts the edge as last
// heard from, stamp the record's own timestamp.
func (t *table) applyLocked(p *chatevent.Presence, at, stamp time.Time) {
	e := t.edge(p.Edge)
	if at.After(e.lastBeat) {
		e.lastBeat = at // any record from an edge shows it alive
	}
	if stamp.After(e.stamp) {
		e.stamp = stamp
	}
	switch p.Type {
	case chatevent.PresenceConnect:
		e.users[p.User] = max(p.Connections, 1)
		t.lastSeen[p.User] = at
	case chatevent.PresenceDisconnect:
		delete(e.users, p.User)
		t.lastSeen[p.User] = at
		for room, m := range e.rooms {
			delete(m, p.User)
			if len(m) == 0 {
				delete(e.rooms, room)
			}
		}
	case chatevent.PresenceJoin:
		m := e.rooms[p.Room]
		if m == nil {
			m = map[string]struct{}{}
			e.rooms[p.Room] = m
		}
		m[p.User] = struct{}{}
	case chatevent.PresenceLeave:
		if m := e.rooms[p.Room]; m != nil {
			delete(m, p.User)
			if len(m) == 0 {
				delete(e.rooms, p.Room)
			}
		}
	}
}

// expire removes edges whose last heartbeat is older than cutoff and
// returns them with what they held.
func (t *table) expire(cutoff time.Time) map[string]*edgeState {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := map[string]*edgeState{}
	for id, e := range t.edges {
		if e.lastBeat.Before(cutoff) {
			out[id] = e
			delete(t.edges, id)
			for u := range e.users {
				if e.lastBeat.After(t.lastSeen[u]) {
					t.lastSeen[u] = e.lastBeat
				}
			}
		}
	}
	return out
}

// forget drops the last-seen time of users not connected anywhere and last
// seen before cutoff, so the table does not grow with every user who ever
// connected. It looks at most maxScan entries (map order is random, so
// successive calls cover the table): it holds the lock that DM routing
// and presence need, and the table can hold every user of 30 days. It
// returns how many were dropped.
func (t *table) forget(cutoff time.Time, maxScan int) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n, scanned := 0, 0
	for u, at := range t.lastSeen {
		if scanned++; scanned > maxScan {
			break
		}
		if !at.Before(cutoff) || t.onlineLocked(u) {
			continue
		}
		delete(t.lastSeen, u)
		n++
	}
	return n
}

// forgetScan is how many last-seen entries one forget looks at (a few
// milliseconds under the lock).
const forgetScan = 20_000

func (t *table) onlineLocked(user string) bool {
	for _, e := range t.edges {
		if _, ok := e.users[user]; ok {
			return true
		}
	}
	return false
}

// size returns the number of entries a snapshot of the table holds.
func (t *table) size() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.sizeLocked()
}

func (t *table) sizeLocked() int {
	n := len(t.lastSeen)
	for _, e := range t.edges {
		n += 1 + len(e.users)
		for _, m := range e.rooms {
			n += len(m)
		}
	}
	return n
}

// appliedSinceSnapshot returns how many records were applied since the
// last snapshot was taken or loaded.
func (t *table) appliedSinceSnapshot() int64 {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.applied
}

// UserPresence is a user's presence as the HTTP API reports it.
type UserPresence struct {
	User        string `json:"user"`
	Online      bool   `json:"online"`
	Connections int    `json:"connections"`
	LastSeen    string `json:"last_seen,omitempty"`
}

func (t *table) presence(user string) UserPresence {
	t.mu.RLock()
	defer t.mu.RUnlock()
	p := UserPresence{User: user}
	for _, e := range t.edges {
		p.Connections += e.users[user]
	}
	p.Online = p.Connections > 0
	if ls, ok := t.lastSeen[user]; ok {
		p.LastSeen = chatevent.FormatTime(ls)
	}
	if p.Online {
		p.LastSeen = chatevent.FormatTime(time.Now())
	}
	return p
}

func (t *table) members(room string) []string {
	t.mu.RLock()
	defer t.mu.RUnlock()
	set := map[string]struct{}{}
	for _, e := range t.edges {
		for u := range e.rooms[room] {
			set[u] = struct{}{}
		}
	}
	out := make([]string, 0, len(set))
	for u := range set {
		out = append(out, u)
	}
	sort.Strings(out)
	return out
}

// inRoom reports whether user is in room on any live edge.
func (t *table) inRoom(room, user string) bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	for _, e := range t.edges {
		if _, ok := e.rooms[room][user]; ok {
			return true
		}
	}
	return false
}

// edgesOf returns the edges holding any of users, sorted.
func (t *table) edgesOf(users ...string) []string {
	t.mu.RLock()
	defer t.mu.RUnlock()
	var out []string
	for id, e := range t.edges {
		for _, u := range users {
			if e.users[u] > 0 {
				out = append(out, id)
				break
			}
		}
	}
	sort.Strings(out)
	return out
}
