package history

import (
	"sync"
	"time"

	"github.com/chatsys/chat/pkg/chatevent"
)

// changes remembers the edits and deletes this instance appended recently.
//
// The messages table lags the log (the writer applies a change a moment
// later), so without it an edit sent right after a delete would pass the
// table's check and be appended after the delete (clients would see the
// deleted message change again), and a second delete would be appended
// too. And an edit retried with its client_id after an answer that was
// lost (a timeout: the edit may have landed) is answered with the first
// one's event instead of being appended again, after a newer edit.
type changes struct {
	mu      sync.Mutex
	deletes map[string]time.Time    // message id → when its delete was appended
	edits   map[string]appendedEdit // editKey → the edit appended
}

type appendedEdit struct {
	ev chatevent.Event
	at time.Time
}

// changeMemory is how long a change is remembered: far longer than the
// writer takes to apply it, and than the edge's retries.
const (
	changeMemory     = 10 * time.Minute
	maxChangesMemory = 100_000
)

func editKey(user, id, clientID string) string { return user + "\x00" + id + "\x00" + clientID }

// deleted records that a delete of id was appended.
func (c *changes) deleted(id string) {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.deletes == nil {
		c.deletes = map[string]time.Time{}
	}
	c.sweepLocked(now)
	c.deletes[id] = now
}

// isDeleted reports whether a delete of id was appended recently.
func (c *changes) isDeleted(id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.deletes[id]
	return ok && time.Since(t) < changeMemory
}

// edited records an edit appended for clientID (none: nothing to record).
func (c *changes) edited(user, clientID string, ev chatevent.Event) {
	if clientID == "" {
		return
	}
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.edits == nil {
		c.edits = map[string]appendedEdit{}
	}
	c.sweepLocked(now)
	c.edits[editKey(user, ev.ID, clientID)] = appendedEdit{ev, now}
}

// edit returns the edit appended recently for (user, id, clientID).
func (c *changes) edit(user, id, clientID string) (chatevent.Event, bool) {
	if clientID == "" {
		return chatevent.Event{}, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.edits[editKey(user, id, clientID)]
	return e.ev, ok && time.Since(e.at) < changeMemory
}

// sweepLocked drops what is older than changeMemory once the memory is
// full, and everything if it is still full (by then the table has applied
// it all).
func (c *changes) sweepLocked(now time.Time) {
	if len(c.deletes)+len(c.edits) < maxChangesMemory {
		return
	}
	for k, t := range c.deletes {
		if now.Sub(t) >= changeMemory {
			delete(c.deletes, k)
		}
	}
	for k, e := range c.edits {
		if now.Sub(e.at) >= changeMemory {
			delete(c.edits, k)
		}
	}
	if len(c.deletes)+len(c.edits) >= maxChangesMemory {
		clear(c.deletes)
		clear(c.edits)
	}
}
