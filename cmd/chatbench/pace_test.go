package main

import (
	"testing"
	"time"
)

// pace makes every send due before the step's end, whatever the phase,
// and returns once the step is over.
func TestPaceSendsEverySendDueInTheStep(t *testing.T) {
	for _, tc := range []struct {
		rate  float64
		d     time.Duration
		phase float64
		want  int
	}{
		{100, 200 * time.Millisecond, 0, 20},
		{100, 200 * time.Millisecond, 0.999, 20},
		{20, 200 * time.Millisecond, 0.5, 4},
		{5, 300 * time.Millisecond, 0.9, 1}, // due at 180 ms; the next at 380 ms is past the step
	} {
		t0 := time.Now()
		n, err := pace(tc.rate, tc.d, tc.phase, func() error { return nil })
		if err != nil || n != tc.want {
			t.Errorf("pace(%v/s, %v, phase %v) = %d, %v; want %d sends", tc.rate, tc.d, tc.phase, n, err, tc.want)
		}
		if el := time.Since(t0); el < tc.d {
			t.Errorf("pace(%v/s, %v, phase %v) returned after %v, before the step ended", tc.rate, tc.d, tc.phase, el)
		}
	}
}
