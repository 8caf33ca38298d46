package edge

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/chatsys/chat/pkg/chatevent"
	"github.com/chatsys/chat/pkg/kafkaio"
)

// presence publishes this edge's connections, room memberships and
// heartbeats to chat.presence, and debounces disconnects: a user whose last
// connection closes is reported gone only if they do not reconnect within
// the grace period.
type presence struct {
	e      *Edge
	w      *kafka.Writer
	mu     sync.Mutex
	users  map[string]int            // user → open connections
	rooms  map[string]map[string]int // user → room → joined connections
	timers map[string]*time.Timer    // user → pending disconnect
	// lost is set when a presence write failed (the broker was away) or was
	// dropped: once the log acknowledges writes again, the next heartbeat
	// republishes every connection and membership (once), so the router's
	// tables converge to the truth.
	lost atomic.Bool
	// healthy: the last batch the writer finished was acknowledged and no
	// record was refused or dropped since. While it is not, nothing is
	// republished (a republish per heartbeat during an outage would pile
	// up in the writer's queue).
	healthy atomic.Bool
	// queued counts records handed to the writer and not yet finished; above
	// maxQueued new records are dropped (and repaired by the republish),
	// so an outage cannot grow the queue without bound.
	queued    atomic.Int64
	maxQueued int64
	// gone holds the disconnects and leaves whose records failed, so the
	// republish repeats those still true (the router would otherwise keep
	// a user online who left during the outage). Guarded by mu.
	gone map[chatevent.Presence]struct{}
}

func newPresence(e *Edge, k kafkaio.Config) *presence {
	w := k.NewWriter(k.PresenceTopic)
	w.Async = true // presence is best effort; heartbeats repair what is lost
	// Not latency-critical: batch longer, fewer produce requests when many
	// users connect at once.
	w.BatchTimeout = 20 * time.Millisecond
	w.BatchSize = 64
	p := &presence{e: e, w: w, users: map[string]int{}, rooms: map[string]map[string]int{}, timers: map[string]*time.Timer{},
		gone: map[chatevent.Presence]struct{}{}, maxQueued: maxPresenceQueued}
	p.healthy.Store(true)
	w.Completion = func(msgs []kafka.Message, err error) {
		e.m.presenceQueued.Set(float64(p.queued.Add(-int64(len(msgs)))))
		if err != nil {
			p.healthy.Store(false)
			p.lost.Store(true)
			e.m.presenceErrs.Add(float64(len(msgs)))
			p.remember(msgs)
			e.log.Debug("presence write failed; will republish", "err", err)
			return
		}
		p.healthy.Store(true)
	}
	return p
}

// maxPresenceQueued bounds the presence records (about 350 bytes each)
// waiting in the writer for connects, joins, leaves and heartbeats.
var maxPresenceQueued int64 = 200_000 // a variable for tests; read when an edge starts

func (p *presence) publish(typ, user, room string, conns int) { p.send(typ, user, room, conns, true) }

// send hands a record to the writer. bounded: drop it when maxQueued wait
// already (a republish is not bounded: it happens once per recovery, when
// the queue is less than half full, and is as large as the edge's state).
func (p *presence) send(typ, user, room string, conns int, bounded bool) {
	r := chatevent.Presence{Type: typ, Edge: p.e.cfg.ID, User: user, Room: room, Connections: conns,
		Timestamp: chatevent.FormatTime(time.Now())}
	b, err := r.Encode()
	if err != nil { // an unencodable record: republish later
		p.lost.Store(true)
		return
	}
	n := p.queued.Add(1)
	if bounded && n > p.maxQueued {
		// The log has not taken the records before these: drop, and let
		// the republish repair once it takes writes again (a dropped
		// disconnect or leave is kept for it; those are always published
		// under mu).
		p.queued.Add(-1)
		p.healthy.Store(false)
		p.lost.Store(true)
		p.e.m.presenceErrs.Inc()
		if typ == chatevent.PresenceDisconnect || typ == chatevent.PresenceLeave {
			p.goneLocked(r)
		}
		return
	}
	p.e.m.presenceQueued.Set(float64(n))
	if err := p.w.WriteMessages(context.Background(), kafka.Message{Key: []byte(r.Key()), Value: b}); err != nil {
		// Refused before it was queued (a closed writer, or no metadata
		// yet: the broker was away when the edge started).
		p.e.m.presenceQueued.Set(float64(p.queued.Add(-1)))
		p.healthy.Store(false)
		p.lost.Store(true)
	}
}

