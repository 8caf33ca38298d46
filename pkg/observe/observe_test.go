package observe

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"

	"go.opentelemetry.io/otel/trace"
)

// TestLogsCarryTraceIDs: a record logged with a span in its context has
// the span's trace_id and span_id, also through With and WithGroup; one
// without has neither.
func TestLogsCarryTraceIDs(t *testing.T) {
	var buf bytes.Buffer
	log, err := Config{LogFormat: "json", LogLevel: "info"}.NewLogger(&buf)
	if err != nil {
		t.Fatal(err)
	}
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
		SpanID:     trace.SpanID{1, 2, 3, 4, 5, 6, 7, 8},
		TraceFlags: trace.FlagsSampled,
	})
	ctx := trace.ContextWithSpanContext(context.Background(), sc)
	log.With("component", "x").WithGroup("g").InfoContext(ctx, "with span", "k", "v")
	log.InfoContext(context.Background(), "without span")
	dec := json.NewDecoder(&buf)
	var with, without map[string]any
	if err := dec.Decode(&with); err != nil {
		t.Fatal(err)
	}
	if err := dec.Decode(&without); err != nil {
		t.Fatal(err)
	}
	// The ids are added at the record's level, which is inside the group.
	g, _ := with["g"].(map[string]any)
	if g["trace_id"] != sc.TraceID().String() || g["span_id"] != sc.SpanID().String() || with["component"] != "x" {
		t.Fatalf("with span: %v", with)
	}
	if _, ok := without["trace_id"]; ok {
		t.Fatalf("without span: %v", without)
	}
}

// The service is named chat-<target> unless OTEL_SERVICE_NAME says
// otherwise.
func TestTracingResourceHonoursTheEnvironment(t *testing.T) {
	name := func() string {
		t.Helper()
		res, err := tracingResource(context.Background(), "chat-edge")
		if err != nil {
			t.Fatal(err)
		}
		for _, kv := range res.Attributes() {
			if kv.Key == "service.name" {
				return kv.Value.AsString()
			}
		}
		return ""
	}
	t.Setenv("OTEL_SERVICE_NAME", "")
	t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "")
	if got := name(); got != "chat-edge" {
		t.Fatalf("service.name = %q, want chat-edge", got)
	}
	t.Setenv("OTEL_SERVICE_NAME", "edge-eu-1")
	if got := name(); got != "edge-eu-1" {
		t.Fatalf("with OTEL_SERVICE_NAME: service.name = %q, want edge-eu-1", got)
	}
}
