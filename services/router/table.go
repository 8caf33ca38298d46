package router

import (
	"sort"
	"sync"
	"time"

	"github.com/chatsys/chat/pkg/chatevent"
)

// edgeState is what one edge reported.
type edgeState struct {
	lastBeat time.Time                      // last heartbeat (record time)
	users    map[string]int                 // user → connections
	rooms    map[string]map[string]struct{} // room → users
}

// table is the presence state rebuilt from chat.presence. Safe for
// concurrent use.
type table struct {
	mu       sync.RWMutex
	edges    map[string]*edgeState
	lastSeen map[string]time.Time // user → when last seen connected
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

// apply updates the table with one presence record.
func (t *table) apply(p *chatevent.Presence, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.edge(p.Edge)
	if at.After(e.lastBeat) {
		e.lastBeat = at // any record from an edge shows it alive
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
