// Package observe sets up what every process shares for observability: the
// slog logger, the Prometheus registry and its /metrics handler, and the
// OpenTelemetry propagator.
package observe

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Config selects log format and level.
type Config struct {
	LogFormat string // "text" or "json" (default text)
	LogLevel  string // debug, info, warn, error (default info)
}

// RegisterFlags registers the log.* flags.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.LogFormat, "log.format", "text", "log format: text or json (use json in containers)")
	fs.StringVar(&c.LogLevel, "log.level", "info", "log level: debug, info, warn or error")
}

// NewLogger returns the process logger writing to w.
func (c Config) NewLogger(w io.Writer) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return nil, fmt.Errorf("log.level %q: %w", c.LogLevel, err)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch strings.ToLower(c.LogFormat) {
	case "", "text":
		return slog.New(TraceHandler{slog.NewTextHandler(w, opts)}), nil
	case "json":
		return slog.New(TraceHandler{slog.NewJSONHandler(w, opts)}), nil
	}
	return nil, fmt.Errorf("log.format %q: want text or json", c.LogFormat)
}

// SpanContext returns a context holding the first of spans (a batch's
// first traced record), for a log line about the batch, or
// context.Background() when there is none.
func SpanContext(spans ...trace.Span) context.Context {
	for _, sp := range spans {
		if sp != nil && sp.SpanContext().IsValid() {
			return trace.ContextWithSpan(context.Background(), sp)
		}
	}
	return context.Background()
}

// TraceHandler adds trace_id and span_id to a record logged with a context
// that holds a valid span (log.InfoContext(ctx, ...) and the like), so logs
// and traces can be joined.
type TraceHandler struct{ slog.Handler }

// Handle implements slog.Handler.
func (h TraceHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return h.Handler.Handle(ctx, r)
}

// WithAttrs implements slog.Handler.
func (h TraceHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return TraceHandler{h.Handler.WithAttrs(attrs)}
}

// WithGroup implements slog.Handler.
func (h TraceHandler) WithGroup(name string) slog.Handler {
	return TraceHandler{h.Handler.WithGroup(name)}
}

// NewRegistry returns a registry with the Go runtime and process collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// MetricsHandler serves reg in the Prometheus exposition format.
func MetricsHandler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
}

// InitPropagation installs the W3C trace-context propagator, so spans cross
// Kafka records and HTTP calls. Exporters are configured by the standard
// OTEL_* environment when a tracer provider is installed.
func InitPropagation() {
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
}
