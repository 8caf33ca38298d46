package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http/pprof"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chatsys/chat/pkg/auth"
	"github.com/chatsys/chat/pkg/embedkafka"
	"github.com/chatsys/chat/pkg/lifecycle"
	"github.com/chatsys/chat/pkg/observe"
	"github.com/chatsys/chat/pkg/pgutil"
	"github.com/chatsys/chat/services/analytics"
	"github.com/chatsys/chat/services/edge"
	"github.com/chatsys/chat/services/history"
	"github.com/chatsys/chat/services/router"
)

// A target is what -target runs: the modules it names, with their
// dependencies, or a batch job.
type target struct {
	modules []string
	// embedBroker says whether the broker module runs the embedded broker.
	embedBroker func(o *options) bool
	// embedPostgres: without -database.url, start a PostgreSQL under the
	// data directory (otherwise -database.url is required).
	embedPostgres bool
	// job, when set, runs once instead of any module.
	job func(ctx context.Context, o *options, log *slog.Logger, stdout io.Writer) error
}

var targets = map[string]target{
	// Single-machine mode: every service, the embedded broker unless
	// -kafka.brokers names one, PostgreSQL unless -database.url does.
	"all": {
		modules:       []string{"history", "router", "analytics-scheduler", "edge"},
		embedBroker:   func(o *options) bool { return o.kafka.Brokers == "" },
		embedPostgres: true,
	},
	"broker":    {modules: []string{"broker"}, embedBroker: func(*options) bool { return true }},
	"edge":      {modules: []string{"edge"}},
	"router":    {modules: []string{"router"}},
	"history":   {modules: []string{"history"}},
	"analytics": {job: runAnalytics},
}

