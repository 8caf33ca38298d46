package edge

import "testing"

// SetMaxPresenceQueued sets the bound of queued presence records for the
// edges t starts after it, until t's end (after they stopped: call it
// before starting them).
func SetMaxPresenceQueued(t *testing.T, n int64) {
	old := maxPresenceQueued
	maxPresenceQueued = n
	t.Cleanup(func() { maxPresenceQueued = old })
}
