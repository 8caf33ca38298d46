package history

import (
	"sync"
	"time"
)

// deletes remembers the messages this instance appended a delete for
// recently. The messages table lags the log (the writer applies the delete
// a moment later), so without it a second delete, or an edit, sent right
// after the first delete would pass the table's check and be appended
// after it: clients would see the deleted message edited again.
type deletes struct {
	mu sync.Mutex
	m  map[string]time.Time
}

// deleteMemory is how long a delete is remembered: far longer than the
// writer takes to apply it.
const (
	deleteMemory     = 10 * time.Minute
	maxDeletesMemory = 100_000
)

// claim records a delete of id about to be appended; false when one was
// already (or is being) appended.
func (d *deletes) claim(id string) bool {
	now := time.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.m == nil {
		d.m = map[string]time.Time{}
	}
	if t, ok := d.m[id]; ok && now.Sub(t) < deleteMemory {
		return false
	}
	if len(d.m) >= maxDeletesMemory {
		for k, t := range d.m {
			if now.Sub(t) >= deleteMemory {
				delete(d.m, k)
			}
		}
		if len(d.m) >= maxDeletesMemory {
			clear(d.m) // by then the table has applied them all
		}
	}
	d.m[id] = now
	return true
}

// release forgets a claim whose append failed.
func (d *deletes) release(id string) {
	d.mu.Lock()
	delete(d.m, id)
	d.mu.Unlock()
}

// has reports whether a delete of id was appended recently.
func (d *deletes) has(id string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	t, ok := d.m[id]
	return ok && time.Since(t) < deleteMemory
}
