package edge

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"golang.org/x/time/rate"

	"github.com/chatsys/chat/pkg/chatacl"
	"github.com/chatsys/chat/pkg/chatevent"
	"github.com/chatsys/chat/pkg/kafkaio"
)

// The conversation features at the edge (docs/conversations.md): the
// access state of chat.acl enforced on join, chat, private and typing;
// typing notices through chat.typing; read positions appended to
// chat.direct; edits and deletes relayed to history, which owns the
// messages; member changes reported to the room and the member.

// aclSyncWait bounds how long a refusal first waits for the local copy of
// chat.acl to catch up with the log (an invitation made a moment ago on
// another process).
const aclSyncWait = 2 * time.Second

// allowed reports whether ok() holds, re-checking after syncing the ACL with
// the log when it does not. The sync costs a request to the broker, so a
// connection over its rate gets the refusal without one.
func (e *Edge) allowed(ctx context.Context, c *conn, ok func() bool) bool {
	if ok() {
		return true
	}
	if e.acl == nil || !c.limiter.Allow() {
		return false
	}
	e.acl.SyncBriefly(ctx, aclSyncWait)
	return ok()
}

// onACL applies the consequences of a chat.acl record at this edge: a
// member record is reported to the room's subscribers and the member's own
// connections, and a member who may no longer join the room loses their
// subscriptions of it (they get left {room}).
func (e *Edge) onACL(r chatevent.ACLRecord) {
	if e.loading.Load() {
		return
	}
	switch r.Type {
	case chatevent.ACLRoom:
		// A room created private while people were in it (it was an empty
		// public room): whoever is not a member leaves it now.
		if r.Private {
			e.revokeWhere(r.Room, func(*conn) bool { return true })
		}
	case chatevent.ACLMember:
		frame := chatevent.MemberFrame{Room: r.Room, Username: r.Username, Action: r.Action, By: r.By}.Encode()
		touched := getTouched()
		e.hub.mu.RLock()
		seen := map[*conn]bool{}
		for s := range e.hub.rooms[r.Room] {
			if !seen[s.c] {
				seen[s.c] = true
				if s.c.push(frame, chatevent.TypeMember) {
					*touched = append(*touched, s.c)
				}
			}
		}
		for c := range e.hub.users[r.Username] {
			if !seen[c] {
				seen[c] = true
				if c.push(frame, chatevent.TypeMember) {
					*touched = append(*touched, c)
				}
			}
		}
		e.hub.mu.RUnlock()
		flushTouched(touched)
		e.revokeWhere(r.Room, func(c *conn) bool { return c.id.Username == r.Username })
	}
}

// revokeWhere ends the subscriptions of room held by connections that
// match and may no longer join it (they get left {room}).
func (e *Edge) revokeWhere(room string, match func(*conn) bool) {
	acl := e.aclState()
	var revoked []*sub
	e.hub.mu.RLock()
	for s := range e.hub.rooms[room] {
		if match(s.c) && !acl.MayJoin(room, s.c.id.Username, s.c.id.Admin) {
			revoked = append(revoked, s)
		}
	}
	e.hub.mu.RUnlock()
	e.revoke(revoked)
}

// recheck revokes s if its user may no longer join its room: a join that
// checked before a ban or removal was applied and registered after the
// record's revocation scan.
func (e *Edge) recheck(s *sub) {
	if !e.aclState().MayJoin(s.room, s.c.id.Username, s.c.id.Admin) {
		e.revoke([]*sub{s})
	}
}

// revoke ends subscriptions (each once) and tells their connections.
func (e *Edge) revoke(revoked []*sub) {
	if len(revoked) == 0 {
		return
	}
	touched := getTouched()
	for _, s := range revoked {
		if s.revoked.CompareAndSwap(false, true) {
			e.hub.removeSub(s)
			e.presence.left(s.c.id.Username, s.room)
			if s.c.push(chatevent.LeftFrame{Room: s.room}.Encode(), chatevent.TypeLeft) {
				*touched = append(*touched, s.c)
			}
		}
	}
	flushTouched(touched)
}

// dropRevoked forgets the subscriptions the ACL revoked (called by the
// reader goroutine, which owns c.rooms).
func (c *conn) dropRevoked() {
	for room, s := range c.rooms {
		if s.revoked.Load() {
			delete(c.rooms, room)
		}
	}
}

// typingGate remembers when each conversation last forwarded a typing
// notice from one connection.
type typingGate struct {
	mu   sync.Mutex
	last map[string]time.Time
	all  *rate.Limiter // across conversations; made on first use
}

// typingPerSecond bounds the typing notices one connection forwards per
// second across all its conversations (burst typingBurst).
const (
	typingPerSecond = 3
	typingBurst     = 5
)

// typingInterval is the least time between two forwarded typing notices of
// one connection in one conversation; the ones between are dropped.
const typingInterval = time.Second

