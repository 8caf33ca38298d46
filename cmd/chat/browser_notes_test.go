package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/segmentio/kafka-go"

	"github.com/chatsys/chat/pkg/chatevent"
	"github.com/chatsys/chat/pkg/kafkaio"
)

// The router appends a leave event to a room for each member an expired
// edge held; history stores it with the room's messages. The page shows it
// as a note ("bob left"), not as an empty message of bob's with actions,
// and does not count it as unread. The log stays at its newest message when
// the members line appears above it, and a message over the limit stays in
// the composer.
func TestBrowserNotesScrollAndComposer(t *testing.T) {
	chromiumPath(t)
	shotDir = screenshotDir(t)
	dir := dataDir(t)
	broker := freeAddr(t)
	s := startAll(t, dir, "-broker.addr="+broker)
	carolTok := tokenFromDataDir(t, dir, "carol")
	carol := dialUser(t, s.addr, carolTok)
	carol.sendAll("general", "before the leave")

	k := kafkaio.Config{Brokers: broker, WriteTimeout: 5 * time.Second, BatchTimeout: time.Millisecond}
	w := k.NewWriter(chatevent.TopicRooms)
	defer w.Close()
	leave := chatevent.Event{ID: chatevent.NewID(), Type: chatevent.TypeLeave, Room: "general", Username: "bob", Timestamp: chatevent.FormatTime(time.Now())}
	v, err := leave.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WriteMessages(context.Background(), kafka.Message{Key: []byte(chatevent.RoomKey("general")), Value: v}); err != nil {
		t.Fatal(err)
	}
	carol.sendAll("general", "after the leave")
	var more []string
	for i := range 40 { // more than the log shows at once
		more = append(more, fmt.Sprintf("filler %d", i))
	}
	carol.sendAll("general", more...)
	waitFor(t, 20*time.Second, "history has the leave and the messages", func() bool {
		return len(historyContents(t, s.addr, carolTok, "general")) == 43
	})

	browser := newBrowser(t)
	bob := signIn(t, browser, s.addr, "bob", tokenFromDataDir(t, dir, "bob"))
	const notes = `[...document.querySelectorAll("#msgs li.msg.note")].map(li => li.textContent)`
	bob.waitFor("the leave as a note", notes+`.some(t => t.startsWith("bob left"))`, 10*time.Second)
	if got := eval[int](bob, `document.querySelectorAll('#msgs li.msg[data-user="bob"], #msgs li.msg.mine').length`); got != 0 {
		t.Fatalf("the leave shows as %d message(s) of bob's", got)
	}
	if got := eval[int](bob, countText("after the leave")); got != 1 {
		t.Fatalf("the message after the leave shows %d times", got)
	}
	bob.screenshot("leave-note-bob")

	// The members line above the log appears after the room opened: the
	// log stays at its newest message, and follows the next one.
	bob.waitFor("the members line", `document.getElementById("members").textContent.startsWith("Online here")`, 20*time.Second)
	const atBottom = `(() => { const l = document.getElementById("log"); return l.scrollTop + l.clientHeight >= l.scrollHeight - 8; })()`
	bob.waitFor("the log at its newest message", atBottom, 5*time.Second)
	carol.sendAll("general", "the newest one")
	bob.waitFor("the newest message shown", countText("the newest one")+` === 1`, 10*time.Second)
	bob.waitFor("the log follows it", atBottom, 5*time.Second)
	if got := strings.TrimSpace(eval[string](bob, `(document.querySelector('#rooms li[data-key="#general"] .unread') || {}).textContent || ""`)); got != "" {
		t.Fatalf("general's unread badge = %q, want none", got)
	}

	// A message over the limit is refused in the page, and the composer
	// keeps its text for the writer to shorten.
	long := strings.Repeat("é", 4001)
	bob.do(chromedp.SetValue("#content", long))
	eval[bool](bob, `document.getElementById("composer").requestSubmit(), true`)
	bob.waitFor("the limit is explained", `document.getElementById("composer-error").textContent.includes("the limit is 4000")`, 5*time.Second)
	if got := eval[int](bob, `[...document.getElementById("content").value].length`); got != 4001 {
		t.Fatalf("the composer holds %d characters after the refusal, want the 4001 written", got)
	}
}

// While the edge drains (a restart) its handshakes answer 503: the page
// says the server is restarting, not that it refuses connections.
func TestBrowserDrainSaysRestarting(t *testing.T) {
	chromiumPath(t)
	shotDir = screenshotDir(t)
	dir := dataDir(t)
	s := startAll(t, dir, "-edge.drain-duration=8s")
	browser := newBrowser(t)
	alice := signIn(t, browser, s.addr, "alice", tokenFromDataDir(t, dir, "alice"))
	// A second connection keeps the drain going while the page retries.
	dialUser(t, s.addr, tokenFromDataDir(t, dir, "bob"))
	stopped := make(chan struct{})
	go func() { s.stop(); close(stopped) }()
	defer func() { <-stopped }()
	alice.waitFor("the restarting banner", `document.getElementById("banner-text").textContent.includes("restarting")`, 15*time.Second)
	alice.holds("not called a refusal", `!document.getElementById("banner-text").textContent.includes("refuses")`, 2*time.Second)
	alice.screenshot("drain-alice")
}
