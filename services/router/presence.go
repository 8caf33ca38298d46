package router

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/segmentio/kafka-go"

	"github.com/chatsys/chat/pkg/chatevent"
)

// loadPresence loads the newest presence snapshot, if any, and sets where
// each partition's replay starts.
func (r *Router) loadPresence(ctx context.Context) {
	t0 := time.Now()
	start := append([]int64(nil), r.firstAtStart...)
	var chunks []snapshotChunk
	err := retry(ctx, 200*time.Millisecond, 2*time.Second, 15*time.Second, func() error {
		var err error
		chunks, err = r.latestSnapshot(ctx)
		return err
	}, func(err error, wait time.Duration) {
		r.log.Warn("read presence snapshot; retrying", "retry_in", wait, "err", err)
	})
	switch {
	case err != nil:
		r.log.Warn("no presence snapshot: replaying the whole presence log", "err", err)
	case chunks == nil:
	case !r.snapshotFits(chunks[0].Partitions):
		r.log.Warn("presence snapshot does not fit the presence topic (recreated?): replaying the whole log",
			"snapshot_partitions", len(chunks[0].Partitions), "partitions", len(r.endAtStart))
	default:
		r.t.load(chunks)
		for p, off := range chunks[0].Partitions {
			start[p] = max(off, r.firstAtStart[p])
		}
		r.fromSnapshot = true
		r.log.Info("presence snapshot loaded", "chunks", len(chunks), "taken", time.Unix(0, chunks[0].Taken).UTC(), "took", time.Since(t0).Round(time.Millisecond))
	}
	r.startAt = start
	r.t.setPositions(start)
	var replay int64
	for p := range start {
		replay += max(r.endAtStart[p]-start[p], 0)
	}
	r.toReplay = replay
	for p := range start {
		if start[p] >= r.endAtStart[p] {
			r.partCaughtUp()
		}
	}
}

// snapshotFits reports whether snapshot positions can belong to the
// presence topic as it is: as many partitions, none past the end.
func (r *Router) snapshotFits(pos []int64) bool {
	if len(pos) != len(r.endAtStart) {
		return false
	}
	for p, off := range pos {
		if off < 0 || off > r.endAtStart[p] {
			return false
		}
	}
	return true
}

// presenceStats returns kafka-go's statistics of the presence readers.
func (r *Router) presenceStats() []kafka.ReaderStats {
	r.presenceMu.Lock()
	defer r.presenceMu.Unlock()
	out := make([]kafka.ReaderStats, 0, len(r.presenceReaders))
	for _, rd := range r.presenceReaders {
		out = append(out, rd.Stats())
	}
	return out
}

// tailPresence applies partition p of chat.presence from where loadPresence
// put it, forever.
func (r *Router) tailPresence(ctx context.Context, p int) error {
	k := r.cfg.Kafka
	rd := kafka.NewReader(kafka.ReaderConfig{Brokers: k.BrokerList(), Topic: k.PresenceTopic, Partition: p, MinBytes: 1, MaxBytes: 8 << 20, MaxWait: time.Second, ReadLagInterval: -1, MaxAttempts: 1 << 30})
	r.presenceMu.Lock()
	r.presenceReaders = append(r.presenceReaders, rd)
	r.presenceMu.Unlock()
	defer func() {
		r.presenceMu.Lock()
		r.presenceReaders = slices.DeleteFunc(r.presenceReaders, func(x *kafka.Reader) bool { return x == rd })
		r.presenceMu.Unlock()
		rd.Close()
	}()
	if err := rd.SetOffset(r.startAt[p]); err != nil {
		return fmt.Errorf("presence %d: start at %d: %w", p, r.startAt[p], err)
	}
	end := r.endAtStart[p]
	done := r.startAt[p] >= end
	for {
		m, err := rd.ReadMessage(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("presence %d: %w", p, err)
		}
		var pr chatevent.Presence
		rec := &pr
		if err := json.Unmarshal(m.Value, &pr); err != nil || pr.Edge == "" {
			rec = nil // not ours to understand: skip it, but count it read
		}
		at := m.Time
		if r.caughtUp.Load() {
			at = time.Now() // liveness by our clock, not the edge's
		}
		if r.t.applyRecord(p, m.Offset, rec, at, m.Time) && r.caughtUp.Load() {
			r.arrive(rec.User, rec.Edge) // events routed a moment before may be owed to this edge
		}
		if !done && m.Offset >= end-1 {
			done = true
			r.partCaughtUp()
		}
	}
}

