package main

import (
	"strings"
	"testing"
)

// TestStormVerify: the end-of-run check finds a gap, a duplicate and a
// reordering, forgives a sequence number that was never acknowledged, and
// passes a complete client.
func TestStormVerify(t *testing.T) {
	st := &storm{rooms: make([]stormRoom, 1)}
	r := &st.rooms[0]
	r.name = "storm0"
	for seq := 1; seq <= 10; seq++ {
		r.seq.Store(int64(seq))
		if seq != 7 { // 7 got an error frame: never acknowledged
			r.ack(seq)
		}
	}
	client := func(user string, seqs ...uint32) *stormClient {
		return &stormClient{st: st, user: user, part: -1, seqs: seqs}
	}
	st.clients = []*stormClient{
		client("complete", 1, 2, 3, 4, 5, 6, 7, 8, 9, 10),
		client("without-7", 1, 2, 3, 4, 5, 6, 8, 9, 10),
		client("gap", 1, 2, 3, 6, 8, 9, 10),
		client("dup", 1, 2, 3, 3, 4, 5, 6, 8, 9, 10),
		client("late", 4, 5, 6, 8, 9, 10),
	}
	st.clients[3].posBack = 1
	v := st.verify()
	if v.missing != 2 || v.gapClients != 1 {
		t.Errorf("missing %d at %d clients, want 2 (4-5) at 1", v.missing, v.gapClients)
	}
	if v.dups != 1 || v.dupClients != 1 {
		t.Errorf("duplicates %d at %d clients, want 1 at 1", v.dups, v.dupClients)
	}
	if v.posBack != 1 || v.lateFirst != 1 {
		t.Errorf("out of order %d, late first %d, want 1 and 1", v.posBack, v.lateFirst)
	}
	if v.unackedMissing != 4 { // 7 at without-7, gap, dup, late
		t.Errorf("unacknowledged and missing %d, want 4", v.unackedMissing)
	}
	if got := strings.Join(v.examples, "\n"); !strings.Contains(got, "gap (room storm0): missing 4-5") {
		t.Errorf("examples do not name the gap:\n%s", got)
	}
}

func TestRanges(t *testing.T) {
	if got := ranges([]int{1, 2, 3, 5, 7, 8}); got != "1-3,5,7-8" {
		t.Errorf("ranges = %q", got)
	}
}

func TestParsePosIn(t *testing.T) {
	p, o, ok := parsePosIn([]byte(`{"type":"chat","room":"r","pos":"11:4096"}`))
	if !ok || p != 11 || o != 4096 {
		t.Errorf("parsePosIn = %d, %d, %v", p, o, ok)
	}
	if _, _, ok := parsePosIn([]byte(`{"type":"chat"}`)); ok {
		t.Error("parsePosIn found a pos in a frame without one")
	}
}

func TestLogMsg(t *testing.T) {
	l := `time=2026-11-30T16:23:52.191Z level=WARN msg="replay failed" component=edge room=storm17 err="x"`
	if got := logMsg(l); got != `"replay failed"` {
		t.Errorf("logMsg = %q", got)
	}
}
