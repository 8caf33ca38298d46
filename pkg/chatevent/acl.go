package chatevent

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Topic chat.acl carries the state of conversations: who owns a room and
// whether it is private, each user's membership of a room (role, muted,
// banned), and who blocked whom. Every record is the whole current state of
// its key, so the topic is compacted (cleanup.policy=compact) and any
// process rebuilds the same tables by reading it from the start:
//
//	key:     ACLRecord.Key(): "room:<room>", "member:<room>:<user>" or
//	         "block:<user>:<blocked>".
//	value:   ACLRecord JSON.
//	headers: as on chat.rooms.
//
// History appends these records (it serves the management API); edges,
// the router and history apply them.
const TopicACL = "chat.acl"

// Topic chat.typing carries typing notices (TypingFrame values, key RoomKey
// or DMKey) with a short retention; it is never stored in history, and its
// writes are not fsynced (acks=1).
const TopicTyping = "chat.typing"

// TypingTTL is how long a typing notice lasts unless another follows; an
// edge drops notices older than this instead of delivering them late.
const TypingTTL = 5 * time.Second

// ACL record types.
const (
	ACLRoom   = "room"   // a room was created: Room, Username (owner), Private
	ACLMember = "member" // Username's membership of Room after Action
	ACLBlock  = "block"  // Username blocked (Blocked) or unblocked Target
)

// Roles in a room. The empty role is "not a member".
const (
	RoleOwner  = "owner"
	RoleMod    = "mod"
	RoleMember = "member"
)

// Membership actions (ACLRecord.Action, MemberFrame.Action).
const (
	ActionInvite = "invite"
	ActionRemove = "remove"
	ActionMod    = "mod"
	ActionUnmod  = "unmod"
	ActionMute   = "mute"
	ActionUnmute = "unmute"
	ActionBan    = "ban"
	ActionUnban  = "unban"
)

// MemberActions lists the membership actions.
var MemberActions = []string{ActionInvite, ActionRemove, ActionMod, ActionUnmod, ActionMute, ActionUnmute, ActionBan, ActionUnban}

// ACLRecord is one chat.acl record.
type ACLRecord struct {
	Type string `json:"type"`
	Room string `json:"room,omitempty"`
	// Username is the owner (room), the member (member) or the blocker (block).
	Username string `json:"username"`
	// Target is the blocked user (block).
	Target  string `json:"target,omitempty"`
	Private bool   `json:"private,omitempty"`
	Action  string `json:"action,omitempty"`
	// Role, Muted and Banned are the membership after Action.
	Role    string `json:"role,omitempty"`
	Muted   bool   `json:"muted,omitempty"`
	Banned  bool   `json:"banned,omitempty"`
	Blocked bool   `json:"blocked,omitempty"`
	// By is who made the change.
	By        string `json:"by,omitempty"`
	Timestamp string `json:"timestamp"`
}

// Key returns the record's Kafka key.
func (r *ACLRecord) Key() string {
	switch r.Type {
	case ACLRoom:
		return "room:" + r.Room
	case ACLMember:
		return "member:" + r.Room + ":" + r.Username
	default:
		return "block:" + r.Username + ":" + r.Target
	}
}

// Encode returns the record's JSON.
func (r *ACLRecord) Encode() []byte { return mustMarshal(r) }

// DecodeACL parses and validates a chat.acl record value.
func DecodeACL(b []byte) (ACLRecord, error) {
	var r ACLRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return ACLRecord{}, fmt.Errorf("%w: %v", ErrInvalidEvent, err)
	}
	bad := func(format string, args ...any) (ACLRecord, error) {
		return ACLRecord{}, fmt.Errorf("%w: acl: %s", ErrInvalidEvent, fmt.Sprintf(format, args...))
	}
	if !ValidUsername(r.Username) {
		return bad("username %q is not valid", r.Username)
	}
	switch r.Type {
	case ACLRoom:
		if !ValidRoom(r.Room) {
			return bad("room %q is not valid", r.Room)
		}
	case ACLMember:
		if !ValidRoom(r.Room) {
			return bad("room %q is not valid", r.Room)
		}
		if !slices.Contains(MemberActions, r.Action) {
			return bad("unknown action %q", r.Action)
		}
		switch r.Role {
		case "", RoleMember, RoleMod, RoleOwner:
		default:
			return bad("unknown role %q", r.Role)
		}
	case ACLBlock:
		if !ValidUsername(r.Target) {
			return bad("target %q is not valid", r.Target)
		}
	default:
		return bad("unknown type %q", r.Type)
	}
	return r, nil
}

