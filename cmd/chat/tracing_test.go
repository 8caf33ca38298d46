package main

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// TestTracesExportedOverOTLP points the standard OTEL_EXPORTER_OTLP_ENDPOINT
// at an HTTP receiver and checks that a room message's trace has its
// producer and fan-out spans, and a private message's its producer, routing
// and fan-out spans.
func TestTracesExportedOverOTLP(t *testing.T) {
	var mu sync.Mutex
	var got []byte
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/traces" {
			b, _ := io.ReadAll(r.Body)
			mu.Lock()
			got = append(got, b...)
			mu.Unlock()
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer collector.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.URL)
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
	dir := dataDir(t)
	s := startAll(t, dir)
	ws := dialWS(t, s.addr, tokenFromDataDir(t, dir, "alice"))
	ws.WriteJSON(map[string]string{"type": "join", "room": "general"})
	readType(t, ws, "joined")
	ws.WriteJSON(map[string]string{"type": "chat", "room": "general", "content": "traced", "client_id": "t1"})
	readType(t, ws, "ack")
	// A private message is traced through the router too.
	aliceTok := tokenFromDataDir(t, dir, "alice")
	waitFor(t, 10*time.Second, "the router to see alice online", func() bool { return routerOnline(t, s.addr, aliceTok, "alice") })
	ws.WriteJSON(map[string]string{"type": "private", "target": "alice", "content": "note to self", "client_id": "t2"})
	readType(t, ws, "private")
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		ok := bytes.Contains(got, []byte("publish chat.rooms")) && bytes.Contains(got, []byte("chat-all")) &&
			bytes.Contains(got, []byte("deliver chat.rooms")) &&
			bytes.Contains(got, []byte("publish chat.direct")) && bytes.Contains(got, []byte("route chat.direct")) &&
			bytes.Contains(got, []byte("deliver chat.deliveries"))
		mu.Unlock()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("spans publish chat.rooms, deliver chat.rooms, publish chat.direct, route chat.direct and deliver chat.deliveries from service chat-all did not all reach the OTLP endpoint")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
