package main

// Browser test of the conversation features in the web client
// (docs/conversations.md): private rooms and their details panel,
// moderation, typing, read receipts, edits and deletes, blocks and unread
// counts from GET /v1/unread, on the real single-machine system.

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// msgID is a JavaScript expression: the id of the newest message of the
// open conversation with this text.
func msgID(text string) string {
	return `([...document.querySelectorAll("#msgs li.msg")].reverse().find(li => (li.querySelector(".body") || {}).textContent === ` + js(text) + `) || {dataset: {}}).dataset.id || ""`
}

// byID is a JavaScript expression: the message element with this id.
func byID(id string) string {
	return `document.querySelector('#msgs li.msg[data-id="` + id + `"]')`
}

func textOf(id string) string {
	return `(` + byID(id) + ` || {textContent: ""}).textContent`
}

func badgeOf(key string) string {
	return `(document.querySelector('li[data-key="` + key + `"] .unread') || {}).textContent`
}

// unreadOf reads GET /v1/unread as a map: "#room" or "@peer" to the count.
func unreadOf(t *testing.T, addr, tok string) map[string]int {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+addr+"/v1/unread", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET /v1/unread: %v", err)
	}
	defer resp.Body.Close()
	var body struct {
		Conversations []struct {
			Room, Peer string
			Unread     int
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("GET /v1/unread: %s: %v", resp.Status, err)
	}
	out := map[string]int{}
	for _, c := range body.Conversations {
		if c.Room != "" {
			out["#"+c.Room] = c.Unread
		} else {
			out["@"+c.Peer] = c.Unread
		}
	}
	return out
}