// Membership is a user's standing in a room.
type Membership struct {
	Role   string `json:"role,omitempty"` // "" (not a member), member, mod or owner
	Muted  bool   `json:"muted,omitempty"`
	Banned bool   `json:"banned,omitempty"`
}

// After returns the membership that action leaves.
func (m Membership) After(action string) Membership {
	switch action {
	case ActionInvite:
		if m.Role == "" {
			m.Role = RoleMember
		}
		m.Banned = false
	case ActionRemove:
		m = Membership{Banned: m.Banned, Muted: m.Muted} // a mute outlives the membership: leaving does not lift it
	case ActionMod:
		m.Role, m.Banned = RoleMod, false
	case ActionUnmod:
		if m.Role == RoleMod {
			m.Role = RoleMember
		}
	case ActionMute:
		m.Muted = true
	case ActionUnmute:
		m.Muted = false
	case ActionBan:
		m = Membership{Banned: true, Muted: m.Muted}
	case ActionUnban:
		m.Banned = false
	}
	return m
}

// RoomInfo is a room's access state. A room without one is public and
// ownerless (any user may join; only admins moderate it).
type RoomInfo struct {
	Room    string                `json:"room"`
	Private bool                  `json:"private"`
	Owner   string                `json:"owner,omitempty"`
	Members map[string]Membership `json:"-"`
}

// ACL is the conversation state folded from chat.acl: rooms, memberships
// and blocks, with the policy every service enforces. It is safe for
// concurrent use.
type ACL struct {
	mu      sync.RWMutex
	rooms   map[string]*RoomInfo
	members map[string]map[string]Membership // room → user (rooms without a room record too)
	blocks  map[string]map[string]struct{}   // blocker → blocked
	origin  uint64                           // random, for Version
	version atomic.Uint64                    // records applied
}

// NewACL returns an empty ACL: every room public, nobody blocked.
func NewACL() *ACL {
	return &ACL{origin: rand.Uint64(), rooms: map[string]*RoomInfo{}, members: map[string]map[string]Membership{}, blocks: map[string]map[string]struct{}{}}
}

// Apply folds one record into the state. Records are states, not deltas:
// applying one twice is harmless. A room record for a room that already
// has one is ignored (the first creation in the log wins).
func (a *ACL) Apply(r ACLRecord) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.version.Add(1)
	switch r.Type {
	case ACLRoom:
		if a.rooms[r.Room] == nil {
			a.rooms[r.Room] = &RoomInfo{Room: r.Room, Private: r.Private, Owner: r.Username}
		}
	case ACLMember:
		m := Membership{Role: r.Role, Muted: r.Muted, Banned: r.Banned}
		ms := a.members[r.Room]
		if m == (Membership{}) {
			delete(ms, r.Username)
			if len(ms) == 0 {
				delete(a.members, r.Room)
			}
			return
		}
		if ms == nil {
			ms = map[string]Membership{}
			a.members[r.Room] = ms
		}
		ms[r.Username] = m
	case ACLBlock:
		bs := a.blocks[r.Username]
		if !r.Blocked {
			delete(bs, r.Target)
			if len(bs) == 0 {
				delete(a.blocks, r.Username)
			}
			return
		}
		if bs == nil {
			bs = map[string]struct{}{}
			a.blocks[r.Username] = bs
		}
		bs[r.Target] = struct{}{}
	}
}

// Version names the state: it stays the same while nothing is applied (a
// new version may still hold the same state), and no other ACL value (in
// this process or another) has the same version, so it can make an HTTP
// validator. Read it before reading what it validates.
func (a *ACL) Version() string {
	return strconv.FormatUint(a.origin, 36) + "." + strconv.FormatUint(a.version.Load(), 36)
}

// Room returns the room's access state and whether it has one (a room
// created through the API); without one the room is public and ownerless.
func (a *ACL) Room(room string) (RoomInfo, bool) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	ri := a.rooms[room]
	if ri == nil {
		return RoomInfo{Room: room}, false
	}
	return RoomInfo{Room: ri.Room, Private: ri.Private, Owner: ri.Owner}, true
}

// Member returns user's membership of room; the room's owner always has
// RoleOwner.
func (a *ACL) Member(room, user string) Membership {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.memberLocked(room, user)
}

