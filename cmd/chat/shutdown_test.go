package main

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestShutdownDrainsEdgeAfterItsRunEnded: on SIGTERM the runner cancels
// the edge's Run (its log tail and ping loop end) before its Stop drains:
// every connection still gets close 1001, spread over the drain window;
// reconnecting meanwhile is refused with 503 unavailable; the process exits
// cleanly.
func TestShutdownDrainsEdgeAfterItsRunEnded(t *testing.T) {
	dir := dataDir(t)
	log := &syncBuffer{}
	const window = 1500 * time.Millisecond
	s := startAllLogging(t, dir, log, "-edge.drain-duration="+window.String(), "-log.level=debug")
	tok := tokenFromDataDir(t, dir, "alice")
	const n = 5
	var conns []*websocket.Conn
	for i := 0; i < n; i++ {
		ws := dialWS(t, s.addr, tok)
		ws.WriteJSON(map[string]string{"type": "join", "room": "general"})
		readType(t, ws, "joined")
		conns = append(conns, ws)
	}
	s.cancel() // SIGTERM
	closedAt := make(chan time.Time, n)
	for _, ws := range conns {
		go func() {
			ws.SetReadDeadline(time.Now().Add(20 * time.Second))
			for {
				if _, _, err := ws.ReadMessage(); err != nil {
					if websocket.IsCloseError(err, websocket.CloseGoingAway) {
						closedAt <- time.Now()
					} else {
						closedAt <- time.Time{}
					}
					return
				}
			}
		}()
	}
	var first, last time.Time
	for i := 0; i < n; i++ {
		at := <-closedAt
		if at.IsZero() {
			t.Fatal("a connection ended without close 1001")
		}
		if i == 0 {
			first = at
			// Draining: a reconnect is turned away.
			_, resp, err := websocket.DefaultDialer.Dial("ws://"+s.addr+"/ws?token="+tok, nil)
			if !errors.Is(err, websocket.ErrBadHandshake) || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
				t.Fatalf("reconnect while draining: %v %v, want 503", resp, err)
			}
			var e struct {
				Error struct{ Code string }
			}
			json.NewDecoder(resp.Body).Decode(&e)
			resp.Body.Close()
			if e.Error.Code != "unavailable" {
				t.Fatalf("reconnect while draining answered %+v", e)
			}
		}
		last = at
	}
	if spread := last.Sub(first); spread < window/4 {
		t.Errorf("closes spread over %v, want them spread over the %v window", spread, window)
	}
	select {
	case code := <-s.exit:
		s.cancel = nil
		if code != 0 {
			t.Fatalf("exit code %d, want 0:\n%s", code, log)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no exit within 30s of SIGTERM")
	}
	l := log.String()
	if testing.Verbose() {
		t.Logf("log:\n%s", l)
	}
	for _, bad := range []string{"panic", "component stop failed", "did not return", "still running after stop", "level=ERROR"} {
		if strings.Contains(l, bad) {
			t.Errorf("log has %q:\n%s", bad, l)
		}
	}
	// The edge stopped after its Run had ended, and before the services
	// started ahead of it.
	iRun := strings.Index(l, `msg="component stopped" component=edge`)
	iRouter := strings.Index(l, `msg="component stopped" component=router`)
	if iRun < 0 || iRouter < 0 || iRouter < iRun {
		t.Errorf("want the edge stopped before the router:\n%s", l)
	}
}
