// Package lifecycle runs a process's components and serves its health
// endpoints.
//
// # Order
//
// Start: components start one at a time, in the order given; each Start
// returns before the next begins, so a component may use everything
// started before it. Once all have started the process is ready (/readyz)
// and every component's Run is called, each in its own goroutine with its
// own context.
//
// Shutdown begins when the runner's context ends (then /readyz answers 503
// for ShutdownDelay first, so load balancers stop sending new clients) or
// when a Run fails. Components are then shut down one at a time in reverse
// start order; for each one:
//
//  1. its routes close (see Mux): new requests get 503 unavailable;
//  2. if it is a Drainer, its Drain is called while its Run still runs
//     (bounded by StopTimeout): an edge tells its clients to reconnect
//     elsewhere and keeps delivering to them until each has gone;
//  3. its Run context is cancelled, and the runner waits for Run to return
//     (at most ExitTimeout);
//  4. its Stop is called (bounded by StopTimeout).
//
// So Stop never runs while the component's own Run still does (a Stop may
// close what Run writes to), and whatever a component depends on (started
// before it) is still running while it stops. When a Start fails, the
// components already started are stopped in reverse order the same way
// (their Run never began) and Run returns the Start's error.
//
// # Routes
//
// A Mux serves the process's own routes (health, metrics) at all times,
// and each component's routes only while the component runs: from the
// moment its Start returned nil until its shutdown begins. Before and
// after, they answer 503 {"error":{"code":"unavailable","message":…}}, so
// no request (WebSocket upgrades included) reaches a half-initialised or
// stopped component.
//
// # Health
//
// /healthz is liveness (the process answers); /readyz is readiness: every
// component started, none stopping, and every registered check passes.
package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Component is one service in the process. New does no I/O; Start dials,
// listens and joins, returning once the component is ready; Run blocks until
// its context ends or a fatal error; Stop releases resources before its
// context's deadline. Stop is called for every component whose Start
// succeeded, after its Run has returned (or did not within the runner's
// ExitTimeout).
type Component interface {
	Name() string
	Start(ctx context.Context) error
	Run(ctx context.Context) error
	Stop(ctx context.Context) error
}

// Drainer is a Component that winds down while its Run still runs: Drain
// is the first step of its shutdown, before Run is cancelled.
type Drainer interface {
	Drain(ctx context.Context) error
}

// Check is a readiness check; a non-nil error makes /readyz answer 503.
type Check func(ctx context.Context) error

// Runner runs components. The zero value is usable; fill the exported
// fields before Run.
type Runner struct {
	Log *slog.Logger
	// ShutdownDelay is how long /readyz reports 503 before components are
	// shut down, so load balancers stop sending new clients (default 0).
	ShutdownDelay time.Duration
	// ExitTimeout bounds the wait for a component's Run to return once its
	// context is cancelled (default 10s); Stop is called after it anyway.
	ExitTimeout time.Duration
	// StopTimeout bounds each component's Stop (default 30s).
	StopTimeout time.Duration
	// Mux, when set, has its components' routes opened when their Start
	// returns nil and closed when their shutdown begins.
	Mux *Mux

	ready  atomic.Bool
	mu     sync.Mutex
	checks map[string]Check
}

// AddCheck registers a readiness check under name.
func (r *Runner) AddCheck(name string, c Check) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.checks == nil {
		r.checks = map[string]Check{}
	}
	r.checks[name] = c
}

// Ready reports whether all components have started and none is stopping.
func (r *Runner) Ready() bool { return r.ready.Load() }

// task is a started component and its Run.
type task struct {
	c      Component
	cancel context.CancelFunc
	done   chan struct{} // closed when Run returned; nil if Run never began
}