func (g *typingGate) allow(conv string, now time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.last == nil {
		g.last = map[string]time.Time{}
	}
	if t, ok := g.last[conv]; ok && now.Sub(t) < typingInterval {
		return false
	}
	if g.all == nil {
		g.all = rate.NewLimiter(typingPerSecond, typingBurst)
	}
	if !g.all.AllowN(now, 1) {
		return false
	}
	if len(g.last) >= 64 { // a connection types in a few conversations at once
		for k, t := range g.last {
			if now.Sub(t) >= typingInterval {
				delete(g.last, k)
			}
		}
	}
	g.last[conv] = now
	return true
}

func (e *Edge) handleTyping(ctx context.Context, c *conn, f chatevent.Frame) {
	user := c.id.Username
	var key string
	if f.Room != "" {
		if s := c.rooms[f.Room]; s == nil || s.revoked.Load() {
			e.sendError(ctx, c, chatevent.CodeForbidden, fmt.Sprintf("join room %q before typing in it", f.Room), f.ClientID)
			return
		}
		if !e.allowed(ctx, c, func() bool { return e.aclState().MayWrite(f.Room, user, c.id.Admin) }) {
			e.sendError(ctx, c, chatevent.CodeForbidden, fmt.Sprintf("you may not write in room %q", f.Room), f.ClientID)
			return
		}
		key = chatevent.RoomKey(f.Room)
	} else {
		if !e.allowed(ctx, c, func() bool { return chatevent.MayMessage(user, f.Target, e.aclState()) }) {
			e.sendError(ctx, c, chatevent.CodeForbidden, fmt.Sprintf("you may not send private messages to %q", f.Target), f.ClientID)
			return
		}
		key = chatevent.DMKey(user, f.Target)
	}
	if !c.typing.allow(key, time.Now()) {
		e.m.typingDropped.Inc()
		return
	}
	frame := chatevent.TypingFrame{Room: f.Room, Target: f.Target, Username: user}.Encode()
	e.typingOut.append([]byte(key), frame, nil, func(_ int64, err error) {
		if err != nil {
			e.log.Debug("typing notice not appended", "err", err)
		}
	})
}

// typingSource tails every partition of chat.typing from the end.
type typingSource struct {
	k     kafkaio.Config
	start []int64
}

func newTypingSource(ctx context.Context, k kafkaio.Config, partitions int) (*typingSource, error) {
	s := &typingSource{k: k, start: make([]int64, partitions)}
	for p := range s.start {
		_, next, err := k.Offsets(ctx, k.TypingTopic, p)
		if err != nil {
			return nil, err
		}
		s.start[p] = next
	}
	return s, nil
}

// runTyping delivers typing notices: a room's to its subscribers other than
// the typer, a DM's to the target's connections. Notices older than
// chatevent.TypingTTL are dropped.
func (e *Edge) runTyping(ctx context.Context) error {
	s := e.typingSrc
	done := make(chan error, len(s.start))
	for p, off := range s.start {
		go func() {
			done <- tailPartition(ctx, s.k, s.k.TypingTopic, p, off, e.log, e.m, e.deliverTyping)
		}()
	}
	var err error
	for range s.start {
		if e := <-done; e != nil && err == nil {
			err = e
		}
	}
	return err
}

func (e *Edge) deliverTyping(msgs []kafka.Message) {
	now := time.Now()
	touched := getTouched()
	h := e.hub
	h.mu.RLock()
	for i := range msgs {
		m := &msgs[i]
		if !m.Time.IsZero() && now.Sub(m.Time) > chatevent.TypingTTL {
			continue
		}
		var t chatevent.TypingFrame
		if json.Unmarshal(m.Value, &t) != nil || t.Type != chatevent.TypeTyping || !chatevent.ValidUsername(t.Username) {
			e.m.badRecords.Inc()
			continue
		}
		if t.Room != "" {
			for s := range h.rooms[t.Room] {
				if s.c.id.Username != t.Username && !s.revoked.Load() && s.c.push(m.Value, chatevent.TypeTyping) {
					*touched = append(*touched, s.c)
				}
			}
		} else if t.Target != t.Username {
			for c := range h.users[t.Target] {
				if c.push(m.Value, chatevent.TypeTyping) {
					*touched = append(*touched, c)
				}
			}
		}
	}
	h.mu.RUnlock()
	flushTouched(touched)
}

