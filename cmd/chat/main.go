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
	"os"
	"os/signal"
	"runtime/debug"
	"slices"
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
	target   string
	httpAddr string
	// HTTP server timeouts; 0 means none.
	httpReadTimeout, httpWriteTimeout, httpIdleTimeout time.Duration
	dataDir                                            string
	shutdownDelay                                      time.Duration
	printConfig                                        bool
	pprof                                              bool
	edgeIDSet                                          bool // -edge.id given: keep it as is

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
	fs.StringVar(&o.target, "target", "all", "what to run: "+targetNames())
	fs.StringVar(&o.httpAddr, "http.addr", "127.0.0.1:8080", "HTTP listen address (WebSocket, APIs, /metrics, /healthz, /readyz)")
	fs.StringVar(&o.dataDir, "data.dir", "./data", "data directory: embedded broker log, generated JWT secret, PostgreSQL cluster (-target=all)")
	fs.DurationVar(&o.shutdownDelay, "shutdown-delay", 0, "on SIGTERM, how long /readyz reports 503 before services stop")
	fs.BoolVar(&o.printConfig, "print-config", false, "print the effective configuration and exit")
	fs.DurationVar(&o.httpReadTimeout, "http.read-timeout", lifecycle.DefaultReadTimeout, "longest time to read a request, body included (0: none; WebSocket connections are not subject to it)")
	fs.DurationVar(&o.httpWriteTimeout, "http.write-timeout", lifecycle.DefaultWriteTimeout, "longest time to write a response, from the end of the request's headers (0: none; not WebSockets)")
	fs.DurationVar(&o.httpIdleTimeout, "http.idle-timeout", lifecycle.DefaultIdleTimeout, "how long a keep-alive connection waits for its next request (0: none)")
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
	if !o.edgeIDSet {
		// Unique per process on one host: deliveries are addressed by edge
		// id. Before -print-config, which shows the effective value.
		_, port, _ := net.SplitHostPort(o.httpAddr)
		o.edge.ID += "-" + port
	}
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
	t, ok := targets[o.target]
	if !ok {
		return fmt.Errorf("unknown target %q: want %s", o.target, targetNames())
	}
	shutdownTracing, err := observe.InitTracing(ctx, "chat-"+o.target, log)
	if err != nil {
		return fmt.Errorf("tracing: %w", err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		shutdownTracing(sctx)
	}()
	if t.job != nil {
		return t.job(ctx, o, log, stdout)
	}
	a := &app{o: o, t: t, log: log, reg: observe.NewRegistry(), mux: lifecycle.NewMux()}
	a.runner = &lifecycle.Runner{Log: log, ShutdownDelay: o.shutdownDelay, StopTimeout: o.edge.DrainDuration + 10*time.Second, Mux: a.mux}
	order, err := resolve(append([]string{"http"}, t.modules...)) // every process serves HTTP
	if err != nil {
		return err
	}
	var components []lifecycle.Component
	for _, name := range order {
		c, err := modules[name].init(a)
		if err != nil {
			return err
		}
		if c == nil {
			continue
		}
		if r, ok := c.(lifecycle.Routed); ok {
			a.mux.Mount(c, r.Routes)
		}
		if r, ok := c.(interface{ Ready(context.Context) error }); ok {
			a.runner.AddCheck(c.Name(), r.Ready)
		}
		components = append(components, c)
	}
	if slices.Contains(order, "jwt") {
		log.Info("effective config", "target", o.target, "http_addr", o.httpAddr, "data_dir", o.dataDir,
			"kafka_brokers", o.kafka.Brokers, "database", pgutil.Redacted(a.dbURL), "edge_id", o.edge.ID, "jwt", o.auth.Redacted())
	}
	return runWith(ctx, a.runner, components, a.http, ready)
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