// Run starts components in order and runs them until ctx ends (a clean
// shutdown, nil error) or one fails (its error). Components are shut down in
// reverse order either way, as the package documentation describes.
func (r *Runner) Run(ctx context.Context, components ...Component) error {
	log := r.log()
	var started []*task
	shutdown := func() {
		for i := len(started) - 1; i >= 0; i-- {
			r.shutdown(log, started[i])
		}
	}
	for _, c := range components {
		t0 := time.Now()
		if err := c.Start(ctx); err != nil {
			shutdown()
			return fmt.Errorf("start %s: %w", c.Name(), err)
		}
		log.Info("component started", "component", c.Name(), "took", time.Since(t0).Round(time.Millisecond))
		started = append(started, &task{c: c})
		r.Mux.open(c)
	}
	r.ready.Store(true)
	log.Info("ready")

	var (
		failMu  sync.Mutex
		failure error
	)
	failed := make(chan struct{})
	for _, t := range started {
		var rctx context.Context
		rctx, t.cancel = context.WithCancel(context.Background())
		t.done = make(chan struct{})
		go func() {
			defer close(t.done)
			err := t.c.Run(rctx)
			if err == nil || errors.Is(err, context.Canceled) {
				return
			}
			failMu.Lock()
			defer failMu.Unlock()
			if failure == nil {
				failure = fmt.Errorf("%s: %w", t.c.Name(), err)
				close(failed)
			}
		}()
	}
	select {
	case <-ctx.Done():
		r.ready.Store(false)
		log.Info("shutting down", "delay", r.ShutdownDelay)
		if r.ShutdownDelay > 0 {
			delay := time.NewTimer(r.ShutdownDelay)
			select {
			case <-delay.C:
			case <-failed:
				delay.Stop()
			}
		}
	case <-failed:
		r.ready.Store(false)
		log.Error("shutting down after a failure")
	}
	shutdown()
	failMu.Lock()
	defer failMu.Unlock()
	return failure
}

func (r *Runner) log() *slog.Logger {
	if r.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return r.Log
}

// shutdown closes t's routes, cancels its Run and waits for it (bounded),
// then stops it.
func (r *Runner) shutdown(log *slog.Logger, t *task) {
	exitTimeout := r.ExitTimeout
	if exitTimeout <= 0 {
		exitTimeout = 10 * time.Second
	}
	stopTimeout := r.StopTimeout
	if stopTimeout <= 0 {
		stopTimeout = 30 * time.Second
	}
	name := t.c.Name()
	r.Mux.close(t.c)
	if d, ok := t.c.(Drainer); ok && t.done != nil {
		dctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
		if err := d.Drain(dctx); err != nil {
			log.Error("component drain failed", "component", name, "err", err)
		}
		cancel()
	}
	if t.done != nil {
		t.cancel()
		exited := time.NewTimer(exitTimeout)
		select {
		case <-t.done:
			exited.Stop()
		case <-exited.C:
			log.Warn("component run did not return after its context was cancelled; stopping it anyway", "component", name, "waited", exitTimeout)
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	if err := t.c.Stop(sctx); err != nil {
		log.Error("component stop failed", "component", name, "err", err)
	} else {
		log.Info("component stopped", "component", name)
	}
	if t.done != nil {
		select {
		case <-t.done:
		case <-sctx.Done():
			log.Error("component run still running after stop", "component", name)
		}
	}
}

// Handlers is where HealthHandler registers: an *http.ServeMux or a *Mux.
type Handlers interface {
	HandleFunc(pattern string, handler func(http.ResponseWriter, *http.Request))
}

// HealthHandler serves /healthz and /readyz on mux.
func (r *Runner) HealthHandler(mux Handlers) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := r.Readiness(req.Context()); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not ready: %v\n", err)
			return
		}
		fmt.Fprintln(w, "ready")
	})
}

// Readiness is what /readyz answers: nil when every component has started,
// none is stopping and every check passes (within 2 s), else why not.
func (r *Runner) Readiness(ctx context.Context) error {
	if !r.Ready() {
		return errors.New("starting or stopping")
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	r.mu.Lock()
	checks := make(map[string]Check, len(r.checks))
	for k, v := range r.checks {
		checks[k] = v
	}
	r.mu.Unlock()
	for name, c := range checks {
		if err := c(ctx); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	return nil
}
