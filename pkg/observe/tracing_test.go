package observe

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel"

	"github.com/chatsys/chat/pkg/testutil"
)

// A collector that does not answer is reported through the process's
// logger (JSON stays JSON), not the standard library's plain-text logger.
func TestTracingErrorsGoToTheLog(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+addr)
	t.Setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "500")
	var buf testutil.SyncBuffer
	shutdown, err := InitTracing(context.Background(), "test", slog.New(slog.NewJSONHandler(&buf, nil)))
	if err != nil {
		t.Fatal(err)
	}
	_, span := otel.Tracer("test").Start(context.Background(), "lost")
	span.End()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	shutdown(ctx) // flushes: the export fails
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(buf.String(), `"msg":"opentelemetry"`) {
		if time.Now().After(deadline) {
			t.Fatalf("no export error in the log: %q", buf.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if !json.Valid([]byte(line)) {
			t.Fatalf("log line %q is not JSON", line)
		}
	}
}