func (a *ACL) memberLocked(room, user string) Membership {
	m := a.members[room][user]
	if ri := a.rooms[room]; ri != nil && ri.Owner == user {
		m.Role, m.Banned = RoleOwner, false
	}
	return m
}

// Members returns every recorded membership of room (members, and
// non-members who are banned or muted), owner included.
func (a *ACL) Members(room string) map[string]Membership {
	a.mu.RLock()
	defer a.mu.RUnlock()
	out := make(map[string]Membership, len(a.members[room])+1)
	for u := range a.members[room] {
		out[u] = a.memberLocked(room, u)
	}
	if ri := a.rooms[room]; ri != nil {
		out[ri.Owner] = a.memberLocked(room, ri.Owner)
	}
	return out
}

// Rooms returns the rooms with an access state that user may read (every
// room for an admin), sorted by name.
func (a *ACL) Rooms(user string, admin bool) []RoomInfo {
	a.mu.RLock()
	defer a.mu.RUnlock()
	var out []RoomInfo
	for _, ri := range a.rooms {
		if !ri.Private || admin || a.memberLocked(ri.Room, user).Role != "" {
			out = append(out, RoomInfo{Room: ri.Room, Private: ri.Private, Owner: ri.Owner})
		}
	}
	slices.SortFunc(out, func(x, y RoomInfo) int {
		if x.Room < y.Room {
			return -1
		}
		if x.Room > y.Room {
			return 1
		}
		return 0
	})
	return out
}

// MayRead reports whether user may read room (history, search, member
// list): any room that is not private, a private one only as a member.
func (a *ACL) MayRead(room, user string, admin bool) bool {
	if admin {
		return true
	}
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.mayReadLocked(room, user)
}

func (a *ACL) mayReadLocked(room, user string) bool {
	ri := a.rooms[room]
	return ri == nil || !ri.Private || a.memberLocked(room, user).Role != ""
}

// MayJoin reports whether user may join room: MayRead and not banned.
func (a *ACL) MayJoin(room, user string, admin bool) bool {
	if admin {
		return true
	}
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.mayReadLocked(room, user) && !a.memberLocked(room, user).Banned
}

// MayWrite reports whether user may post to room: MayJoin and not muted.
// (It runs for every chat frame: one read lock, a few map lookups.)
func (a *ACL) MayWrite(room, user string, admin bool) bool {
	if admin {
		return true
	}
	a.mu.RLock()
	defer a.mu.RUnlock()
	m := a.memberLocked(room, user)
	return a.mayReadLocked(room, user) && !m.Banned && !m.Muted
}

// MayModerate reports whether user moderates room (deletes others'
// messages, mutes, bans, invites, removes): its owner, its mods, admins.
func (a *ACL) MayModerate(room, user string, admin bool) bool {
	if admin {
		return true
	}
	r := a.Member(room, user).Role
	return r == RoleOwner || r == RoleMod
}

// MayManage reports whether actor may apply action to subject in room:
// nobody removes, bans, mods or unmods the owner; otherwise admins
// anything; the owner anything to anyone but themself; mods invite,
// remove, mute, unmute, ban and unban users who are neither owner nor mod;
// mod and unmod are the owner's. Anyone may remove themself (leave a
// private room for good) unless they own it.
func (a *ACL) MayManage(room, actor, action, subject string, admin bool) bool {
	am, sm := a.Member(room, actor), a.Member(room, subject)
	if sm.Role == RoleOwner && (action == ActionRemove || action == ActionBan || action == ActionMod || action == ActionUnmod) {
		return false // an owner stays the owner: nobody removes, bans or demotes them
	}
	if admin {
		return true
	}
	if actor == subject {
		return action == ActionRemove && am.Role != RoleOwner && am.Role != ""
	}
	switch am.Role {
	case RoleOwner:
		return true
	case RoleMod:
		return action != ActionMod && action != ActionUnmod && sm.Role != RoleOwner && sm.Role != RoleMod
	}
	return false
}

// Blocked reports whether blocker has blocked blocked.
func (a *ACL) Blocked(blocker, blocked string) bool {
	a.mu.RLock()
	defer a.mu.RUnlock()
	_, ok := a.blocks[blocker][blocked]
	return ok
}

// BlockedBy returns the users blocker has blocked, sorted.
func (a *ACL) BlockedBy(blocker string) []string {
	a.mu.RLock()
	defer a.mu.RUnlock()
	out := make([]string, 0, len(a.blocks[blocker]))
	for u := range a.blocks[blocker] {
		out = append(out, u)
	}
	slices.Sort(out)
	return out
}
