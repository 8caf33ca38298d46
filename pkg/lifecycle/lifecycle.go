// Package lifecycle runs a process's components: it starts them in order,
// marks the process ready once all have started, runs them until the context
// ends or one fails, and stops them in reverse order.
//
// It also serves the process's health endpoints: /healthz (liveness: the
// process answers) and /readyz (readiness: every component started, none
// stopping, and every registered check passes).
package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
)

// Component is one service in the process. New does no I/O; Start dials,
// listens and joins, returning once the component is ready; Run blocks until
// its context ends or a fatal error; Stop releases resources before its
// context's deadline. Stop is called for every component whose Start
// succeeded, after the runner's shutdown begins.
type Component interface {
	Name() string
	Start(ctx context.Context) error
	Run(ctx context.Context) error
	Stop(ctx context.Context) error
}

// Check is a readiness check; a non-nil error makes /readyz answer 503.
type Check func(ctx context.Context) error

// Runner runs components. The zero value is not usable; fill the exported
// fields before Run.
type Runner struct {
	Log *slog.Logger
	// ShutdownDelay is how long /readyz reports 503 before components are
	// stopped, so load balancers stop sending new clients (default 0).
	ShutdownDelay time.Duration
	// StopTimeout bounds each component's Stop (default 30s).
	StopTimeout time.Duration

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

// Run starts components in order and runs them until ctx ends (a clean
// shutdown, nil error) or one fails (its error). Components are stopped in
// reverse order either way.
func (r *Runner) Run(ctx context.Context, components ...Component) error {
	log := r.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	stopTimeout := r.StopTimeout
	if stopTimeout <= 0 {
		stopTimeout = 30 * time.Second
	}
	var started []Component
	stopAll := func() {
		for i := len(started) - 1; i >= 0; i-- {
			c := started[i]
			sctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
			if err := c.Stop(sctx); err != nil {
				log.Error("component stop failed", "component", c.Name(), "err", err)
			} else {
				log.Info("component stopped", "component", c.Name())
			}
			cancel()
		}
	}
	for _, c := range components {
		t0 := time.Now()
		if err := c.Start(ctx); err != nil {
			stopAll()
			return fmt.Errorf("start %s: %w", c.Name(), err)
		}
		log.Info("component started", "component", c.Name(), "took", time.Since(t0).Round(time.Millisecond))
		started = append(started, c)
	}
	r.ready.Store(true)
	log.Info("ready")

	runCtx, cancelRun := context.WithCancel(context.Background())
	defer cancelRun()
	g, gctx := errgroup.WithContext(runCtx)
	for _, c := range started {
		g.Go(func() error {
			if err := c.Run(gctx); err != nil && !errors.Is(err, context.Canceled) {
				return fmt.Errorf("%s: %w", c.Name(), err)
			}
			return nil
		})
	}
	var failure error
	select {
	case <-ctx.Done():
		log.Info("shutting down", "delay", r.ShutdownDelay)
		r.ready.Store(false)
		time.Sleep(r.ShutdownDelay)
	case <-gctx.Done():
		r.ready.Store(false)
	}
	stopAll()
	cancelRun()
	if err := g.Wait(); err != nil {
		failure = err
	}
	return failure
}

// HealthHandler serves /healthz and /readyz on mux.
func (r *Runner) HealthHandler(mux *http.ServeMux) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !r.Ready() {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "not ready: starting or stopping")
			return
		}
		ctx, cancel := context.WithTimeout(req.Context(), 2*time.Second)
		defer cancel()
		r.mu.Lock()
		checks := make(map[string]Check, len(r.checks))
		for k, v := range r.checks {
			checks[k] = v
		}
		r.mu.Unlock()
		for name, c := range checks {
			if err := c(ctx); err != nil {
				w.WriteHeader(http.StatusServiceUnavailable)
				fmt.Fprintf(w, "not ready: %s: %v\n", name, err)
				return
			}
		}
		fmt.Fprintln(w, "ready")
	})
}

// HTTPServer is a Component that serves an http.Handler on an address. Start
// listens (so the port is bound when Start returns); Stop shuts the server
// down gracefully. Hijacked connections (WebSockets) are not waited for:
// their owner drains them.
type HTTPServer struct {
	Addr    string
	Handler http.Handler
	Log     *slog.Logger

	srv  *http.Server
	errc chan error
	addr string
}

// Name returns "http".
func (s *HTTPServer) Name() string { return "http" }

// ListenAddr returns the bound address; valid after Start.
func (s *HTTPServer) ListenAddr() string { return s.addr }

// Start binds the listener and starts serving.
func (s *HTTPServer) Start(ctx context.Context) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.Addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", s.Addr, err)
	}
	s.addr = ln.Addr().String()
	s.srv = &http.Server{Handler: s.Handler, ReadHeaderTimeout: 10 * time.Second}
	if s.Log != nil {
		s.srv.ErrorLog = slog.NewLogLogger(s.Log.Handler(), slog.LevelWarn)
		s.Log.Info("http listening", "addr", s.addr)
	}
	s.errc = make(chan error, 1)
	go func() { s.errc <- s.srv.Serve(ln) }()
	return nil
}

// Run blocks until ctx ends or the server fails.
func (s *HTTPServer) Run(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case err := <-s.errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	}
}

// Stop shuts the server down before ctx's deadline.
func (s *HTTPServer) Stop(ctx context.Context) error {
	if s.srv == nil {
		return nil
	}
	return s.srv.Shutdown(ctx)
}
