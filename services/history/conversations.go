package history

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/chatsys/chat/pkg/auth"
	"github.com/chatsys/chat/pkg/chatevent"
)

// syncBudget bounds the follower sync before a refusal (docs/conversations.md).
const syncBudget = 2 * time.Second

// maxBody bounds a request body.
const maxBody = 64 << 10

type route struct {
	pattern string
	timeout time.Duration
	fn      handlerFunc
}

// routes lists the API. Reads are bounded by DBTimeout; routes that append
// to the log also get the time of a sync and a durable write.
func (h *History) routes() []route {
	read, write := h.cfg.DBTimeout, h.cfg.DBTimeout+syncBudget+h.cfg.Kafka.WriteTimeout
	return []route{
		{"GET /v1/rooms/{room}/messages", read, h.roomMessages},
		{"GET /v1/dm/{peer}/messages", read, h.dmMessages},
		{"GET /v1/search", read, h.search},
		{"GET /v1/dm", read, h.dmSince},
		{"GET /v1/rooms", read, h.listRooms},
		{"POST /v1/rooms/{room}", write, h.createRoom},
		{"GET /v1/rooms/{room}", read, h.getRoom},
		{"POST /v1/rooms/{room}/{action}", write, h.manage},
		{"GET /v1/blocks", read, h.listBlocks},
		{"PUT /v1/blocks/{user}", write, h.setBlock(true)},
		{"DELETE /v1/blocks/{user}", write, h.setBlock(false)},
		{"GET /v1/unread", read, h.unread},
		{"GET /v1/messages/{id}", read, h.getMessage},
		{"PATCH /v1/messages/{id}", write, h.editMessage},
		{"DELETE /v1/messages/{id}", write, h.deleteMessage},
	}
}

// allowed reports whether ok holds for the ACL state; before answering no,
// it syncs the follower with the topic's end (at most syncBudget) and asks
// again, so a change made a moment ago on another process counts.
func (h *History) allowed(ctx context.Context, ok func(*chatevent.ACL) bool) bool {
	if ok(h.acl.ACL()) {
		return true
	}
	h.acl.SyncBriefly(ctx, syncBudget)
	return ok(h.acl.ACL())
}

func (h *History) mayRead(ctx context.Context, room string, id auth.Identity) bool {
	return h.allowed(ctx, func(a *chatevent.ACL) bool { return a.MayRead(room, id.Username, id.Admin) })
}

