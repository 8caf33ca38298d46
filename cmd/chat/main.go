// Command chat runs the chat services. -target selects which: all (every
// service in one process, with an embedded broker: single-machine mode),
// or one of broker, edge, router, history, analytics.
//
// Every flag has an environment fallback: CHAT_ plus the flag name in upper
// snake case (-http.addr ↔ CHAT_HTTP_ADDR). Run with -h for the list.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/chatsys/chat/pkg/auth"
	"github.com/chatsys/chat/pkg/embedkafka"
	"github.com/chatsys/chat/pkg/flagenv"
	"github.com/chatsys/chat/pkg/kafkaio"
	"github.com/chatsys/chat/pkg/lifecycle"
	"github.com/chatsys/chat/pkg/observe"
	"github.com/chatsys/chat/pkg/pgutil"
	"github.com/chatsys/chat/services/analytics"
	"github.com/chatsys/chat/services/edge"
	"github.com/chatsys/chat/services/history"
	"github.com/chatsys/chat/services/router"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr, nil))
}

// options is the process configuration: shared settings once, each
// service's own settings in its Config.
type options struct {
	target        string
	httpAddr      string
	dataDir       string
	shutdownDelay time.Duration
	printConfig   bool
	pprof         bool
	edgeIDSet     bool // -edge.id given: keep it as is

	obs       observe.Config
	kafka     kafkaio.Config
	auth      auth.Config
	broker    embedkafka.Config
	db        pgutil.Config
	edge      edge.Config
	history   history.Config
	analytics analytics.Config
	router    router.Config
}

func newFlagSet(o *options, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("chat", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.target, "target", "all", "what to run: all, broker, edge, router, history or analytics")
	fs.StringVar(&o.httpAddr, "http.addr", "127.0.0.1:8080", "HTTP listen address (WebSocket, APIs, /metrics, /healthz, /readyz)")
	fs.StringVar(&o.dataDir, "data.dir", "./data", "data directory: embedded broker log, generated JWT secret")
	fs.DurationVar(&o.shutdownDelay, "shutdown-delay", 0, "on SIGTERM, how long /readyz reports 503 before services stop")
	fs.BoolVar(&o.printConfig, "print-config", false, "print the effective configuration and exit")
	fs.BoolVar(&o.pprof, "http.pprof", false, "serve Go profiles under /debug/pprof/ on -http.addr (keep it off on public addresses)")
	o.obs.RegisterFlags(fs)
	o.kafka.RegisterFlags(fs)
	o.auth.RegisterFlags(fs)
	o.broker.RegisterFlags(fs)
	o.db.RegisterFlags(fs)
	o.edge.RegisterFlags(fs)
	o.history.RegisterFlags(fs)
	o.analytics.RegisterFlags(fs)
	o.router.RegisterFlags(fs)
	flagenv.Usage(fs, "usage: chat [flags]\n\nEvery flag can also be set by the environment variable shown.")
	return fs
}

// run is main without the process exit; ready, when not nil, is called with
// the HTTP address once every component has started.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, ready func(addr string)) int {
	var o options
	fs := newFlagSet(&o, stderr)
	if err := flagenv.ParseOS(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "chat:", err)
		return 2
	}
	fs.Visit(func(f *flag.Flag) { o.edgeIDSet = o.edgeIDSet || f.Name == "edge.id" })
	o.edgeIDSet = o.edgeIDSet || os.Getenv("CHAT_EDGE_ID") != ""
	if o.printConfig {
		flagenv.Print(stdout, fs, "jwt.secret", "database.url")
		return 0
	}
	log, err := o.obs.NewLogger(stderr)
	if err != nil {
		fmt.Fprintln(stderr, "chat:", err)
		return 2
	}
	if err := runTarget(ctx, &o, log, stdout, ready); err != nil {
		log.Error("exiting", "err", err)
		return 1
	}
	return 0
}

