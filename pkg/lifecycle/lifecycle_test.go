package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// journal records what components did, in order.
type journal struct {
	mu     sync.Mutex
	events []string
}

func (j *journal) add(format string, args ...any) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.events = append(j.events, fmt.Sprintf(format, args...))
}

func (j *journal) list() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return slices.Clone(j.events)
}

// part is a component that journals its calls. Its Run waits for its
// context (or, with runIgnoresCtx, for Stop), then returns runErr.
type part struct {
	name          string
	j             *journal
	startErr      error
	runErr        error
	runFailNow    bool // Run returns runErr at once
	runIgnoresCtx bool
	startGate     chan struct{} // Start waits for it, when not nil
	stopGate      chan struct{} // Stop waits for it, when not nil
	stopped       chan struct{}
}

func newPart(name string, j *journal) *part {
	return &part{name: name, j: j, stopped: make(chan struct{})}
}

func (p *part) Name() string { return p.name }

func (p *part) Start(ctx context.Context) error {
	if p.startGate != nil {
		select {
		case <-p.startGate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if p.startErr != nil {
		p.j.add("start-failed %s", p.name)
		return p.startErr
	}
	p.j.add("start %s", p.name)
	return nil
}

func (p *part) Run(ctx context.Context) error {
	if p.runFailNow {
		p.j.add("run-failed %s", p.name)
		return p.runErr
	}
	if p.runIgnoresCtx {
		<-p.stopped
	} else {
		<-ctx.Done()
	}
	p.j.add("run-returned %s", p.name)
	return p.runErr
}

func (p *part) Stop(ctx context.Context) error {
	if p.stopGate != nil {
		<-p.stopGate
	}
	p.j.add("stop %s", p.name)
	close(p.stopped)
	return nil
}

// runAsync runs components and returns a channel with Run's result.
func runAsync(ctx context.Context, r *Runner, cs ...Component) chan error {
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx, cs...) }()
	return done
}

func waitReady(t *testing.T, r *Runner, done chan error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !r.Ready() {
		select {
		case err := <-done:
			t.Fatalf("Run returned %v before ready", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("not ready within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func waitDone(t *testing.T, done chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return within 20s")
		return nil
	}
}

// TestShutdownCancelsRunBeforeStop: in reverse start order, each
// component's Run is cancelled and has returned before its Stop.
func TestShutdownCancelsRunBeforeStop(t *testing.T) {
	j := &journal{}
	a, b, c := newPart("a", j), newPart("b", j), newPart("c", j)
	ctx, cancel := context.WithCancel(context.Background())
	r := &Runner{}
	done := runAsync(ctx, r, a, b, c)
	waitReady(t, r, done)
	cancel()
	if err := waitDone(t, done); err != nil {
		t.Fatalf("Run = %v after a clean shutdown, want nil", err)
	}
	want := []string{"start a", "start b", "start c",
		"run-returned c", "stop c", "run-returned b", "stop b", "run-returned a", "stop a"}
	if got := j.list(); !slices.Equal(got, want) {
		t.Fatalf("events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestRunFailureShutsDownInReverse: a failing Run ends the others, in
// reverse order, Run before Stop, and is Run's error.
func TestRunFailureShutsDownInReverse(t *testing.T) {
	j := &journal{}
	a, b, c := newPart("a", j), newPart("b", j), newPart("c", j)
	boom := errors.New("boom")
	b.runFailNow, b.runErr = true, boom
	r := &Runner{}
	err := waitDone(t, runAsync(context.Background(), r, a, b, c))
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "b: boom") {
		t.Fatalf("Run = %v, want b's failure", err)
	}
	got := j.list()
	var tail []string
	for _, e := range got {
		if strings.HasPrefix(e, "stop") || strings.HasPrefix(e, "run-returned") {
			tail = append(tail, e)
		}
	}
	want := []string{"run-returned c", "stop c", "stop b", "run-returned a", "stop a"}
	if !slices.Equal(tail, want) {
		t.Fatalf("events:\n%s\nwant, in this order:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestStartFailureStopsTheStarted: a Start error stops what started, in
// reverse order, and no Run begins.
func TestStartFailureStopsTheStarted(t *testing.T) {
	j := &journal{}
	a, b, c, d := newPart("a", j), newPart("b", j), newPart("c", j), newPart("d", j)
	c.startErr = errors.New("no broker")
	err := waitDone(t, runAsync(context.Background(), &Runner{}, a, b, c, d))
	if err == nil || !strings.Contains(err.Error(), "start c: no broker") {
		t.Fatalf("Run = %v, want start c's error", err)
	}
	want := []string{"start a", "start b", "start-failed c", "stop b", "stop a"}
	if got := j.list(); !slices.Equal(got, want) {
		t.Fatalf("events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestExitTimeoutBoundsTheWaitForRun: a Run that ignores its context does
// not hold shutdown up beyond ExitTimeout; its Stop is still called.
func TestExitTimeoutBoundsTheWaitForRun(t *testing.T) {
	j := &journal{}
	a, b := newPart("a", j), newPart("b", j)
	b.runIgnoresCtx = true // returns only once Stop was called
	ctx, cancel := context.WithCancel(context.Background())
	r := &Runner{ExitTimeout: 100 * time.Millisecond}
	done := runAsync(ctx, r, a, b)
	waitReady(t, r, done)
	cancel()
	if err := waitDone(t, done); err != nil {
		t.Fatalf("Run = %v", err)
	}
	want := []string{"start a", "start b", "stop b", "run-returned b", "run-returned a", "stop a"}
	if got := j.list(); !slices.Equal(got, want) {
		t.Fatalf("events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func (j *journal) has(e string) bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return slices.Contains(j.events, e)
}

// drainPart is a part that is a Drainer.
type drainPart struct{ *part }

func (d drainPart) Drain(context.Context) error {
	d.j.add("drain %s", d.name)
	return nil
}

// TestDrainBeforeRunIsCancelled: a Drainer drains while its Run still
// runs, then Run is cancelled, then Stop.
func TestDrainBeforeRunIsCancelled(t *testing.T) {
	j := &journal{}
	a, b := newPart("a", j), drainPart{newPart("b", j)}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Runner{}
	done := runAsync(ctx, r, a, b)
	waitReady(t, r, done)
	cancel()
	if err := waitDone(t, done); err != nil {
		t.Fatal(err)
	}
	want := []string{"start a", "start b", "drain b", "run-returned b", "stop b", "run-returned a", "stop a"}
	if got := j.list(); !slices.Equal(got, want) {
		t.Fatalf("events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