// roomExists answers errNotFound unless room has a room record or a stored
// message.
func (h *History) roomExists(ctx context.Context, db *pgxpool.Pool, room string) error {
	if _, ok := h.acl.ACL().Room(room); ok {
		return nil
	}
	var exists bool
	if err := db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM messages WHERE conversation = $1)`, "room:"+room).Scan(&exists); err != nil {
		return err
	}
	if exists {
		return nil
	}
	h.acl.SyncBriefly(ctx, syncBudget) // created a moment ago elsewhere?
	if _, ok := h.acl.ACL().Room(room); ok {
		return nil
	}
	return errNotFound
}

// invalidRoomName is the answer to a room name the contract does not allow.
func invalidRoomName(room string) error {
	return invalidRequest("room %q is not valid: want [a-z0-9][a-z0-9_-]{0,63}", room)
}

// readableRoom answers errNotFound unless the caller may read room and it exists.
func (h *History) readableRoom(ctx context.Context, db *pgxpool.Pool, room string, id auth.Identity) error {
	if !chatevent.ValidRoom(room) {
		return invalidRoomName(room)
	}
	if !h.mayRead(ctx, room, id) {
		return errNotFound
	}
	return h.roomExists(ctx, db, room)
}

// decodeBody reads a JSON object into dst; an empty body is accepted when
// optional.
func decodeBody(r *http.Request, dst any, optional bool) error {
	b, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		return invalidRequest("reading the body: %v", err)
	}
	if len(b) > maxBody {
		return invalidRequest("the body is larger than %d bytes", maxBody)
	}
	if len(strings.TrimSpace(string(b))) == 0 {
		if optional {
			return nil
		}
		return invalidRequest("a JSON body is required")
	}
	// Decoded as strictly as a WebSocket frame (chatevent.DecodeObject).
	if err := chatevent.DecodeObject(b, dst); err != nil {
		return invalidRequest("the body is not valid: %v", err)
	}
	return nil
}

// RoomSummary is a room in GET /v1/rooms; Role is the caller's.
type RoomSummary struct {
	Room    string `json:"room"`
	Private bool   `json:"private"`
	Owner   string `json:"owner,omitempty"`
	Role    string `json:"role"`
	// Muted is whether the caller is muted in the room (may read, not write).
	Muted bool `json:"muted"`
}

// Member is one membership in GET /v1/rooms/{room}.
type Member struct {
	Username string `json:"username"`
	Role     string `json:"role"`
	Muted    bool   `json:"muted"`
	Banned   bool   `json:"banned"`
}

// RoomDetail answers GET /v1/rooms/{room}.
type RoomDetail struct {
	RoomSummary
	Members []Member `json:"members"`
}

func (h *History) summary(ri chatevent.RoomInfo, user string) RoomSummary {
	m := h.acl.ACL().Member(ri.Room, user)
	return RoomSummary{Room: ri.Room, Private: ri.Private, Owner: ri.Owner, Role: m.Role, Muted: m.Muted}
}

// listRooms answers with a validator (the ACL's version and the user): a
// client polling the list gets 304 until a record changes the ACL.
func (h *History) listRooms(_ *http.Request, id auth.Identity, _ *pgxpool.Pool) (any, error) {
	acl := h.acl.ACL()
	u := fnv.New64a()
	fmt.Fprintf(u, "%s\x00%t", id.Username, id.Admin)
	return validated{
		etag: `W/"` + acl.Version() + "." + strconv.FormatUint(u.Sum64(), 36) + `"`,
		body: func() any {
			out := []RoomSummary{}
			for _, ri := range acl.Rooms(id.Username, id.Admin) {
				out = append(out, h.summary(ri, id.Username))
			}
			return map[string]any{"rooms": out}
		},
	}, nil
}

func (h *History) getRoom(r *http.Request, id auth.Identity, db *pgxpool.Pool) (any, error) {
	room := r.PathValue("room")
	if err := h.readableRoom(r.Context(), db, room, id); err != nil {
		return nil, err
	}
	acl := h.acl.ACL()
	ri, _ := acl.Room(room)
	d := RoomDetail{RoomSummary: h.summary(ri, id.Username), Members: []Member{}}
	for u, m := range acl.Members(room) {
		d.Members = append(d.Members, Member{Username: u, Role: m.Role, Muted: m.Muted, Banned: m.Banned})
	}
	slices.SortFunc(d.Members, func(a, b Member) int { return strings.Compare(a.Username, b.Username) })
	return d, nil
}

// created answers 201 Created with its body.
type created struct{ body any }

func (h *History) createRoom(r *http.Request, id auth.Identity, db *pgxpool.Pool) (any, error) {
	room := r.PathValue("room")
	if !chatevent.ValidRoom(room) {
		return nil, invalidRoomName(room)
	}
	var body struct {
		Private bool `json:"private"`
	}
	if err := decodeBody(r, &body, true); err != nil {
		return nil, err
	}
	ctx := r.Context()
	h.acl.SyncBriefly(ctx, syncBudget) // a room created a moment ago elsewhere conflicts
	if _, ok := h.acl.ACL().Room(room); ok {
		return nil, errConflict
	}
	var exists bool
	if err := db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM messages WHERE conversation = $1)`, "room:"+room).Scan(&exists); err != nil {
		return nil, err
	}
	if exists {
		return nil, errConflict
	}
	rec := chatevent.ACLRecord{Type: chatevent.ACLRoom, Room: room, Username: id.Username, Private: body.Private, By: id.Username}
	if err := h.appender.Append(ctx, rec); err != nil {
		return nil, err
	}
	ri, _ := h.acl.ACL().Room(room)
	if ri.Owner != id.Username || ri.Private != body.Private {
		// Another creation came first in the log. Compaction keeps the
		// last record of the key, which is now this losing one: append
		// the winner's again, so a process that reads the compacted topic
		// from its start folds the same owner.
		win := chatevent.ACLRecord{Type: chatevent.ACLRoom, Room: room, Username: ri.Owner, Private: ri.Private, By: ri.Owner}
		if err := h.appender.Append(ctx, win); err != nil {
			h.log.Warn("re-asserting a room's first creation failed", "room", room, "err", err)
		}
		return nil, errConflict
	}
	return created{h.summary(ri, id.Username)}, nil
}