func (r *Router) partCaughtUp() {
	if r.remaining.Add(-1) == 0 {
		r.catchUp = time.Since(r.started)
		r.caughtUp.Store(true)
		close(r.caughtUpCh)
		r.log.Info("presence caught up", "from_snapshot", r.fromSnapshot, "replayed", r.toReplay, "took", r.catchUp.Round(time.Millisecond))
	}
}

// health says since when the router's view of chat.presence has been
// continuously current. The router may judge an edge silent only over a
// stretch in which it could have heard it: while the broker is down (or the
// router cannot reach it, or its readers stall) edges cannot append
// heartbeats and the router cannot read them, so it must not expire them;
// after such a stretch every edge gets a full -router.edge-timeout again.
//
// A probe asks the broker for the end of every presence partition every
// probe interval; the view is current when that succeeds and the readers
// have applied everything up to the ends the previous probe saw.
type health struct {
	mu     sync.Mutex
	since  time.Time // start of the current healthy stretch; zero while not healthy
	prev   []int64   // partition ends seen by the previous successful probe
	prevAt time.Time
	maxGap time.Duration // the longest a probe may lag the previous one
}

// healthySince returns the start of the current healthy stretch at now, or
// zero. The stretch has ended if no probe observed it for longer than the
// longest gap between probes, even before the next probe says so: after the
// process was stopped (SIGSTOP, a stalled VM) the expiry may run before the
// probe, and the heartbeats the edges sent meanwhile are not read yet.
func (h *health) healthySince(now time.Time) time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	if now.Sub(h.prevAt) > h.maxGap {
		return time.Time{}
	}
	return h.since
}

// observe records a probe at now: ends (nil when the probe failed), the
// readers' positions, and the longest a probe may lag the previous one.
// It reports whether the healthy state changed.
func (h *health) observe(now time.Time, ends, pos []int64, maxGap time.Duration) (healthy, changed bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	ok := ends != nil && h.prev != nil && now.Sub(h.prevAt) <= maxGap && len(pos) == len(h.prev)
	for p := 0; ok && p < len(h.prev); p++ {
		ok = pos[p] >= h.prev[p]
	}
	h.prev, h.prevAt, h.maxGap = ends, now, maxGap
	was := !h.since.IsZero()
	switch {
	case ok && !was:
		h.since = now
	case !ok:
		h.since = time.Time{}
	}
	return ok, ok != was
}

// presenceEnds asks the broker for the end of every presence partition.
func (r *Router) presenceEnds(ctx context.Context) ([]int64, error) {
	topic := r.cfg.Kafka.PresenceTopic
	n := len(r.endAtStart)
	req := &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: make([]kafka.OffsetRequest, n)}}
	for p := 0; p < n; p++ {
		req.Topics[topic][p] = kafka.LastOffsetOf(p)
	}
	res, err := r.admin.ListOffsets(ctx, req)
	if err != nil {
		return nil, err
	}
	ends := make([]int64, n)
	seen := 0
	for _, po := range res.Topics[topic] {
		if po.Error != nil {
			return nil, fmt.Errorf("partition %d: %w", po.Partition, po.Error)
		}
		if po.Partition >= 0 && po.Partition < n {
			ends[po.Partition] = po.LastOffset
			seen++
		}
	}
	if seen != n {
		return nil, fmt.Errorf("list offsets: %d of %d partitions answered", seen, n)
	}
	return ends, nil
}