func TestBrowserConversations(t *testing.T) {
	s, dir, _, alice, bob := browserPair(t)

	const welcome = "welcome to the design room"
	t.Run("alice creates a private room from the page", func(t *testing.T) {
		alice.do(chromedp.SetValue("#create-room", "design"), chromedp.Click("#create-private"), chromedp.Click("#create-form button[type=submit]"))
		alice.waitFor("in #design, private, joined",
			`document.getElementById("conv-title").textContent === "# design" && document.getElementById("conv-presence").textContent.includes("private") && `+
				`document.querySelector('#rooms li[data-key="#design"] .lock').hidden === false && `+
				`document.querySelector('#rooms li[data-key="#design"] .lock').getAttribute("aria-label") === "private" && `+
				`document.getElementById("members").textContent.includes("alice")`, 15*time.Second)
		alice.send(welcome)
		alice.waitFor("sent", msgState(welcome)+` === "sent"`, 10*time.Second)
	})

	t.Run("bob cannot see it nor join it", func(t *testing.T) {
		bob.do(chromedp.Reload())
		online(bob)
		bob.waitFor("rooms listed", `Number(document.body.dataset.roomsListed || 0) >= 1`, 10*time.Second)
		bob.holds("no #design in bob's sidebar", `!document.querySelector('#rooms li[data-key="#design"]')`, time.Second)
		bob.do(chromedp.SetValue("#join-room", "design"), chromedp.Click("#join-form button"))
		bob.waitFor("forbidden shown", `document.getElementById("join-error").textContent.includes("may not join") && document.getElementById("conv-notice").textContent.includes("may not join")`, 10*time.Second)
		if n := eval[int](bob, countText(welcome)); n != 0 {
			t.Fatalf("bob sees the private room's message %d times", n)
		}
		bob.screenshot("conv-forbidden-bob")
	})

	t.Run("alice invites bob from the panel; he finds the room and chats", func(t *testing.T) {
		alice.do(chromedp.Click("#details"))
		alice.waitFor("panel for owners", `!document.getElementById("panel").hidden && !document.getElementById("manage-form").hidden && document.getElementById("panel-summary").textContent.includes("Private")`, 10*time.Second)
		// A server error is shown: inviting an invalid name is refused before sending, a self-invite by the server.
		alice.do(chromedp.SetValue("#manage-user", "alice"), chromedp.Click(`#manage-form button[data-action="ban"]`))
		alice.waitFor("server refusal shown", `document.getElementById("manage-error").textContent.startsWith("Could not ban alice")`, 10*time.Second)
		alice.do(chromedp.SetValue("#manage-user", "bob"), chromedp.Click(`#manage-form button[data-action="invite"]`))
		alice.waitFor("bob is a member", `(document.querySelector('#panel-members li[data-user="bob"]') || {textContent: ""}).textContent === "bob: member" && document.getElementById("manage-error").textContent === ""`, 10*time.Second)
		alice.screenshot("conv-panel-alice")

		bob.waitFor("#design listed with a lock", `(document.querySelector('#rooms li[data-key="#design"] .lock') || {hidden: true}).hidden === false`, 10*time.Second)
		bob.do(chromedp.Click(`#rooms li[data-key="#design"] button`))
		bob.waitFor("history of #design", `document.getElementById("conv-title").textContent === "# design" && `+countText(welcome)+` === 1 && document.getElementById("conv-notice").textContent === ""`, 10*time.Second)
		alice.waitFor("the panel follows the join (member frame) and bob online", `document.getElementById("members").textContent.includes("bob")`, 20*time.Second)
		bob.send("thanks for the invite")
		alice.waitFor("alice sees bob", countText("thanks for the invite")+` === 1`, 10*time.Second)
		bob.waitFor("sent", msgState("thanks for the invite")+` === "sent"`, 10*time.Second)
	})

	t.Run("typing shows on the other page only, then expires", func(t *testing.T) {
		// Keys until alice sees the notice: one notice can be late or
		// dropped (typing is best effort), the page sends one each 3 s.
		bobTyping := `document.getElementById("typing").textContent === "bob is typing…" && document.getElementById("typing").getAttribute("aria-live") === "polite"`
		waitFor(t, 20*time.Second, "alice sees bob typing", func() bool {
			bob.do(chromedp.SendKeys("#content", "w"))
			return eval[bool](alice, bobTyping)
		})
		bob.holds("bob does not see his own", `document.getElementById("typing").textContent === ""`, time.Second)
		alice.screenshot("conv-typing-alice")
		alice.waitFor("the notice expires", `document.getElementById("typing").textContent === ""`, 8*time.Second)
		eval[bool](bob, `document.getElementById("content").value = ""; true`)
	})

	t.Run("edit shows on both pages with (edited)", func(t *testing.T) {
		id := eval[string](alice, msgID(welcome))
		if id == "" {
			t.Fatal("alice's message has no id")
		}
		// Edit is a button: focus it and press Enter; the form takes the focus.
		alice.do(chromedp.Focus(`#msgs li[data-id="`+id+`"] button[data-act="edit"]`), chromedp.KeyEvent("\r"))
		alice.waitFor("edit form", `document.activeElement && document.activeElement.id === "edit-`+id+`"`, 5*time.Second)
		alice.do(chromedp.SetValue("#edit-"+id, "welcome to the design room, edited"), chromedp.Click(`#msgs li[data-id="`+id+`"] form.edit button[type=submit]`))
		alice.waitFor("the form closes", `!document.querySelector("#msgs form.edit")`, 5*time.Second)
		for _, p := range []*browserPage{alice, bob} {
			p.waitFor("edited text", byID(id)+` && `+byID(id)+`.querySelector(".body").textContent === "welcome to the design room, edited" && `+byID(id)+`.querySelector(".edited").textContent === "(edited)"`, 10*time.Second)
		}
		// alice owns the room: she may delete bob's message but not edit it.
		other := eval[string](alice, msgID("thanks for the invite"))
		if got := eval[string](alice, `[...`+byID(other)+`.querySelectorAll("button.act")].map(b => b.dataset.act).join(",")`); got != "delete" {
			t.Fatalf("alice's actions on bob's message: %q, want delete", got)
		}
		if got := eval[int](bob, byID(id)+`.querySelectorAll("button.act").length`); got != 0 {
			t.Fatalf("bob has %d actions on alice's message, want none", got)
		}
	})

	t.Run("delete leaves a tombstone on both pages", func(t *testing.T) {
		alice.send("oops, wrong room")
		alice.waitFor("sent", msgState("oops, wrong room")+` === "sent"`, 10*time.Second)
		bob.waitFor("bob sees it", countText("oops, wrong room")+` === 1`, 10*time.Second)
		storedOnce(t, s.addr, tokenFromDataDir(t, dir, "alice"), "design", "oops, wrong room") // history checks a delete
		id := eval[string](alice, msgID("oops, wrong room"))
		alice.do(chromedp.Click(`#msgs li[data-id="` + id + `"] button[data-act="delete"]`))
		alice.do(chromedp.Click(`#msgs li[data-id="` + id + `"] button[data-act="confirm-delete"]`))
		for _, p := range []*browserPage{alice, bob} {
			p.waitFor("tombstone", byID(id)+` && `+byID(id)+`.classList.contains("deleted") && `+textOf(id)+`.includes("message deleted") && `+countText("oops, wrong room")+` === 0`, 10*time.Second)
		}
		bob.screenshot("conv-edit-delete-bob")
		// History serves the same: (edited) and the tombstone after a reload.
		bob.do(chromedp.Reload())
		online(bob)
		bob.waitFor("history shows the edit and the tombstone", `document.getElementById("conv-title").textContent === "# design" && `+
			byID(id)+` && `+byID(id)+`.classList.contains("deleted") && `+countText("oops, wrong room")+` === 0 && `+
			`[...document.querySelectorAll("#msgs li.was-edited .body")].some(b => b.textContent === "welcome to the design room, edited")`, 15*time.Second)
	})

	t.Run("a DM read on alice's page shows Seen on bob's", func(t *testing.T) {
		bob.do(chromedp.SetValue("#dm-user", "alice"), chromedp.Click("#dm-form button"))
		bob.waitFor("conversation open", `document.getElementById("conv-title").textContent === "alice"`, 5*time.Second)
		bob.send("are you there?")
		bob.waitFor("sent", msgState("are you there?")+` === "sent"`, 10*time.Second)
		alice.waitFor("unread from bob", badgeOf("@bob")+` === "1"`, 10*time.Second)
		bob.holds("not seen before alice opens it", `!document.querySelector("#msgs .seen")`, 500*time.Millisecond)
		alice.do(chromedp.Click(`#dms li[data-key="@bob"] button`))
		alice.waitFor("alice reads it", countText("are you there?")+` === 1 && `+badgeOf("@bob")+` === ""`, 10*time.Second)
		bob.waitFor("Seen on bob's message", `([...document.querySelectorAll("#msgs li.mine")].find(li => li.querySelector(".body").textContent === "are you there?") || document).querySelector(".seen") !== null && document.querySelector("#msgs .seen").textContent === "Seen"`, 10*time.Second)
		bob.screenshot("conv-seen-bob")
		// The receipt outlives the live read event: after a reload it comes
		// from GET /v1/unread's peer_read.
		bob.do(chromedp.Reload())
		online(bob)
		bob.waitFor("the DM with alice listed", `document.querySelector('#dms li[data-key="@alice"] button') !== null`, 10*time.Second)
		bob.do(chromedp.Click(`#dms li[data-key="@alice"] button`))
		bob.waitFor("Seen after a reload", `([...document.querySelectorAll("#msgs li.mine")].find(li => li.querySelector(".body").textContent === "are you there?") || document).querySelector(".seen") !== null`, 15*time.Second)
	})

	t.Run("the picture for the README", func(t *testing.T) {
		// alice in the private #design (an edited message, a tombstone), a
		// DM from bob waiting unread, and bob typing in the room.
		alice.do(chromedp.Click(`#rooms li[data-key="#design"] button`))
		alice.waitFor("in #design", `document.getElementById("conv-title").textContent === "# design"`, 5*time.Second)
		bob.send("lunch at one?")
		alice.waitFor("unread from bob", badgeOf("@bob")+` === "1"`, 10*time.Second)
		bob.do(chromedp.Click(`#rooms li[data-key="#design"] button`))
		bob.waitFor("in #design", `document.getElementById("conv-title").textContent === "# design"`, 5*time.Second)
		// bob's page sends at most one typing notice per 3 s: type until alice sees one.
		deadline := time.Now().Add(15 * time.Second)
		for !eval[bool](alice, `document.getElementById("typing").textContent === "bob is typing…"`) {
			if time.Now().After(deadline) {
				t.Fatal("alice never saw bob typing")
			}
			bob.do(chromedp.SendKeys("#content", "the mockups are"))
			time.Sleep(300 * time.Millisecond)
		}
		alice.screenshot("web-client")
		eval[bool](bob, `document.getElementById("content").value = ""; true`)
		alice.do(chromedp.Click(`#dms li[data-key="@bob"] button`))
		alice.waitFor("read", badgeOf("@bob")+` === "" && `+countText("lunch at one?")+` === 1`, 10*time.Second)
	})

	t.Run("alice mutes bob: his send is forbidden; unmute lets him write", func(t *testing.T) {
		alice.do(chromedp.Click(`#rooms li[data-key="#design"] button`))
		bob.do(chromedp.Click(`#rooms li[data-key="#design"] button`))
		bob.waitFor("in #design", `document.getElementById("conv-title").textContent === "# design"`, 5*time.Second)
		alice.do(chromedp.Click("#details"))
		alice.waitFor("panel", `!document.getElementById("panel").hidden && !document.getElementById("manage-form").hidden`, 10*time.Second)
		alice.do(chromedp.SetValue("#manage-user", "bob"), chromedp.Click(`#manage-form button[data-action="mute"]`))
		alice.waitFor("bob muted in the panel", `(document.querySelector('#panel-members li[data-user="bob"]') || {textContent: ""}).textContent === "bob: member, muted"`, 10*time.Second)
		// The composer closes, saying why (a send would only be refused).
		bob.waitFor("muted notice, composer closed", `document.getElementById("conv-notice").textContent.includes("muted you") && document.getElementById("content").disabled && document.getElementById("send").disabled`, 10*time.Second)
		bob.screenshot("conv-muted-bob")
		// The mute outlives a reload: GET /v1/rooms says so.
		bob.do(chromedp.Reload())
		online(bob)
		bob.waitFor("#design listed", `document.querySelector('#rooms li[data-key="#design"] button') !== null`, 10*time.Second)
		bob.do(chromedp.Click(`#rooms li[data-key="#design"] button`))
		bob.waitFor("muted notice after a reload", `document.getElementById("conv-title").textContent === "# design" && document.getElementById("conv-notice").textContent.includes("muted") && document.getElementById("content").disabled`, 15*time.Second)
		alice.do(chromedp.Click(`#manage-form button[data-action="unmute"]`))
		bob.waitFor("notice gone, composer open", `document.getElementById("conv-notice").textContent === "" && !document.getElementById("content").disabled && document.getElementById("composer-error").textContent === ""`, 10*time.Second)
		alice.do(chromedp.Click("#panel-close"))
	})

	t.Run("a reload keeps the unread counts of /v1/unread", func(t *testing.T) {
		alice.do(chromedp.Click(`#rooms li[data-key="#general"] button`))
		bob.send("design news one")
		bob.send("design news two")
		bob.do(chromedp.Click(`#dms li[data-key="@alice"] button`))
		bob.send("dm news one")
		bob.send("dm news two")
		alice.waitFor("unread counts", badgeOf("#design")+` === "2" && `+badgeOf("@bob")+` === "2"`, 15*time.Second)
		// History stores within about a second: wait until /v1/unread counts them.
		tok := tokenFromDataDir(t, dir, "alice")
		deadline := time.Now().Add(15 * time.Second)
		for {
			got := unreadOf(t, s.addr, tok)
			if got["#design"] == 2 && got["@bob"] == 2 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("GET /v1/unread says %v, want #design 2 and @bob 2", got)
			}
			time.Sleep(100 * time.Millisecond)
		}
		// Only the server knows now: forget this page's own read marks.
		eval[bool](alice, `localStorage.removeItem("chat:alice:read"); localStorage.removeItem("chat:alice:readpos"); true`)
		alice.do(chromedp.Reload())
		online(alice)
		alice.waitFor("unread counts after reload", badgeOf("#design")+` === "2" && `+badgeOf("@bob")+` === "2"`, 15*time.Second)
		alice.holds("counts stay", badgeOf("#design")+` === "2" && `+badgeOf("@bob")+` === "2"`, 2*time.Second)
		alice.screenshot("conv-unread-alice")
		alice.do(chromedp.Click(`#rooms li[data-key="#design"] button`))
		alice.waitFor("read", badgeOf("#design")+` === "" && `+countText("design news two")+` === 1`, 10*time.Second)
	})

	t.Run("alice blocks bob: his DM is forbidden", func(t *testing.T) {
		alice.do(chromedp.Click(`#dms li[data-key="@bob"] button`))
		alice.waitFor("block button", `!document.getElementById("block").hidden && document.getElementById("block").getAttribute("aria-label") === "Block bob"`, 5*time.Second)
		alice.do(chromedp.Click("#block"))
		alice.waitFor("blocked", `document.getElementById("block").getAttribute("aria-pressed") === "true" && document.getElementById("conv-notice").textContent.includes("You block bob")`, 10*time.Second)
		bob.send("let me in")
		bob.waitFor("forbidden next to the composer", `document.getElementById("composer-error").textContent.includes("may not send private messages") && `+msgState("let me in")+` === "failed"`, 10*time.Second)
		alice.do(chromedp.Click("#block"))
		alice.waitFor("unblocked", `document.getElementById("block").getAttribute("aria-pressed") === "false"`, 10*time.Second)
	})

	t.Run("a ban closes the room on bob's page", func(t *testing.T) {
		bob.do(chromedp.Click(`#rooms li[data-key="#design"] button`))
		alice.do(chromedp.Click(`#rooms li[data-key="#design"] button`), chromedp.Click("#details"))
		alice.waitFor("panel", `!document.getElementById("manage-form").hidden`, 10*time.Second)
		alice.do(chromedp.SetValue("#manage-user", "bob"), chromedp.Click(`#manage-form button[data-action="ban"]`))
		bob.waitFor("banned notice, composer closed", `document.getElementById("conv-notice").textContent.includes("banned you") && document.getElementById("content").disabled && document.querySelector('#rooms li[data-key="#design"]').classList.contains("revoked")`, 10*time.Second)
		bob.screenshot("conv-banned-bob")
		// Joining again by name is refused with the server's message.
		bob.do(chromedp.SetValue("#join-room", "design"), chromedp.Click("#join-form button"))
		bob.waitFor("forbidden", `document.getElementById("join-error").textContent.includes("may not join")`, 10*time.Second)
	})

	t.Run("the panel at 360 px", func(t *testing.T) {
		alice.do(chromedp.EmulateViewport(360, 740))
		if eval[bool](alice, `document.getElementById("panel").hidden`) {
			alice.do(chromedp.Click("#details"))
		}
		alice.waitFor("panel fits", `!document.getElementById("panel").hidden && document.documentElement.scrollWidth <= 360`, 5*time.Second)
		alice.screenshot("conv-panel-narrow-alice")
		alice.do(chromedp.EmulateViewport(1100, 720))
	})
	if t.Failed() {
		t.Log(strings.TrimSpace(alice.bodyText()))
	}
}