// MemberChange answers POST /v1/rooms/{room}/{action}: the membership after it.
type MemberChange struct {
	Room     string `json:"room"`
	Username string `json:"username"`
	Action   string `json:"action"`
	Role     string `json:"role"`
	Muted    bool   `json:"muted"`
	Banned   bool   `json:"banned"`
}

func (h *History) manage(r *http.Request, id auth.Identity, db *pgxpool.Pool) (any, error) {
	room, action := r.PathValue("room"), r.PathValue("action")
	if !slices.Contains(chatevent.MemberActions, action) {
		return nil, errNotFound
	}
	var body struct {
		Username string `json:"username"`
	}
	if err := decodeBody(r, &body, false); err != nil {
		return nil, err
	}
	if !chatevent.ValidUsername(body.Username) {
		return nil, badRequest("invalid_user", "username %q is not valid", body.Username)
	}
	ctx := r.Context()
	if err := h.readableRoom(ctx, db, room, id); err != nil {
		// Admins also mute and ban in a room nobody has written in yet
		// (people may be in it: the ban holds from their first message).
		// No roles there: a member or mod of a room that does not exist
		// would hold a role in the private room someone creates under
		// that name later.
		moderation := []string{chatevent.ActionMute, chatevent.ActionUnmute, chatevent.ActionBan, chatevent.ActionUnban}
		if !id.Admin || !errors.Is(err, errNotFound) || !slices.Contains(moderation, action) {
			return nil, err
		}
	}
	if !h.allowed(ctx, func(a *chatevent.ACL) bool { return a.MayManage(room, id.Username, action, body.Username, id.Admin) }) {
		return nil, errForbidden
	}
	// A membership record is the whole state after the action, computed
	// from the current one: one change at a time per membership, across
	// every history instance sharing the database (an advisory lock), from
	// state synced with the log (a ban made a moment ago elsewhere is not
	// undone by a mute computed from before it).
	unlock, err := lockMembership(ctx, db, room, body.Username)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if err := h.acl.Sync(ctx); err != nil {
		return nil, err
	}
	m := h.acl.ACL().Member(room, body.Username).After(action)
	rec := chatevent.ACLRecord{Type: chatevent.ACLMember, Room: room, Username: body.Username, Action: action,
		Role: m.Role, Muted: m.Muted, Banned: m.Banned, By: id.Username}
	if err := h.appender.Append(ctx, rec); err != nil {
		return nil, err
	}
	now := h.acl.ACL().Member(room, body.Username)
	return MemberChange{Room: room, Username: body.Username, Action: action, Role: now.Role, Muted: now.Muted, Banned: now.Banned}, nil
}

func (h *History) listBlocks(_ *http.Request, id auth.Identity, _ *pgxpool.Pool) (any, error) {
	return map[string]any{"blocked": h.acl.ACL().BlockedBy(id.Username)}, nil
}

