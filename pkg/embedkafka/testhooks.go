package embedkafka

import (
	"sync/atomic"
)

// testHooks lets this package's tests observe the group committer: every
// hook point takes a number from one sequence, so a test can check that a
// response was released only after a round that started after the response
// was written had finished. A nil *testHooks (production) costs nothing.
type testHooks struct {
	ev        atomic.Uint64
	syncErr   func(path string) error // fail an fsync (fault injection)
	onRound   func(roundEvent)
	onRelease func(releaseEvent)
}

// roundEvent describes a finished round.
type roundEvent struct {
	Seq              uint64
	StartEv, EndEv   uint64
	Err              error
	Waiters, Batches int
	Files            []syncedFile
}

// releaseEvent describes a held response that was released.
type releaseEvent struct {
	Key                      int16
	Corr                     int32
	Round                    uint64
	WriteEv                  uint64 // the response's Write call
	RoundStartEv, RoundEndEv uint64
	ReleaseEv                uint64
	Parts                    []string
	ByID                     int // partitions named by topic id in the request
	All                      bool
}

func (t *testHooks) event() uint64 { return t.ev.Add(1) }

func (t *testHooks) roundDone(e roundEvent) {
	if t.onRound != nil {
		t.onRound(e)
	}
}

func (t *testHooks) released(e releaseEvent) {
	if t.onRelease != nil {
		t.onRelease(e)
	}
}