// targetNames lists the targets for messages: "all, analytics, …".
func targetNames() string {
	names := make([]string, 0, len(targets))
	for n := range targets {
		names = append(names, n)
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

// A module is one part of a process. Its init runs after its dependencies'
// and returns its lifecycle component, or nil when it has none (or none is
// needed here); components start in that order and stop in reverse. A
// component with Routes has them mounted (503 unavailable until it has
// started), one with Ready gets a readiness check under its name.
//
// Adding a service is one entry here and its name in targets.
type module struct {
	deps []string
	init func(a *app) (lifecycle.Component, error)
}

var modules = map[string]module{
	"http":                {init: (*app).initHTTP},
	"broker":              {deps: []string{"http"}, init: (*app).initBroker},
	"kafka":               {deps: []string{"broker"}, init: (*app).initKafka},
	"jwt":                 {init: (*app).initJWT},
	"database":            {deps: []string{"http"}, init: (*app).initDatabase},
	"history":             {deps: []string{"kafka", "jwt", "database"}, init: (*app).initHistory},
	"router":              {deps: []string{"kafka", "jwt"}, init: (*app).initRouter},
	"analytics-scheduler": {deps: []string{"kafka", "jwt", "database"}, init: (*app).initScheduler},
	"edge":                {deps: []string{"kafka", "jwt"}, init: (*app).initEdge},
}

// resolve orders names and their dependencies, transitively, so that each
// module comes after its dependencies; ties keep the order of the lists.
func resolve(names []string) ([]string, error) {
	var order []string
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(name string, path []string) error
	visit = func(name string, path []string) error {
		switch state[name] {
		case 1:
			return fmt.Errorf("module dependency cycle: %s", strings.Join(append(path, name), " → "))
		case 2:
			return nil
		}
		m, ok := modules[name]
		if !ok {
			return fmt.Errorf("unknown module %q", name)
		}
		state[name] = 1
		for _, d := range m.deps {
			if err := visit(d, append(path, name)); err != nil {
				return err
			}
		}
		state[name] = 2
		order = append(order, name)
		return nil
	}
	for _, n := range names {
		if err := visit(n, nil); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// app is a process being assembled from modules.
type app struct {
	o      *options
	t      target
	log    *slog.Logger
	reg    *prometheus.Registry
	mux    *lifecycle.Mux
	runner *lifecycle.Runner
	http   *lifecycle.HTTPServer
	dbURL  string // set by the database module
}

// orNone maps a flag's 0 ("none") to lifecycle's negative.
func orNone(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

// initHTTP: the HTTP server, /healthz, /readyz, /metrics and the profiles.
func (a *app) initHTTP() (lifecycle.Component, error) {
	a.runner.HealthHandler(a.mux)
	a.mux.Handle("GET /metrics", observe.MetricsHandler(a.reg))
	a.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "chat_ready",
		Help: "1 when /readyz answers 200 (every component started and its checks pass), else 0; evaluated at each scrape."},
		func() float64 {
			if a.runner.Readiness(context.Background()) != nil {
				return 0
			}
			return 1
		}))
	if a.o.pprof {
		a.mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		a.mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		a.mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	a.http = &lifecycle.HTTPServer{Addr: a.o.httpAddr, Handler: a.mux, Log: a.log.With("component", "http"),
		ReadTimeout: orNone(a.o.httpReadTimeout), WriteTimeout: orNone(a.o.httpWriteTimeout), IdleTimeout: orNone(a.o.httpIdleTimeout)}
	return a.http, nil
}

// initBroker: the embedded broker, when the target embeds one.
func (a *app) initBroker() (lifecycle.Component, error) {
	o := a.o
	if a.t.embedBroker == nil || !a.t.embedBroker(o) {
		return nil, nil
	}
	if host, port, err := net.SplitHostPort(o.broker.Addr); err == nil && port == "0" {
		// The other services are configured before the broker binds:
		// pick the port now so they can be told it.
		l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return nil, err
		}
		o.broker.Addr = l.Addr().String()
		l.Close()
	}
	o.broker.DataDir = embedkafka.DataDirUnder(o.dataDir)
	b := embedkafka.New(o.broker, a.log.With("component", "broker"))
	if err := a.reg.Register(b); err != nil { // fsync rounds, batches per round
		return nil, err
	}
	return b, nil
}

// initKafka: the brokers every service talks to (the embedded one at
// -broker.addr unless -kafka.brokers is set), and their readiness check.
func (a *app) initKafka() (lifecycle.Component, error) {
	if a.o.kafka.Brokers == "" {
		a.o.kafka.Brokers = a.o.broker.Addr
	}
	a.runner.AddCheck("kafka", a.o.kafka.Reachable)
	return nil, nil
}

// initJWT: the token settings; without any, the data directory's secret
// (generated on first use).
func (a *app) initJWT() (lifecycle.Component, error) {
	o := a.o
	if o.auth.Secret == "" && o.auth.PublicKeyFile == "" {
		secret, err := auth.LoadOrCreateSecret(o.dataDir)
		if err != nil {
			return nil, err
		}
		o.auth.Secret = secret
		a.log.Info("using the jwt secret of the data directory", "file", filepath.Join(o.dataDir, auth.SecretFile))
	}
	return nil, nil
}

// initDatabase: -database.url, or a PostgreSQL started under the data
// directory when the target embeds one.
func (a *app) initDatabase() (lifecycle.Component, error) {
	if a.o.db.URL != "" {
		a.dbURL = a.o.db.URL
		return nil, nil
	}
	if !a.t.embedPostgres {
		return nil, fmt.Errorf("-target=%s needs a PostgreSQL: set -database.url (CHAT_DATABASE_URL)", a.o.target)
	}
	pg := &pgutil.Server{Dir: filepath.Join(a.o.dataDir, "postgres"), Log: a.log.With("component", "postgres")}
	if err := pg.Prepare(); err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	a.dbURL = pg.URL()
	return pg, nil
}

func (a *app) initHistory() (lifecycle.Component, error) {
	cfg := a.o.history
	cfg.Kafka, cfg.Auth, cfg.DatabaseURL = a.o.kafka, a.o.auth, a.dbURL
	if slices.Contains(a.t.modules, "edge") {
		// Edits relayed by this process's edge may be as long as its
		// messages.
		cfg.MaxContentChars = max(cfg.MaxContentChars, a.o.edge.MaxContentChars)
	}
	return history.New(cfg, a.log.With("component", "history"), a.reg)
}

func (a *app) initRouter() (lifecycle.Component, error) {
	cfg := a.o.router
	cfg.Kafka, cfg.Auth = a.o.kafka, a.o.auth
	return router.New(cfg, a.log.With("component", "router"), a.reg)
}

// initScheduler: analytics every day at 00:05 UTC, and on an admin's request.
func (a *app) initScheduler() (lifecycle.Component, error) {
	cfg := a.o.analytics
	cfg.Kafka, cfg.Auth, cfg.DatabaseURL = a.o.kafka, a.o.auth, a.dbURL
	return analytics.NewScheduler(cfg, a.log.With("component", "analytics"), a.reg)
}

func (a *app) initEdge() (lifecycle.Component, error) {
	o := a.o
	cfg := o.edge
	cfg.Kafka, cfg.Auth = o.kafka, o.auth
	if slices.Contains(a.t.modules, "history") {
		cfg.HistoryHandler = a.mux // edit and delete frames: history is in this process
	}
	if slices.Contains(a.t.modules, "router") {
		cfg.RouterURL = "" // its API is on this listener: nothing to forward
	}
	return edge.New(cfg, a.log.With("component", "edge"), a.reg)
}

var (
	_ lifecycle.Routed = (*edge.Edge)(nil)
	_ lifecycle.Routed = (*history.History)(nil)
	_ lifecycle.Routed = (*router.Router)(nil)
	_ lifecycle.Routed = (*analytics.Scheduler)(nil)
)