func (h *History) setBlock(blocked bool) handlerFunc {
	return func(r *http.Request, id auth.Identity, _ *pgxpool.Pool) (any, error) {
		user := r.PathValue("user")
		if !chatevent.ValidUsername(user) {
			return nil, badRequest("invalid_user", "username %q is not valid", user)
		}
		if user == id.Username {
			return nil, invalidRequest("you cannot block yourself")
		}
		rec := chatevent.ACLRecord{Type: chatevent.ACLBlock, Username: id.Username, Target: user, Blocked: blocked}
		if err := h.appender.Append(r.Context(), rec); err != nil {
			return nil, err
		}
		return map[string]any{"username": user, "blocked": blocked}, nil
	}
}

// Unread is one conversation of GET /v1/unread.
type Unread struct {
	Room     string `json:"room,omitempty"`
	Peer     string `json:"peer,omitempty"`
	Unread   int    `json:"unread"`
	LastRead string `json:"last_read,omitempty"`
	// PeerRead is how far the peer of a DM has read it (a read receipt
	// that outlives the live read event).
	PeerRead string `json:"peer_read,omitempty"`
}

// maxUnread bounds the conversations of one GET /v1/unread, and
// maxUnreadCount each count (a room read long ago need not be counted to
// its end: clients show "999+").
const (
	maxUnread      = 1000
	maxUnreadCount = 1000
)

// unread answers, per conversation with a read position (rooms the caller
// may read, DMs) and per DM peer the caller has messages with, the count
// of messages from others after the read position (deleted ones excluded).
func (h *History) unread(r *http.Request, id auth.Identity, db *pgxpool.Pool) (any, error) {
	rows, err := db.Query(r.Context(), `
		WITH convs AS (
			SELECT conversation, log_partition AS p, log_offset AS o FROM read_state WHERE username = $1
			UNION ALL
			SELECT d.conversation, NULL::integer, NULL::bigint FROM (
				SELECT conversation FROM messages WHERE username = $1 AND target IS NOT NULL AND type = 'private'
				UNION
				SELECT conversation FROM messages WHERE target = $1 AND type = 'private') d
			WHERE NOT EXISTS (SELECT 1 FROM read_state s WHERE s.username = $1 AND s.conversation = d.conversation))
		SELECT c.conversation, c.p, c.o,
			(SELECT count(*) FROM (SELECT 1 FROM messages m
			 WHERE m.conversation = c.conversation AND m.type IN ('chat', 'private') AND NOT m.deleted
			   AND m.username <> $1 AND (c.p IS NULL OR (m.log_partition, m.log_offset) > (c.p, c.o))
			 LIMIT $3) capped),
			peer.log_partition, peer.log_offset
		FROM convs c
		LEFT JOIN read_state peer ON c.conversation LIKE 'dm:%' AND peer.conversation = c.conversation AND peer.username <> $1
		ORDER BY c.conversation LIMIT $2`, id.Username, maxUnread, maxUnreadCount)
	if err != nil {
		return nil, err
	}
	out := []Unread{}
	acl := h.acl.ACL()
	for rows.Next() {
		var conv string
		var p *int
		var o *int64
		var n int
		var pp *int
		var po *int64
		if err := rows.Scan(&conv, &p, &o, &n, &pp, &po); err != nil {
			return nil, err
		}
		u := Unread{Unread: n}
		if p != nil && o != nil {
			u.LastRead = chatevent.Pos{Partition: *p, Offset: *o}.String()
		}
		if pp != nil && po != nil {
			u.PeerRead = chatevent.Pos{Partition: *pp, Offset: *po}.String()
		}
		if room, ok := strings.CutPrefix(conv, "room:"); ok {
			if !acl.MayRead(room, id.Username, id.Admin) {
				continue
			}
			u.Room = room
		} else if pair, ok := strings.CutPrefix(conv, "dm:"); ok {
			a, b, _ := strings.Cut(pair, ":")
			u.Peer = a
			if a == id.Username {
				u.Peer = b
			}
		} else {
			continue
		}
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return map[string]any{"conversations": out}, nil
}

// messageByID returns a stored message, or errNotFound.
func messageByID(ctx context.Context, db *pgxpool.Pool, r *http.Request) (Message, error) {
	u, err := uuid.Parse(r.PathValue("id"))
	if err != nil {
		return Message{}, invalidRequest("id must be a message id (UUID)")
	}
	rows, err := db.Query(ctx, selectMessage+`WHERE id = $1`, u.String())
	if err != nil {
		return Message{}, err
	}
	msgs, err := scanMessages(rows)
	if err != nil {
		return Message{}, err
	}
	if len(msgs) == 0 {
		return Message{}, errNotFound
	}
	return msgs[0], nil
}

// storedMessageByID is messageByID for a change to the message: a message
// acknowledged a moment ago may not be stored yet (history lags the log by
// its batch wait, more under load), so for an id minted in the last two
// minutes it waits up to syncBudget for the row before answering not_found.
func storedMessageByID(ctx context.Context, db *pgxpool.Pool, r *http.Request) (Message, error) {
	m, err := messageByID(ctx, db, r)
	if !errors.Is(err, errNotFound) {
		return m, err
	}
	u, _ := uuid.Parse(r.PathValue("id")) // parsed by messageByID
	if u.Version() != 7 {
		return m, err
	}
	sec, nsec := u.Time().UnixTime()
	if age := time.Since(time.Unix(sec, nsec)); age > 2*time.Minute || age < -time.Minute {
		return m, err
	}
	deadline := time.NewTimer(syncBudget)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return m, err
		case <-deadline.C:
			return m, err
		case <-tick.C:
		}
		if m, err = messageByID(ctx, db, r); !errors.Is(err, errNotFound) {
			return m, err
		}
	}
}

