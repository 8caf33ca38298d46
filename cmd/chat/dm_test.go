package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

func routerOnline(t *testing.T, addr, tok, user string) bool {
	req, _ := http.NewRequest("GET", "http://"+addr+"/v1/presence?user="+user, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var p presenceAnswer
	json.NewDecoder(resp.Body).Decode(&p)
	return len(p.Users) == 1 && p.Users[0].Online
}

func TestOfflineRecipientReadsHistoryThenLive(t *testing.T) {
	dir := dataDir(t)
	s := startAll(t, dir)
	aliceTok, bobTok := tokenFromDataDir(t, dir, "alice"), tokenFromDataDir(t, dir, "bob")
	alice := dialWS(t, s.addr, aliceTok)
	for i := 0; i < 3; i++ {
		alice.WriteJSON(map[string]string{"type": "private", "target": "bob", "content": fmt.Sprint("while away ", i), "client_id": fmt.Sprint("o", i)})
		readType(t, alice, "ack")
	}
	bob := dialWS(t, s.addr, bobTok)
	deadline := time.Now().Add(30 * time.Second)
	for {
		req, _ := http.NewRequest("GET", "http://"+s.addr+"/v1/dm/alice/messages", nil)
		req.Header.Set("Authorization", "Bearer "+bobTok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body struct{ Messages []message }
		json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if len(body.Messages) == 3 {
			if body.Messages[2].Content != "while away 0" || body.Messages[0].Content != "while away 2" {
				t.Fatalf("history = %+v, want the 3 DMs newest first", body.Messages)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bob's history has %d DMs, want 3", len(body.Messages))
		}
		time.Sleep(50 * time.Millisecond)
	}
	waitFor(t, 10*time.Second, "the router to see bob online", func() bool { return routerOnline(t, s.addr, aliceTok, "bob") })
	alice.WriteJSON(map[string]string{"type": "private", "target": "bob", "content": "now live", "client_id": "o9"})
	for {
		// A DM the router routes after bob's connect reached it may still
		// arrive live, in order, before the new one; nothing else may.
		m := readType(t, bob, "private")
		if m["content"] == "now live" && m["username"] == "alice" {
			break
		}
		if c, _ := m["content"].(string); !strings.HasPrefix(c, "while away") {
			t.Fatalf("bob got %v live, want alice's new DM", m)
		}
	}
}

// TestDMOrderBothSides sends 1000 DMs in one conversation, half from each
// side at once, and checks both ends see all of them in log order.
func TestDMOrderBothSides(t *testing.T) {
	dir := dataDir(t)
	s := startAll(t, dir, "-edge.rate=10000", "-edge.rate-burst=10000")
	aliceTok, bobTok := tokenFromDataDir(t, dir, "alice"), tokenFromDataDir(t, dir, "bob")
	alice, bob := dialWS(t, s.addr, aliceTok), dialWS(t, s.addr, bobTok)
	waitFor(t, 10*time.Second, "the router to see alice and bob online", func() bool {
		return routerOnline(t, s.addr, aliceTok, "bob") && routerOnline(t, s.addr, aliceTok, "alice")
	})
	const n = 500
	var wg sync.WaitGroup
	for _, side := range []struct {
		ws     *websocket.Conn
		target string
	}{{alice, "bob"}, {bob, "alice"}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < n; i++ {
				side.ws.WriteJSON(map[string]string{"type": "private", "target": side.target, "content": fmt.Sprint(i), "client_id": fmt.Sprint(side.target, i)})
			}
		}()
	}
	var seqs [2][]string
	var rwg sync.WaitGroup
	for i, ws := range []*websocket.Conn{alice, bob} {
		rwg.Add(1)
		go func() {
			defer rwg.Done()
			for len(seqs[i]) < 2*n {
				ws.SetReadDeadline(time.Now().Add(20 * time.Second))
				var m map[string]any
				if err := ws.ReadJSON(&m); err != nil {
					return
				}
				if m["type"] == "private" {
					seqs[i] = append(seqs[i], m["pos"].(string))
				}
			}
		}()
	}
	wg.Wait()
	rwg.Wait()
	for i, seq := range seqs {
		if len(seq) != 2*n {
			t.Fatalf("end %d got %d DMs, want %d", i, len(seq), 2*n)
		}
		for j := 1; j < len(seq); j++ {
			if offsetOf(seq[j]) <= offsetOf(seq[j-1]) {
				t.Fatalf("end %d: pos %s after %s, want log order", i, seq[j], seq[j-1])
			}
		}
	}
	if fmt.Sprint(seqs[0]) != fmt.Sprint(seqs[1]) {
		t.Fatal("the two ends saw different sequences")
	}
}

func offsetOf(pos string) int64 {
	var p, o int64
	fmt.Sscanf(pos, "%d:%d", &p, &o)
	return o
}
