package router

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
)

// A connection's presence record and the private events sent to its user
// travel on different topics: an event routed in the moment between a
// connection's welcome and the router reading its connect record is not
// sent to the new connection's edge. The router remembers what it routed
// in the last lateWindow; when a user arrives on an edge (the edge had no
// connection of theirs), every remembered event for them that did not go
// to that edge is delivered there too. The edge shows each event once, so
// a late delivery never duplicates one.

const (
	lateWindow   = 10 * time.Second
	lateMax      = 50_000   // remembered events at most (the oldest go first)
	lateMaxBytes = 64 << 20 // and their delivery values' bytes at most
)

type routedEvent struct {
	at      time.Time
	users   []string
	edges   []string // the edges it went to
	value   []byte   // its delivery record's value and headers
	headers []kafka.Header
}

// lateRoutes is the memory of recently routed events, indexed by user.
// Targeting an event and remembering it happen under mu, and so does an
// arrival's lookup: an arrival either came before the targeting (and the
// event went to the edge) or finds the event here.
type lateRoutes struct {
	mu     sync.Mutex
	events []*routedEvent            // oldest first
	head   int                       // events[:head] are forgotten (compacted lazily)
	byUser map[string][]*routedEvent // oldest first, the same events
	bytes  int                       // of the remembered events' values
}

// target computes the edges of an event with edgesOf and remembers it.
func (l *lateRoutes) target(now time.Time, users []string, value []byte, headers []kafka.Header, edgesOf func(...string) []string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	edges := edgesOf(users...)
	l.forgetLocked(now)
	for l.head < len(l.events) && (len(l.events)-l.head >= lateMax || l.bytes+len(value) > lateMaxBytes) {
		l.dropOldestLocked()
	}
	ev := &routedEvent{at: now, users: users, edges: slices.Clone(edges), value: value, headers: headers}
	l.events = append(l.events, ev)
	l.bytes += len(value)
	if l.byUser == nil {
		l.byUser = map[string][]*routedEvent{}
	}
	for _, u := range users {
		l.byUser[u] = append(l.byUser[u], ev)
	}
	return edges
}

// forgetLocked drops the events older than lateWindow.
func (l *lateRoutes) forgetLocked(now time.Time) {
	for l.head < len(l.events) && now.Sub(l.events[l.head].at) > lateWindow {
		l.dropOldestLocked()
	}
	if l.head > 1024 && l.head > len(l.events)/2 {
		l.events = append(l.events[:0], l.events[l.head:]...)
		l.head = 0
	}
}

// dropOldestLocked forgets the oldest event: it is also the oldest of
// each of its users.
func (l *lateRoutes) dropOldestLocked() {
	ev := l.events[l.head]
	l.events[l.head] = nil
	l.head++
	l.bytes -= len(ev.value)
	for _, u := range ev.users {
		if list := l.byUser[u]; len(list) <= 1 {
			delete(l.byUser, u)
		} else {
			list[0] = nil
			l.byUser[u] = list[1:]
		}
	}
}

// arrived returns the delivery records owed to edge now that user has a
// connection there, and counts the edge as served for those events (see
// unserved when they could not be written).
func (l *lateRoutes) arrived(now time.Time, user, edge string) ([]kafka.Message, []*routedEvent) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.forgetLocked(now)
	var out []kafka.Message
	var evs []*routedEvent
	for _, ev := range l.byUser[user] {
		if slices.Contains(ev.edges, edge) {
			continue
		}
		ev.edges = append(ev.edges, edge)
		out = append(out, kafka.Message{Key: []byte(edge), Value: ev.value, Headers: ev.headers})
		evs = append(evs, ev)
	}
	return out, evs
}

// unserved undoes arrived's marks of edge on evs (their write failed): a
// later arrival there gets them.
func (l *lateRoutes) unserved(evs []*routedEvent, edge string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, ev := range evs {
		ev.edges = slices.DeleteFunc(ev.edges, func(e string) bool { return e == edge })
	}
}

type arrival struct{ user, edge string }

// lateLoop writes the late deliveries of the arrivals queued by the
// presence readers, until ctx ends.
func (r *Router) lateLoop(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case a := <-r.arrivals:
			out, evs := r.late.arrived(time.Now(), a.user, a.edge)
			if len(out) == 0 {
				continue
			}
			wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := r.deliveries.WriteMessages(wctx, out...)
			cancel()
			if err != nil {
				if ctx.Err() != nil || r.stopping.Load() {
					return nil
				}
				r.late.unserved(evs, a.edge)
				r.log.Warn("late deliveries to a user's new edge failed (the events are in history)", "user", a.user, "edge", a.edge, "records", len(out), "err", err)
				continue
			}
			r.records.Add(float64(len(out)))
			r.lateRecords.Add(float64(len(out)))
		}
	}
}

// arrive queues an arrival for lateLoop; when the queue is full (an edge
// republishing thousands of connections at once) the arrival is dropped and
// counted: its events are in history.
func (r *Router) arrive(user, edge string) {
	select {
	case r.arrivals <- arrival{user, edge}:
	default:
		r.lateDropped.Inc()
	}
}