// isDM reports whether m belongs to a private conversation.
func isDM(m *Message) bool { return m.Type == chatevent.TypePrivate }

// mayReadMessage: a DM's parties; a room message's readers.
func (h *History) mayReadMessage(ctx context.Context, m *Message, id auth.Identity) bool {
	if isDM(m) {
		return m.Username == id.Username || m.Target == id.Username
	}
	return h.mayRead(ctx, m.Room, id)
}

func (h *History) getMessage(r *http.Request, id auth.Identity, db *pgxpool.Pool) (any, error) {
	m, err := messageByID(r.Context(), db, r)
	if err != nil {
		return nil, err
	}
	if !h.mayReadMessage(r.Context(), &m, id) {
		return nil, errNotFound
	}
	return m, nil
}

// appendEvent appends an edit or delete of m to its conversation's topic
// with its key, setting ev.Pos.
func (h *History) appendEvent(ctx context.Context, m *Message, ev *chatevent.Event) error {
	if isDM(m) {
		return h.direct.write(ctx, chatevent.DMKey(m.Username, m.Target), ev)
	}
	return h.rooms.write(ctx, chatevent.RoomKey(m.Room), ev)
}

func (h *History) editMessage(r *http.Request, id auth.Identity, db *pgxpool.Pool) (any, error) {
	var body struct {
		Content  string `json:"content"`
		ClientID string `json:"client_id"`
	}
	if err := decodeBody(r, &body, false); err != nil {
		return nil, err
	}
	if msg := checkContent(body.Content, h.cfg.MaxContentChars); msg != "" {
		return nil, invalidRequest("%s", msg)
	}
	if !utf8.ValidString(body.ClientID) || len(body.ClientID) > chatevent.MaxClientIDBytes || strings.IndexByte(body.ClientID, 0) >= 0 {
		return nil, invalidRequest("client_id must be at most %d bytes of UTF-8 text without NUL", chatevent.MaxClientIDBytes)
	}
	ctx := r.Context()
	m, err := storedMessageByID(ctx, db, r)
	if err != nil {
		return nil, err
	}
	// A retry of an edit this instance appended (its answer was lost) is
	// answered with it, not appended again after a newer one.
	if ev, ok := h.changes.edit(id.Username, m.ID, body.ClientID); ok {
		return ev, nil
	}
	// Only the author's own message, not deleted, that they may still read.
	if (m.Type != chatevent.TypeChat && m.Type != chatevent.TypePrivate) || m.Deleted || h.changes.isDeleted(m.ID) || m.Username != id.Username ||
		!h.mayReadMessage(ctx, &m, id) {
		return nil, errNotFound
	}
	if isDM(&m) {
		// A user the peer blocked may not change what the peer sees.
		if !h.allowed(ctx, func(a *chatevent.ACL) bool { return chatevent.MayMessage(id.Username, m.Target, a) }) {
			return nil, errForbidden
		}
	} else if !h.allowed(ctx, func(a *chatevent.ACL) bool { return a.MayWrite(m.Room, id.Username, id.Admin) }) {
		return nil, errForbidden // muted or banned
	}
	now := chatevent.FormatTime(time.Now())
	ev := chatevent.Event{ID: m.ID, Type: chatevent.TypeEdit, Room: m.Room, Target: m.Target, Username: m.Username,
		Content: body.Content, Timestamp: now, EditedAt: now, ClientID: body.ClientID}
	if err := h.appendEvent(ctx, &m, &ev); err != nil {
		return nil, err
	}
	h.changes.edited(id.Username, body.ClientID, ev)
	return ev, nil
}

