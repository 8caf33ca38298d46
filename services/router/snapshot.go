package router

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/segmentio/kafka-go"
)

// Presence snapshots bound what a starting router replays. A router that
// has applied more presence records since its last snapshot than both
// Config.SnapshotRecords and the size of its tables writes the tables, with
// the position in each chat.presence partition they reflect, to the
// snapshot topic (the presence topic's name plus ".snapshots", one
// partition). A starting router loads the newest complete snapshot and
// replays chat.presence only from its positions, so a restart costs about
// the size of the tables plus at most SnapshotRecords records, however long
// the presence history is.
//
// A snapshot is one or more records written by one WriteMessages call:
//
//	key:     "presence"
//	headers: chat-snapshot: the snapshot's id (a UUID);
//	         chat-snapshot-chunk: "<i>/<n>" (chunk i of n, from 0)
//	value:   snapshotChunk JSON (each at most about snapshotChunkBytes)
//
// Chunks of several routers' snapshots may interleave; a reader groups
// them by id and takes the newest snapshot whose n chunks it has all read.
const (
	headerSnapshot      = "chat-snapshot"
	headerSnapshotChunk = "chat-snapshot-chunk"
	snapshotVersion     = 1
	snapshotChunkBytes  = 256 << 10
)

// snapshotChunk is one record of a snapshot. Every chunk repeats the
// snapshot's version, positions and time; edges and last-seen times are
// spread over the chunks (one edge may appear in several, to be merged).
type snapshotChunk struct {
	V int `json:"v"`
	// Partitions holds, per chat.presence partition, the next offset the
	// snapshot has not applied: replay starts there.
	Partitions []int64          `json:"partitions"`
	Taken      int64            `json:"taken"` // unix nanoseconds
	Edges      []snapshotEdge   `json:"edges,omitempty"`
	Seen       map[string]int64 `json:"seen,omitempty"` // user → last seen, unix nanoseconds
}

type snapshotEdge struct {
	ID    string              `json:"id"`
	Beat  int64               `json:"beat"`            // when the router last heard from it, unix nanoseconds
	Stamp int64               `json:"stamp,omitempty"` // its newest record's timestamp, unix nanoseconds
	Users map[string]int      `json:"users,omitempty"` // user → connections
	Rooms map[string][]string `json:"rooms,omitempty"` // room → users
}

// snapshotTopic returns the topic of presence snapshots.
func snapshotTopic(presenceTopic string) string { return presenceTopic + ".snapshots" }

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromUnixNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// snapshot copies the table into chunks of about chunkBytes and returns them
// with the number of records applied up to the cut.
func (t *table) snapshot(chunkBytes int) ([]snapshotChunk, int64) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	head := snapshotChunk{V: snapshotVersion, Partitions: append([]int64(nil), t.pos...), Taken: time.Now().UnixNano()}
	var out []snapshotChunk
	cur, size := head, 0
	flush := func(force bool) {
		if size == 0 && !force {
			return
		}
		out = append(out, cur)
		cur, size = head, 0
	}
	for id, e := range t.edges {
		se := &snapshotEdge{ID: id, Beat: unixNano(e.lastBeat), Stamp: unixNano(e.stamp)}
		cur.Edges = append(cur.Edges, *se)
		se = &cur.Edges[len(cur.Edges)-1]
		size += len(id) + 48
		split := func() {
			if size < chunkBytes {
				return
			}
			flush(false)
			cur.Edges = append(cur.Edges, snapshotEdge{ID: id, Beat: unixNano(e.lastBeat), Stamp: unixNano(e.stamp)})
			se = &cur.Edges[len(cur.Edges)-1]
			size = len(id) + 48
		}
		for u, n := range e.users {
			if se.Users == nil {
				se.Users = map[string]int{}
			}
			se.Users[u] = n
			size += len(u) + 8
			split()
		}
		for room, m := range e.rooms {
			for u := range m {
				if se.Rooms == nil {
					se.Rooms = map[string][]string{}
				}
				se.Rooms[room] = append(se.Rooms[room], u)
				size += len(room) + len(u) + 8
				split()
			}
		}
	}
	for u, at := range t.lastSeen {
		if cur.Seen == nil {
			cur.Seen = map[string]int64{}
		}
		cur.Seen[u] = unixNano(at)
		size += len(u) + 24
		if size >= chunkBytes {
			flush(false)
		}
	}
	flush(len(out) == 0) // an empty table is one chunk
	return out, t.applied
}