func runTarget(ctx context.Context, o *options, log *slog.Logger, stdout io.Writer, ready func(string)) error {
	shutdownTracing, err := observe.InitTracing(ctx, "chat-"+o.target)
	if err != nil {
		return fmt.Errorf("tracing: %w", err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		shutdownTracing(sctx)
	}()
	reg := observe.NewRegistry()
	runner := &lifecycle.Runner{Log: log, ShutdownDelay: o.shutdownDelay, StopTimeout: o.edge.DrainDuration + 10*time.Second}
	mux := http.NewServeMux()
	runner.HealthHandler(mux)
	mux.Handle("GET /metrics", observe.MetricsHandler(reg))
	if o.pprof {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	httpSrv := &lifecycle.HTTPServer{Addr: o.httpAddr, Handler: mux, Log: log.With("component", "http")}
	components := []lifecycle.Component{httpSrv}

	withBroker := false
	switch o.target {
	case "all":
		withBroker = o.kafka.Brokers == ""
	case "broker":
		withBroker = true
	case "edge", "history", "router":
	case "analytics":
		return runAnalytics(ctx, o, log, stdout)
	default:
		return fmt.Errorf("unknown target %q: want all, broker, edge, router, history or analytics", o.target)
	}
	if withBroker {
		if host, port, err := net.SplitHostPort(o.broker.Addr); err == nil && port == "0" {
			// The other services are configured before the broker binds:
			// pick the port now so they can be told it.
			l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
			if err != nil {
				return err
			}
			o.broker.Addr = l.Addr().String()
			l.Close()
		}
		o.broker.DataDir = embedkafka.DataDirUnder(o.dataDir)
		b := embedkafka.New(o.broker, log.With("component", "broker"))
		components = append(components, b)
	}
	if o.kafka.Brokers == "" {
		o.kafka.Brokers = o.broker.Addr
	}
	if o.target == "broker" {
		return runWith(ctx, runner, components, httpSrv, ready)
	}

	if o.auth.Secret == "" && o.auth.PublicKeyFile == "" {
		secret, err := auth.LoadOrCreateSecret(o.dataDir)
		if err != nil {
			return err
		}
		o.auth.Secret = secret
		log.Info("using the jwt secret of the data directory", "file", o.dataDir+"/"+auth.SecretFile)
	}
	log.Info("effective config", "target", o.target, "http_addr", o.httpAddr, "data_dir", o.dataDir,
		"kafka_brokers", o.kafka.Brokers, "database", pgutil.Redacted(o.db.URL), "edge_id", o.edge.ID, "jwt", o.auth.Redacted())
	runner.AddCheck("kafka", o.kafka.Reachable)

	if o.target == "all" || o.target == "history" {
		var pg *pgutil.Server
		if o.db.URL == "" {
			if o.target == "history" {
				return errors.New("-target=history needs a PostgreSQL: set -database.url (CHAT_DATABASE_URL)")
			}
			pg = &pgutil.Server{Dir: filepath.Join(o.dataDir, "postgres"), Log: log.With("component", "postgres")}
			components = append(components, pg)
		}
		o.history.Kafka, o.history.Auth, o.history.DatabaseURL = o.kafka, o.auth, o.db.URL
		if pg != nil {
			o.history.DatabaseURL = "embedded" // resolved once the server has started
		}
		h, err := history.New(o.history, log.With("component", "history"), reg)
		if err != nil {
			return err
		}
		if pg != nil {
			h.SetDatabaseURL(pg.URL)
		}
		h.Routes(mux)
		runner.AddCheck("history", h.Ready)
		components = append(components, h)
	}
	if o.target == "all" || o.target == "router" {
		o.router.Kafka, o.router.Auth = o.kafka, o.auth
		rt, err := router.New(o.router, log.With("component", "router"), reg)
		if err != nil {
			return err
		}
		rt.Routes(mux)
		runner.AddCheck("router", rt.Ready)
		components = append(components, rt)
	}
	if o.target == "all" {
		o.analytics.Kafka, o.analytics.Auth, o.analytics.DatabaseURL = o.kafka, o.auth, o.db.URL
		sched, err := analytics.NewScheduler(o.analytics, log.With("component", "analytics"), reg)
		if err != nil {
			return err
		}
		if pg := embeddedPG(components); pg != nil {
			sched.SetDatabaseURL(pg.URL)
		}
		sched.Routes(mux)
		components = append(components, sched)
	}
	if o.target == "all" || o.target == "edge" {
		o.edge.Kafka, o.edge.Auth = o.kafka, o.auth
		if !o.edgeIDSet {
			// Unique per process on one host: deliveries are addressed by edge id.
			_, port, _ := net.SplitHostPort(o.httpAddr)
			o.edge.ID += "-" + port
		}
		e, err := edge.New(o.edge, log.With("component", "edge"), reg)
		if err != nil {
			return err
		}
		e.Routes(mux)
		runner.AddCheck("edge", e.Ready)
		components = append(components, e)
	}
	return runWith(ctx, runner, components, httpSrv, ready)
}

func embeddedPG(cs []lifecycle.Component) *pgutil.Server {
	for _, c := range cs {
		if pg, ok := c.(*pgutil.Server); ok {
			return pg
		}
	}
	return nil
}

// runAnalytics runs the batch job once: -target=analytics.
func runAnalytics(ctx context.Context, o *options, log *slog.Logger, stdout io.Writer) error {
	cfg := o.analytics
	cfg.Kafka, cfg.DatabaseURL = o.kafka, o.db.URL
	if cfg.Input == "" && cfg.Kafka.Brokers == "" {
		cfg.Kafka.Brokers = o.broker.Addr
	}
	if st, err := os.Stderr.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
		cfg.Progress = os.Stderr
	}
	if cfg.DatabaseURL == "" {
		log.Warn("no -database.url: results are printed (and written to -analytics.out) but not stored")
	}
	// A batch job: trade memory for less GC work, under a soft limit that
	// keeps the heap well inside 512 MiB (GOMEMLIMIT, when set, wins).
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(400 << 20)
	}
	res, err := analytics.Run(ctx, cfg, os.Stdin, log)
	if err != nil {
		return err
	}
	analytics.Summary(stdout, res)
	return nil
}

func runWith(ctx context.Context, r *lifecycle.Runner, cs []lifecycle.Component, h *lifecycle.HTTPServer, ready func(string)) error {
	if ready != nil {
		go func() {
			for !r.Ready() {
				select {
				case <-ctx.Done():
					return
				case <-time.After(10 * time.Millisecond):
				}
			}
			ready(h.ListenAddr())
		}()
	}
	return r.Run(ctx, cs...)
}
