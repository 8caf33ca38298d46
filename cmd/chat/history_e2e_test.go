package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"testing"
	"time"
)

type message struct {
	ID, Type, Room, Username, Content, Pos string
	ClientID                               string `json:"client_id"`
}

func historyPage(t *testing.T, addr, tok, room, query string) []message {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+addr+"/v1/rooms/"+room+"/messages?"+query, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return nil // a room with no message in history yet does not exist
	}
	if resp.StatusCode != 200 {
		t.Fatalf("history: %s", resp.Status)
	}
	var body struct{ Messages []message }
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	return body.Messages
}

func TestSentMessageIsInHistoryWithSameIDAndPos(t *testing.T) {
	dir := dataDir(t)
	s := startAll(t, dir)
	tok := tokenFromDataDir(t, dir, "alice")
	alice := dialWS(t, s.addr, tok)
	alice.WriteJSON(map[string]string{"type": "join", "room": "general"})
	readType(t, alice, "joined")
	alice.WriteJSON(map[string]string{"type": "chat", "room": "general", "content": "for the record", "client_id": "r1"})
	var id, pos string
	deadline := time.Now().Add(10 * time.Second)
	for id == "" || pos == "" {
		if time.Now().After(deadline) {
			t.Fatal("no ack and echo within 10s")
		}
		m := readType(t, alice, "")
		switch m["type"] {
		case "ack":
			id = m["id"].(string)
		case "chat":
			pos = m["pos"].(string)
		}
	}
	deadline = time.Now().Add(10 * time.Second)
	for {
		page := historyPage(t, s.addr, tok, "general", "limit=5")
		if len(page) == 1 {
			if page[0].ID != id || page[0].Pos != pos || page[0].Content != "for the record" || page[0].Username != "alice" {
				t.Fatalf("history has %+v, want id %s pos %s", page[0], id, pos)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("message not in history within 10s (page %v)", page)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestHistoryThenLiveHasNoGapNoDuplicate is a page load while others keep
// sending: read the newest history page, join since its newest pos, and the
// union is every message exactly once.
func TestHistoryThenLiveHasNoGapNoDuplicate(t *testing.T) {
	dir := dataDir(t)
	s := startAll(t, dir, "-edge.rate=1000", "-edge.rate-burst=1000")
	pubTok := tokenFromDataDir(t, dir, "pub")
	pub := dialWS(t, s.addr, pubTok)
	const total = 300
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < total; i++ {
			pub.WriteJSON(map[string]string{"type": "chat", "room": "busy", "content": strconv.Itoa(i), "client_id": fmt.Sprint("p", i)})
			time.Sleep(3 * time.Millisecond)
		}
	}()
	tok := tokenFromDataDir(t, dir, "reader")
	var page []message
	waitFor(t, 20*time.Second, "50 messages in history", func() bool { // the page load happens mid-stream
		page = historyPage(t, s.addr, tok, "busy", "limit=200")
		return len(page) >= 50
	})
	got := map[int]int{}
	for _, m := range page {
		n, _ := strconv.Atoi(m.Content)
		got[n]++
	}
	ws := dialWS(t, s.addr, tok)
	ws.WriteJSON(map[string]string{"type": "join", "room": "busy", "since": page[0].Pos})
	if j := readType(t, ws, "joined"); j["recovered"] != true {
		t.Fatalf("joined = %v, want recovered:true", j)
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("publisher did not finish within 30s")
	}
	deadline := time.Now().Add(30 * time.Second)
	for got[total-1] == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the last message did not arrive live within 30s")
		}
		m := readType(t, ws, "chat")
		n, _ := strconv.Atoi(m["content"].(string))
		got[n]++
	}
	oldest, _ := strconv.Atoi(page[len(page)-1].Content)
	for i := oldest; i < total; i++ {
		if got[i] != 1 {
			t.Fatalf("message %d seen %d times across history+live (history newest %s), want exactly once", i, got[i], page[0].Content)
		}
	}
}
