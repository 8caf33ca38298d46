package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// Defaults of HTTPServer's limits.
const (
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultReadTimeout       = 30 * time.Second
	DefaultWriteTimeout      = 60 * time.Second
	DefaultIdleTimeout       = 120 * time.Second
	// DefaultMaxHeaderBytes fits a request line and headers carrying a
	// token (query parameter, Authorization, WebSocket subprotocol) with
	// room to spare.
	DefaultMaxHeaderBytes = 64 << 10
)

// HTTPServer is a Component that serves an http.Handler on an address. Start
// listens (so the port is bound when Start returns); Stop shuts the server
// down gracefully. Hijacked connections (WebSockets) are not waited for:
// their owner drains them.
//
// Every request is bounded by the read, write and idle timeouts. They do not
// reach a connection its handler hijacks (a WebSocket upgrade): net/http
// clears a connection's deadlines when it is hijacked, so it lives as long
// as its owner wants, under the deadlines the owner sets (the test
// TestHTTPServerTimeouts holds net/http to that).
type HTTPServer struct {
	Addr    string
	Handler http.Handler
	Log     *slog.Logger

	// Zero means the Default of the same name; negative means none.
	ReadHeaderTimeout time.Duration // request line and headers
	ReadTimeout       time.Duration // the whole request, body included
	WriteTimeout      time.Duration // from the end of the headers to the end of the response
	IdleTimeout       time.Duration // between requests on a keep-alive connection
	MaxHeaderBytes    int           // request line and headers

	srv  *http.Server
	errc chan error
	addr string
}

// Name returns "http".
func (s *HTTPServer) Name() string { return "http" }

// ListenAddr returns the bound address; valid after Start.
func (s *HTTPServer) ListenAddr() string { return s.addr }

func orDefault[T time.Duration | int](v, def T) T {
	switch {
	case v == 0:
		return def
	case v < 0:
		return 0
	}
	return v
}

// Start binds the listener and starts serving.
func (s *HTTPServer) Start(ctx context.Context) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.Addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", s.Addr, err)
	}
	s.addr = ln.Addr().String()
	s.srv = &http.Server{
		Handler:           s.Handler,
		ReadHeaderTimeout: orDefault(s.ReadHeaderTimeout, DefaultReadHeaderTimeout),
		ReadTimeout:       orDefault(s.ReadTimeout, DefaultReadTimeout),
		WriteTimeout:      orDefault(s.WriteTimeout, DefaultWriteTimeout),
		IdleTimeout:       orDefault(s.IdleTimeout, DefaultIdleTimeout),
		MaxHeaderBytes:    orDefault(s.MaxHeaderBytes, DefaultMaxHeaderBytes),
	}
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
