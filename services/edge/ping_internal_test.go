package edge

import (
	"testing"
	"time"
)

func TestPingSlots(t *testing.T) {
	for _, tc := range []struct {
		interval time.Duration
		want     int
	}{
		{50 * time.Millisecond, 1}, // shorter than a tick: every connection at once
		{100 * time.Millisecond, 1},
		{time.Second, 10},
		{25 * time.Second, 250},
		{time.Hour, pingMaxSlots}, // capped: the tick grows instead
	} {
		if got := pingSlots(tc.interval); got != tc.want {
			t.Errorf("pingSlots(%v) = %d, want %d", tc.interval, got, tc.want)
		}
	}
}