// remember keeps the failed disconnect and leave records.
func (p *presence) remember(msgs []kafka.Message) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, m := range msgs {
		r, err := chatevent.DecodePresence(m.Value)
		if err != nil || (r.Type != chatevent.PresenceDisconnect && r.Type != chatevent.PresenceLeave) {
			continue
		}
		p.goneLocked(r)
	}
}

func (p *presence) goneLocked(r chatevent.Presence) {
	if len(p.gone) < 100_000 {
		p.gone[chatevent.Presence{Type: r.Type, User: r.User, Room: r.Room}] = struct{}{}
	}
	p.e.m.presenceGone.Set(float64(len(p.gone)))
}

// republish publishes every open connection count and room membership of
// this edge again. The records are absolute (counts, joins), so repeating
// them is harmless.
func (p *presence) republish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	gone := p.gone // what fails again now is kept in a new one
	p.gone = map[chatevent.Presence]struct{}{}
	p.e.m.presenceGone.Set(0)
	for g := range gone {
		switch {
		case g.Type == chatevent.PresenceDisconnect && p.users[g.User] == 0 && p.timers[g.User] == nil:
			p.send(chatevent.PresenceDisconnect, g.User, "", 0, false)
		case g.Type == chatevent.PresenceLeave && p.rooms[g.User][g.Room] == 0:
			p.send(chatevent.PresenceLeave, g.User, g.Room, 0, false)
		}
	}
	for user, n := range p.users {
		p.send(chatevent.PresenceConnect, user, "", n, false)
	}
	for user, rooms := range p.rooms {
		for room := range rooms {
			p.send(chatevent.PresenceJoin, user, room, 0, false)
		}
	}
}

func (p *presence) connected(user string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if t := p.timers[user]; t != nil {
		t.Stop()
		delete(p.timers, user)
	}
	p.users[user]++
	p.publish(chatevent.PresenceConnect, user, "", p.users[user])
}

// disconnected records a closed connection and the rooms it had joined.
func (p *presence) disconnected(user string, rooms []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range rooms {
		p.leftLocked(user, r)
	}
	p.users[user]--
	if n := p.users[user]; n > 0 {
		p.publish(chatevent.PresenceConnect, user, "", n)
		return
	}
	delete(p.users, user)
	p.timers[user] = time.AfterFunc(p.e.cfg.PresenceGrace, func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.users[user] == 0 && p.timers[user] != nil {
			delete(p.timers, user)
			p.publish(chatevent.PresenceDisconnect, user, "", 0)
		}
	})
}

func (p *presence) joined(user, room string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := p.rooms[user]
	if m == nil {
		m = map[string]int{}
		p.rooms[user] = m
	}
	m[room]++
	if m[room] == 1 {
		p.publish(chatevent.PresenceJoin, user, room, 0)
	}
}

func (p *presence) left(user, room string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.leftLocked(user, room)
}

func (p *presence) leftLocked(user, room string) {
	m := p.rooms[user]
	if m == nil || m[room] == 0 {
		return
	}
	if m[room]--; m[room] == 0 {
		delete(m, room)
		if len(m) == 0 {
			delete(p.rooms, user)
		}
		p.publish(chatevent.PresenceLeave, user, room, 0)
	}
}

// stalledBeats is how many heartbeat intervals without a beat count as a
// stall: the routers may have expired this edge meanwhile.
const stalledBeats = 3

// beat publishes a heartbeat every interval until ctx ends.
func (p *presence) beat(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	p.publish(chatevent.PresenceHeartbeat, "", "", 0)
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			// A beat this late means the process did not run (SIGSTOP, a
			// stalled VM, a machine starved of CPU): a router that kept
			// running may have expired this edge and dropped its users
			// while their connections stayed open. Republish them.
			if now := time.Now(); now.Sub(last) > stalledBeats*interval {
				p.e.log.Warn("heartbeats stalled; republishing presence", "gap", now.Sub(last).Round(time.Millisecond))
				p.lost.Store(true)
			}
			last = time.Now()
			// Republish once the log takes writes again and has room for
			// them (into a queue it cannot drain it would only pile up).
			if p.healthy.Load() && p.queued.Load() < p.maxQueued/2 && p.lost.Swap(false) {
				p.e.log.Info("republishing presence after failed writes")
				p.e.m.presenceRepublishes.Inc()
				p.republish()
			}
			p.publish(chatevent.PresenceHeartbeat, "", "", 0)
		}
	}
}

func (p *presence) close() error {
	p.mu.Lock()
	for u, t := range p.timers {
		t.Stop()
		delete(p.timers, u)
	}
	p.mu.Unlock()
	return p.w.Close()
}
