package history_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/chatsys/chat/pkg/observe"
	"github.com/chatsys/chat/pkg/pgutil/pgtest"
)

// lockedBuffer is a bytes.Buffer the writer's goroutines and the test share.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// The log line about a dead-lettered record carries the trace of that
// record (its producer's, continued by the writer's store span), so an
// operator can go from the line to the message's trace.
func TestDeadLetterLogCarriesTheRecordsTrace(t *testing.T) {
	tp := sdktrace.NewTracerProvider() // records spans, exports nowhere
	prevTP, prevProp := otel.GetTracerProvider(), otel.GetTextMapPropagator()
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.TraceContext{})
	t.Cleanup(func() {
		otel.SetTracerProvider(prevTP)
		otel.SetTextMapPropagator(prevProp)
		tp.Shutdown(context.Background())
	})
	var out lockedBuffer
	log := slog.New(observe.TraceHandler{Handler: slog.NewJSONHandler(&out, nil)})

	k := topics(t, testBroker(t))
	db := pgtest.NewDatabase(t)
	startHistoryLog(t, k, db, log)
	ev := event("chat", "general", "", "alice", "poison", "p1")
	b, _ := ev.Encode()
	nul := []byte(strings.Replace(string(b), `"poison"`, `"poi\u0000son"`, 1)) // PostgreSQL cannot store U+0000
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	produceRaw(t, k, k.RoomsTopic, kafka.Message{Key: []byte("general"), Value: nul,
		Headers: []kafka.Header{{Key: "traceparent", Value: []byte("00-" + traceID + "-00f067aa0ba902b7-01")}}})

	var line map[string]any
	eventually(t, 20*time.Second, "the dead letter logged", func() bool {
		for _, l := range strings.Split(out.String(), "\n") {
			if strings.Contains(l, "records moved to dead_letters") {
				return json.Unmarshal([]byte(l), &line) == nil
			}
		}
		return false
	})
	if line["trace_id"] != traceID || line["span_id"] == nil || line["span_id"] == "00f067aa0ba902b7" {
		t.Fatalf("dead letter log line %v: want trace_id %s and the store span's span_id", line, traceID)
	}
}