func (e *Edge) handleRead(ctx context.Context, c *conn, f chatevent.Frame) {
	user := c.id.Username
	if f.Room != "" && !e.allowed(ctx, c, func() bool { return e.aclState().MayRead(f.Room, user, c.id.Admin) }) {
		e.sendError(ctx, c, chatevent.CodeForbidden, fmt.Sprintf("you may not read room %q", f.Room), f.ClientID)
		return
	}
	// A position is one of the conversation's: in the partition that holds
	// it (another would pass history's forward-only rule and reach the
	// DM peer as a receipt for nothing).
	key, parts := chatevent.RoomKey(f.Room), len(e.writer.parts)
	if f.Room == "" {
		key, parts = chatevent.DMKey(user, f.Target), len(e.direct.parts)
	}
	p, _ := chatevent.ParsePos(f.Pos) // validated by DecodeFrame
	if parts > 0 && p.Partition != kafkaio.PartitionFor(key, parts) {
		e.sendError(ctx, c, chatevent.CodeInvalidMessage, fmt.Sprintf("pos %s is not a position of this conversation (its partition is %d)",
			f.Pos, kafkaio.PartitionFor(key, parts)), f.ClientID)
		return
	}
	// A read is a durable append: it costs what a message costs.
	if !c.limiter.Allow() {
		r := e.rateLimited()
		e.sendError(ctx, c, r.code, r.msg, f.ClientID)
		return
	}
	// Nor one past the partition's end (it would mark every later message
	// read, and send the peer a receipt for messages not yet written).
	topic := e.cfg.Kafka.RoomsTopic
	if f.Room == "" {
		topic = e.cfg.Kafka.DirectTopic
	}
	if !e.ends.written(ctx, e.cfg.Kafka, topic, p) {
		e.sendError(ctx, c, chatevent.CodeInvalidMessage, fmt.Sprintf("pos %s is past the end of the conversation", f.Pos), f.ClientID)
		return
	}
	if err := c.acquireInFlight(ctx); err != nil {
		return
	}
	ev := chatevent.Event{ID: chatevent.NewID(), Type: chatevent.TypeRead, Room: f.Room, Target: f.Target, Username: user,
		Timestamp: chatevent.FormatTime(time.Now()), Pos: f.Pos}
	e.appendAsync(ctx, &ev, func(err error) {
		c.releaseInFlight()
		if err != nil {
			e.m.errors.WithLabelValues(chatevent.CodeUnavailable).Inc()
			c.send(chatevent.ErrorFrame{Code: chatevent.CodeUnavailable,
				Message: "the read position was not recorded; send it again", ClientID: f.ClientID}.Encode(), chatevent.TypeError)
		}
	})
}

// handleEdit relays an edit or delete frame to history, which owns the
// messages: it checks that the message exists and that the user may change
// it, and appends the edit or delete event to the message's conversation.
// The answer is an ack with the message's id, or not_found, forbidden or
// unavailable.
func (e *Edge) handleEdit(ctx context.Context, c *conn, f chatevent.Frame) {
	cid := f.ClientID
	if !c.id.Expires.IsZero() && !time.Now().Before(c.id.Expires) {
		return // the expiry timer is closing the connection: nothing more is changed
	}
	if e.cfg.HistoryURL == "" && e.cfg.HistoryHandler == nil {
		e.sendError(ctx, c, chatevent.CodeUnavailable, "edits are not available on this edge (no -edge.history-url)", cid)
		return
	}
	// A resend of a client_id is answered from the first attempt, as for
	// chat (see sends): after its ack with the same ack, and nothing is
	// changed again (a late retry of an edit must not undo a newer one).
	answer := e.answerer(c, cid, "history could not change the message; retry")
	key := changeKey(f.Type, f.ID, cid)
	ev, action := e.sends.begin(c.id.Username, key, fingerprint(f.Type, f.ID, "", f.Content), func() chatevent.Event {
		return chatevent.Event{ID: f.ID, Type: f.Type, Content: f.Content}
	}, answer)
	switch action {
	case sendConflict:
		e.refuseReusedClientID(ctx, c, cid)
		return
	case sendWait:
		e.m.resends.Inc()
		return
	case sendAcked:
		e.m.resends.Inc()
		answer(ev.ID, nil)
		return
	case sendRetry:
		e.m.resends.Inc()
	case sendAppend:
		if !c.limiter.Allow() {
			r := e.rateLimited()
			e.sends.forget(c.id.Username, key, r)
			e.sendError(ctx, c, r.code, r.msg, cid)
			return
		}
	}
	// What is relayed is the first attempt's frame (ev), whatever a
	// resend's says.
	err := e.relayEdit(ctx, c, ev, cid)
	var r *refusal
	if errors.As(err, &r) {
		e.sends.forget(c.id.Username, key, err) // refused: a later resend is a new attempt
	} else {
		e.sends.finish(c.id.Username, key, err)
	}
	answer(ev.ID, err)
}