// snapshotWritten records that a snapshot cut after applied records was
// written.
func (t *table) snapshotWritten(applied int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.applied = max(t.applied-applied, 0)
}

// load replaces the table with the chunks of one snapshot.
func (t *table) load(chunks []snapshotChunk) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.edges = map[string]*edgeState{}
	t.lastSeen = map[string]time.Time{}
	for _, c := range chunks {
		for _, se := range c.Edges {
			e := t.edge(se.ID)
			if b := fromUnixNano(se.Beat); b.After(e.lastBeat) {
				e.lastBeat = b
			}
			if s := fromUnixNano(se.Stamp); s.After(e.stamp) {
				e.stamp = s
			}
			for u, n := range se.Users {
				e.users[u] = n
			}
			for room, users := range se.Rooms {
				m := e.rooms[room]
				if m == nil {
					m = map[string]struct{}{}
					e.rooms[room] = m
				}
				for _, u := range users {
					m[u] = struct{}{}
				}
			}
		}
		for u, at := range c.Seen {
			t.lastSeen[u] = fromUnixNano(at)
		}
	}
	if len(chunks) > 0 {
		t.pos = append([]int64(nil), chunks[0].Partitions...)
	}
	t.applied = 0
}

// encodeSnapshot returns the records of one snapshot.
func encodeSnapshot(chunks []snapshotChunk) ([]kafka.Message, error) {
	id := uuid.NewString()
	msgs := make([]kafka.Message, 0, len(chunks))
	for i := range chunks {
		b, err := json.Marshal(&chunks[i])
		if err != nil {
			return nil, fmt.Errorf("encode snapshot: %w", err)
		}
		msgs = append(msgs, kafka.Message{Key: []byte("presence"), Value: b, Headers: []kafka.Header{
			{Key: headerSnapshot, Value: []byte(id)},
			{Key: headerSnapshotChunk, Value: []byte(strconv.Itoa(i) + "/" + strconv.Itoa(len(chunks)))},
		}})
	}
	return msgs, nil
}

// chunkOf reads a record's snapshot headers.
func chunkOf(m *kafka.Message) (id string, i, n int, ok bool) {
	var chunk string
	for _, h := range m.Headers {
		switch h.Key {
		case headerSnapshot:
			id = string(h.Value)
		case headerSnapshotChunk:
			chunk = string(h.Value)
		}
	}
	a, b, found := strings.Cut(chunk, "/")
	if id == "" || !found {
		return "", 0, 0, false
	}
	i, err1 := strconv.Atoi(a)
	n, err2 := strconv.Atoi(b)
	if err1 != nil || err2 != nil || n < 1 || i < 0 || i >= n {
		return "", 0, 0, false
	}
	return id, i, n, true
}

// snapshotSpan is where one snapshot's chunks lie in the snapshot topic.
type snapshotSpan struct {
	n           int
	have        map[int]bool
	first, last int64
}

