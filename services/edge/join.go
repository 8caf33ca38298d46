package edge

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/chatsys/chat/pkg/chatevent"
)

// replayQueueWait bounds how long a resume waits for its turn.
const replayQueueWait = 2 * time.Minute

// join subscribes c to a room. With since, the room's events after that
// position are replayed from the log before live ones, with no gap and no
// duplicate: the subscription is registered first and buffers live events
// while the replay runs, then drops every event at or before the last one
// replayed.
func (e *Edge) join(ctx context.Context, c *conn, f chatevent.Frame) {
	c.dropRevoked()
	if !e.allowed(ctx, c, func() bool { return e.aclState().MayJoin(f.Room, c.id.Username, c.id.Admin) }) {
		// The same answer whether the room is private, or the user banned.
		e.sendError(ctx, c, chatevent.CodeForbidden, fmt.Sprintf("you may not join room %q", f.Room), f.ClientID)
		return
	}
	if old := c.rooms[f.Room]; old != nil {
		e.hub.removeSub(old) // a re-join: the membership stays
	} else if len(c.rooms) >= e.cfg.MaxRooms {
		e.sendError(ctx, c, chatevent.CodeTooManyRooms, fmt.Sprintf("a connection may join at most %d rooms", e.cfg.MaxRooms), f.ClientID)
		return
	}
	s := &sub{c: c, room: f.Room, last: -1, replaying: f.Since != ""}
	e.hub.addSub(s)
	if c.rooms[f.Room] == nil {
		e.presence.joined(c.id.Username, f.Room)
	}
	c.rooms[f.Room] = s
	// A ban or removal applied between the check above and addSub did not
	// see this subscription: check again now that it is registered.
	e.recheck(s)
	if s.revoked.Load() {
		return // it got left {room}
	}
	if f.Since == "" {
		c.sendWait(ctx, chatevent.JoinedFrame{Room: f.Room}.Encode(), chatevent.TypeJoined)
		return
	}
	after, _ := chatevent.ParsePos(f.Since) // validated by DecodeFrame
	// At most MaxReplays resumes read the log at once; the others queue
	// here (their live events buffer meanwhile), so a reconnect storm
	// after a drain does not turn into thousands of concurrent log scans.
	// The wait has its own bound; the resume's own 30 s start with its turn.
	e.m.replaysWaiting.Inc()
	var slotErr error
	wait := time.NewTimer(replayQueueWait)
	select {
	case e.replaySlots <- struct{}{}:
	case <-c.dead:
		slotErr = errClosed
	case <-wait.C:
		slotErr = errors.New("resume queue wait exceeded")
	}
	wait.Stop()
	e.m.replaysWaiting.Dec()
	if slotErr == nil {
		defer func() { <-e.replaySlots }()
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var end chatevent.Pos
	var ok bool
	err := slotErr
	if err == nil {
		end, ok, err = e.src.Resume(rctx, f.Room, after)
	}
	if err != nil {
		e.hub.removeSub(s)
		delete(c.rooms, f.Room)
		e.presence.left(c.id.Username, f.Room)
		e.sendError(ctx, c, chatevent.CodeUnavailable, "cannot read the log to resume; join again", f.ClientID)
		return
	}
	c.sendWait(ctx, chatevent.JoinedFrame{Room: f.Room, Recovered: &ok}.Encode(), chatevent.TypeJoined)
	if ok {
		// The client has everything up to since: a live event at or before
		// it (one this edge's tail reads only now, while the replay range
		// is empty) must not be delivered again.
		s.mu.Lock()
		s.last = max(s.last, after.Offset)
		s.mu.Unlock()
		err = e.src.Replay(rctx, f.Room, after, end, func(d *delivery) error {
			s.mu.Lock()
			s.last = d.pos.Offset
			s.mu.Unlock()
			return c.sendWait(rctx, d.frame, d.ev.Type)
		})
		if err != nil {
			if !errors.Is(err, errClosed) {
				e.log.Warn("replay failed", "room", f.Room, "err", err)
				c.kill(CloseInternal, "resume failed: reconnect and join with since")
			}
			return
		}
	}
	for {
		p := s.takePending()
		if len(p) == 0 {
			return
		}
		for _, d := range p {
			s.mu.Lock()
			fresh := d.pos.Offset > s.last
			if fresh {
				s.last = d.pos.Offset
			}
			s.mu.Unlock()
			if fresh {
				if err := c.sendWait(rctx, d.frame, d.ev.Type); err != nil {
					return
				}
			}
		}
	}
}