func (h *History) deleteMessage(r *http.Request, id auth.Identity, db *pgxpool.Pool) (any, error) {
	ctx := r.Context()
	m, err := storedMessageByID(ctx, db, r)
	if err != nil {
		return nil, err
	}
	if m.Type != chatevent.TypeChat && m.Type != chatevent.TypePrivate {
		return nil, errNotFound
	}
	if isDM(&m) {
		if m.Username != id.Username {
			return nil, errNotFound
		}
	} else if !h.allowed(ctx, func(a *chatevent.ACL) bool {
		return (m.Username == id.Username && a.MayRead(m.Room, id.Username, id.Admin)) || a.MayModerate(m.Room, id.Username, id.Admin)
	}) {
		return nil, errNotFound
	}
	ev := chatevent.Event{ID: m.ID, Type: chatevent.TypeDelete, Room: m.Room, Target: m.Target, Username: id.Username,
		Timestamp: chatevent.FormatTime(time.Now())}
	if m.Deleted || h.changes.isDeleted(m.ID) {
		return ev, nil // already deleted: nothing to append
	}
	// Two deletes at once both append (the second is a no-op for the
	// writer and for clients): neither is answered before its append.
	if err := h.appendEvent(ctx, &m, &ev); err != nil {
		return nil, err
	}
	h.changes.deleted(m.ID)
	return ev, nil
}

// checkContent validates an edit's content like a chat frame's.
func checkContent(content string, maxChars int) string {
	n := utf8.RuneCountInString(content)
	switch {
	case n == 0:
		return "content must not be empty"
	case n > maxChars:
		return fmt.Sprintf("content is longer than %d characters", maxChars)
	case !utf8.ValidString(content):
		return "content is not valid UTF-8"
	case strings.IndexByte(content, 0) >= 0:
		return "content must not contain NUL (U+0000)"
	}
	return ""
}

// lockMembership takes the PostgreSQL advisory lock of one membership
// (session level, on a connection of its own) and returns its release.
func lockMembership(ctx context.Context, db *pgxpool.Pool, room, user string) (func(), error) {
	key := "chat.member:" + room + ":" + user
	conn, err := db.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock(hashtextextended($1, 0))`, key); err != nil {
		conn.Release()
		return nil, err
	}
	return func() {
		uctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := conn.Exec(uctx, `SELECT pg_advisory_unlock(hashtextextended($1, 0))`, key); err != nil {
			// The lock goes with the session: do not return it to the pool.
			conn.Conn().Close(uctx)
		}
		conn.Release()
	}, nil
}