// relayEdit asks history to apply ev (an edit or delete of message ev.ID).
// It returns nil when history applied it, a *refusal when history refused
// it, and another error when the outcome is unknown.
func (e *Edge) relayEdit(ctx context.Context, c *conn, ev chatevent.Event, cid string) error {
	method, body := http.MethodDelete, []byte(nil)
	if ev.Type == chatevent.TypeEdit {
		method = http.MethodPatch
		body, _ = json.Marshal(map[string]string{"content": ev.Content, "client_id": cid})
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	go func() { // the connection ended: nobody waits for the answer
		select {
		case <-c.dead:
			cancel()
		case <-rctx.Done():
		}
	}()
	base := strings.TrimRight(e.cfg.HistoryURL, "/")
	if e.cfg.HistoryHandler != nil {
		base = "http://in-process"
	}
	u := base + "/v1/messages/" + url.PathEscape(ev.ID)
	req, err := http.NewRequestWithContext(rctx, method, u, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.id.Token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := e.historyClient.Do(req)
	if err != nil {
		e.log.Warn("edit relay failed", "err", err)
		return err
	}
	defer res.Body.Close()
	var answer struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	b, _ := io.ReadAll(io.LimitReader(res.Body, 64<<10))
	json.Unmarshal(b, &answer)
	msg := answer.Error.Message
	switch {
	case res.StatusCode == http.StatusOK || res.StatusCode == http.StatusCreated:
		return nil
	case res.StatusCode == http.StatusNotFound:
		return &refusal{chatevent.CodeNotFound, fmt.Sprintf("no message %s that you may change", ev.ID)}
	case res.StatusCode == http.StatusUnauthorized:
		// The token expired by history's clock (the connection closes at
		// exp): retrying cannot succeed.
		return &refusal{chatevent.CodeForbidden, "your token has expired; reconnect with a new one"}
	case res.StatusCode == http.StatusForbidden:
		if msg == "" {
			msg = "you may not change this message"
		}
		return &refusal{chatevent.CodeForbidden, msg}
	case res.StatusCode == http.StatusBadRequest:
		if msg == "" {
			msg = "history refused the change"
		}
		return &refusal{chatevent.CodeInvalidMessage, msg}
	default:
		e.log.Warn("edit relay: history answered", "status", res.StatusCode, "code", answer.Error.Code)
		return fmt.Errorf("history answered %d", res.StatusCode)
	}
}

// aclState returns the ACL the edge enforces (empty until Start).
func (e *Edge) aclState() *chatevent.ACL {
	if e.acl == nil {
		return emptyACL
	}
	return e.acl.ACL()
}

var emptyACL = chatevent.NewACL()

// startConversations loads chat.acl and opens the typing topic's producer
// and tail.
func (e *Edge) startConversations(ctx context.Context, counts map[string]int) error {
	k := e.cfg.Kafka
	f := chatacl.New(k, e.log, func() { e.m.badRecords.Inc() })
	e.loading.Store(true)
	f.OnApply = e.onACL
	e.acl = f // before Start: its goroutines call onACL, which reads it
	if err := f.Start(ctx); err != nil {
		e.acl = nil // Start stopped its goroutines
		return err
	}
	e.loading.Store(false)
	e.aclF.Store(f)
	src, err := newTypingSource(ctx, k, counts[k.TypingTopic])
	if err != nil {
		return err
	}
	e.typingSrc = src
	e.typingOut = newAppender(k, k.TypingTopic, counts[k.TypingTopic])
	e.typingOut.acks = kafka.RequireOne
	e.historyClient = &http.Client{Timeout: 10 * time.Second}
	if e.cfg.HistoryHandler != nil {
		e.historyClient.Transport = handlerTransport{e.cfg.HistoryHandler}
	}
	return nil
}

// handlerTransport serves requests with a handler of this process.
type handlerTransport struct{ h http.Handler }

func (t handlerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	t.h.ServeHTTP(rec, r)
	return rec.Result(), nil
}

// partitionEnds caches the end (next offset) of partitions, to check that
// a read position names a written record: a position below the cached end
// does; one at or past it asks the broker for the end again (read frames
// are rate limited per user, so are these requests).
type partitionEnds struct {
	mu sync.Mutex
	m  map[string]int64 // "topic/partition" → next offset
}

// written reports whether p is a record of topic's partition (true too
// when the broker cannot tell now: a read position is not worth refusing
// for a broker hiccup).
func (pe *partitionEnds) written(ctx context.Context, k kafkaio.Config, topic string, p chatevent.Pos) bool {
	key := topic + "/" + strconv.Itoa(p.Partition)
	pe.mu.Lock()
	next, ok := pe.m[key]
	pe.mu.Unlock()
	if ok && p.Offset < next {
		return true
	}
	qctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	_, next, err := k.Offsets(qctx, topic, p.Partition)
	if err != nil {
		return true
	}
	pe.mu.Lock()
	if pe.m == nil {
		pe.m = map[string]int64{}
	}
	pe.m[key] = max(pe.m[key], next)
	pe.mu.Unlock()
	return p.Offset < next
}