// probeLoop keeps health current.
func (r *Router) probeLoop(ctx context.Context) error {
	every := r.probeEvery
	timeout := min(max(2*every, 500*time.Millisecond), max(r.cfg.EdgeTimeout/2, every))
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		if !r.caughtUp.Load() {
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, timeout)
		ends, err := r.presenceEnds(pctx)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		healthy, changed := r.health.observe(time.Now(), ends, r.t.positions(), 2*every+timeout)
		if !changed {
			continue
		}
		if healthy {
			r.healthy.Set(1)
			r.log.Info("presence is current again: edges get a full edge timeout from now")
		} else {
			r.healthy.Set(0)
			r.log.Warn("presence is not current: no edge is expired until it is", "err", err)
		}
	}
}

// expireLoop expires silent edges and appends leave events for their room
// members. An edge is expired only when it has been silent for EdgeTimeout
// while the router's view of presence was current all along (see health).
// Leave events have ids derived from (edge, its newest record's timestamp,
// user, room), so router instances that all expire the same edge append
// duplicates that history and clients drop.
func (r *Router) expireLoop(ctx context.Context) error {
	tick := time.NewTicker(r.probeEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		now := time.Now()
		since := r.health.healthySince(now)
		if since.IsZero() || now.Sub(since) < r.cfg.EdgeTimeout {
			continue
		}
		for id, e := range r.t.expire(now.Add(-r.cfg.EdgeTimeout)) {
			r.expired.Inc()
			if e.lastBeat.Before(r.started.Add(-r.cfg.EdgeTimeout)) {
				continue // died before we started: its leaves were announced then
			}
			r.log.Warn("edge expired", "edge", id, "users", len(e.users))
			r.announceLeaves(ctx, id, e)
		}
	}
}

// announceLeaves appends a leave event to each room for each member the
// expired edge held, retrying for up to a minute; not for a member who is
// in the room on another edge (reconnected there, or there all along).
func (r *Router) announceLeaves(ctx context.Context, id string, e *edgeState) {
	stamp := e.stamp
	if stamp.IsZero() {
		stamp = e.lastBeat
	}
	var msgs []kafka.Message
	for room, users := range e.rooms {
		for u := range users {
			if r.t.inRoom(room, u) {
				continue
			}
			ev := chatevent.Event{ID: leaveID(id, stamp, u, room), Type: chatevent.TypeLeave, Room: room, Username: u,
				Timestamp: chatevent.FormatTime(time.Now())}
			b, err := ev.Encode()
			if err != nil {
				r.log.Error("encode leave event", "edge", id, "room", room, "err", err)
				continue
			}
			msgs = append(msgs, kafka.Message{Key: []byte(chatevent.RoomKey(room)), Value: b})
		}
	}
	if len(msgs) == 0 {
		return
	}
	err := retry(ctx, 200*time.Millisecond, 5*time.Second, time.Minute, func() error {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		return r.rooms.WriteMessages(wctx, msgs...)
	}, func(err error, wait time.Duration) {
		r.log.Warn("append leave events; retrying", "edge", id, "retry_in", wait, "err", err)
	})
	if err != nil && ctx.Err() == nil {
		r.log.Error("append leave events: giving up", "edge", id, "events", len(msgs), "err", err)
	}
}

// forgetLoop drops last-seen times older than ForgetAfter of users not
// connected anywhere, once a minute.
func (r *Router) forgetLoop(ctx context.Context) error {
	if r.cfg.ForgetAfter <= 0 {
		return nil
	}
	tick := time.NewTicker(min(time.Minute, r.cfg.ForgetAfter))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		if n := r.t.forget(time.Now().Add(-r.cfg.ForgetAfter), forgetScan); n > 0 {
			r.log.Info("forgot users not seen for a long time", "users", n, "forget_after", r.cfg.ForgetAfter)
		}
	}
}

func leaveID(edge string, beat time.Time, user, room string) string {
	h := sha256.Sum256([]byte(edge + "\x00" + strconv.FormatInt(beat.UnixNano(), 10) + "\x00" + user + "\x00" + room))
	var u uuid.UUID
	copy(u[:], h[:16])
	// Keep the UUIDv7 shape: 48-bit millisecond time, version 7, variant 10.
	ms := uint64(beat.UnixMilli())
	for i := 0; i < 6; i++ {
		u[i] = byte(ms >> (40 - 8*i))
	}
	u[6] = u[6]&0x0f | 0x70
	u[8] = u[8]&0x3f | 0x80
	return u.String()
}