// latestSnapshot reads the newest complete snapshot from the snapshot
// topic, or returns nil chunks when there is none. It scans back from the
// end in growing windows, so it reads little more than the snapshot itself.
func (r *Router) latestSnapshot(ctx context.Context) ([]snapshotChunk, error) {
	k := r.cfg.Kafka
	topic := snapshotTopic(k.PresenceTopic)
	first, end, err := k.Offsets(ctx, topic, 0)
	if err != nil {
		return nil, err
	}
	if end <= first {
		return nil, nil
	}
	for window := int64(64); ; window *= 4 {
		from := max(first, end-window)
		spans := map[string]*snapshotSpan{}
		err := r.readRange(ctx, topic, from, end, func(m *kafka.Message) error {
			id, i, n, ok := chunkOf(m)
			if !ok {
				return nil
			}
			s := spans[id]
			if s == nil {
				s = &snapshotSpan{n: n, have: map[int]bool{}, first: m.Offset}
				spans[id] = s
			}
			s.have[i] = s.n == n
			s.last = m.Offset
			return nil
		})
		if err != nil {
			return nil, err
		}
		var bestID string
		var best *snapshotSpan
		for id, s := range spans {
			complete := len(s.have) == s.n
			for _, ok := range s.have {
				complete = complete && ok
			}
			if complete && (best == nil || s.last > best.last) {
				bestID, best = id, s
			}
		}
		if best != nil {
			chunks := make([]snapshotChunk, best.n)
			var bad error
			err := r.readRange(ctx, topic, best.first, best.last+1, func(m *kafka.Message) error {
				id, i, _, ok := chunkOf(m)
				if !ok || id != bestID {
					return nil
				}
				if err := json.Unmarshal(m.Value, &chunks[i]); err != nil && bad == nil {
					bad = fmt.Errorf("chunk %d at offset %d: %w", i, m.Offset, err)
				}
				return nil
			})
			if err != nil {
				return nil, err
			}
			for i := range chunks {
				if bad == nil && (chunks[i].V != snapshotVersion || len(chunks[i].Partitions) != len(chunks[0].Partitions)) {
					bad = fmt.Errorf("chunk %d has version %d and %d partitions", i, chunks[i].V, len(chunks[i].Partitions))
				}
			}
			if bad != nil { // not one we can use, and retrying will not change that
				r.log.Warn("presence snapshot unusable: replaying the whole presence log", "snapshot", bestID, "err", bad)
				return nil, nil
			}
			return chunks, nil
		}
		if from == first {
			return nil, nil
		}
	}
}

// readRange calls fn for every record of partition 0 of topic in [from, to).
func (r *Router) readRange(ctx context.Context, topic string, from, to int64, fn func(*kafka.Message) error) error {
	if from >= to {
		return nil
	}
	rd := kafka.NewReader(kafka.ReaderConfig{Brokers: r.cfg.Kafka.BrokerList(), Topic: topic, Partition: 0,
		MinBytes: 1, MaxBytes: 16 << 20, MaxWait: 10 * time.Millisecond, ReadLagInterval: -1}) // the range exists: no long polls
	defer rd.Close()
	if err := rd.SetOffset(from); err != nil {
		return fmt.Errorf("read %s from %d: %w", topic, from, err)
	}
	for {
		m, err := rd.ReadMessage(ctx)
		if err != nil {
			return fmt.Errorf("read %s: %w", topic, err)
		}
		if m.Offset >= to {
			return nil
		}
		if err := fn(&m); err != nil {
			return err
		}
		if m.Offset >= to-1 {
			return nil
		}
	}
}

// snapshotMaxAge: a router that applied anything writes a snapshot at
// least this often, so one newer than the presence topic's retention
// exists even when presence is quiet (otherwise retention would delete the
// connect records of long-lived connections with nothing to replace them).
const snapshotMaxAge = 24 * time.Hour

// writeSnapshot writes the table's snapshot if enough records were applied
// since the last one (or the last is a day old). It reports whether it
// wrote one.
func (r *Router) writeSnapshot(ctx context.Context, force bool) (bool, error) {
	applied := r.t.appliedSinceSnapshot()
	due := applied >= int64(max(r.cfg.SnapshotRecords, r.t.size())) ||
		(applied > 0 && time.Since(time.Unix(0, r.lastSnapshot.Load())) >= snapshotMaxAge)
	if !force && (r.cfg.SnapshotRecords <= 0 || !due) {
		return false, nil
	}
	chunks, cut := r.t.snapshot(snapshotChunkBytes)
	msgs, err := encodeSnapshot(chunks)
	if err != nil {
		return false, err
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := r.snapshots.WriteMessages(wctx, msgs...); err != nil {
		return false, fmt.Errorf("write presence snapshot: %w", err)
	}
	r.t.snapshotWritten(cut)
	r.lastSnapshot.Store(time.Now().UnixNano())
	r.snapshotsWritten.Inc()
	r.log.Info("presence snapshot written", "chunks", len(msgs), "records_since_last", cut)
	return true, nil
}

// snapshotLoop writes snapshots while the router runs.
func (r *Router) snapshotLoop(ctx context.Context) error {
	if r.cfg.SnapshotRecords <= 0 {
		return nil
	}
	tick := time.NewTicker(r.snapshotCheck)
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
		if _, err := r.writeSnapshot(ctx, false); err != nil && !errors.Is(err, context.Canceled) {
			r.log.Warn("presence snapshot failed; trying again later", "err", err)
		}
	}
}
