package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

// TestBrowserBusyRoomAndReloads: what an outside browser run found. A user
// reading a busy room live (default rate limit) sees no rate-limit error
// for reads the page sends on their behalf, the log keeps following the
// newest message when a line appears under it, and the server's read
// position catches up; a reload while the socket cannot connect shows the
// room's history and the DM dots over HTTP; a DM that mentions the user
// keeps its mark across a reload.
func TestBrowserBusyRoomAndReloads(t *testing.T) {
	chromiumPath(t)
	shotDir = screenshotDir(t)
	dir := dataDir(t)
	s := startAll(t, dir) // the default per-user rate: 10 msg/s, burst 20 (reads count)
	browser := newBrowser(t)
	aliceTok := tokenFromDataDir(t, dir, "alice")
	alice := signIn(t, browser, s.addr, "alice", aliceTok)
	bob := signIn(t, browser, s.addr, "bob", tokenFromDataDir(t, dir, "bob"))
	_ = bob
	carol := dialUser(t, s.addr, tokenFromDataDir(t, dir, "carol"))
	dan := dialUser(t, s.addr, tokenFromDataDir(t, dir, "dan"))
	erin := dialUser(t, s.addr, tokenFromDataDir(t, dir, "erin"))
	atBottom := `(l => l.scrollTop + l.clientHeight >= l.scrollHeight - 8)(document.getElementById("log"))`
	newestShown := func(text string) string {
		return `(m => m.length > 0 && m[m.length - 1].textContent === ` + js(text) + `)([...document.querySelectorAll("#msgs li.msg .body")])`
	}
	// flood sends rounds of a message from each of carol, erin and dan,
	// about 25 a second together (each under their own 10 a second): far
	// more than the 10 a second alice may send, were every message read
	// answered by a read frame.
	n := 0
	flood := func(rounds int) string {
		t.Helper()
		last := ""
		for range rounds {
			n++
			carol.sendAll("general", fmt.Sprintf("busy %d from carol", n))
			erin.sendAll("general", fmt.Sprintf("busy %d from erin", n))
			last = fmt.Sprintf("busy %d from dan", n)
			dan.sendAll("general", last)
			time.Sleep(110 * time.Millisecond)
		}
		return last
	}

	t.Run("reading a busy room live", func(t *testing.T) {
		eval[bool](alice, `window.__composerErrors = []; new MutationObserver(() => { const t = document.getElementById("composer-error").textContent; if (t) window.__composerErrors.push(t) })
			.observe(document.getElementById("composer-error"), {childList: true, characterData: true, subtree: true}); true`)
		last := flood(30)
		alice.waitFor("the newest message, at the bottom", newestShown(last)+" && "+atBottom, 15*time.Second)
		if errs := eval[[]string](alice, `window.__composerErrors`); len(errs) > 0 {
			t.Fatalf("errors shown under the composer while alice only read: %q", errs)
		}
		// A line appears under the log (a message too long, refused by the
		// page), so the log gets shorter: it keeps following.
		eval[bool](alice, `document.getElementById("content").value = "x".repeat(4001); document.getElementById("send").click(); true`)
		alice.waitFor("the composer's error", `document.getElementById("composer-error").textContent !== ""`, 5*time.Second)
		last = flood(10)
		alice.waitFor("still following the newest message", newestShown(last)+" && "+atBottom, 15*time.Second)
		alice.screenshot("busy-room-alice")
		waitFor(t, 15*time.Second, "the server's read position at the newest message", func() bool {
			n, ok := unreadOf(t, s.addr, aliceTok)["#general"]
			return ok && n == 0
		})
	})

	t.Run("a reload while the socket cannot connect shows the room and the dots", func(t *testing.T) {
		eval[bool](alice, `document.getElementById("content").value = ""; true`)
		alice.do(chromedp.SetValue("#dm-user", "bob"), chromedp.Click("#dm-form button"))
		alice.waitFor("the DM with bob, bob online", `document.getElementById("conv-title").textContent === "bob" && document.querySelector('#dms li[data-key="@bob"] .dot.online') !== null`, 20*time.Second)
		alice.send("hi bob")
		alice.waitFor("sent", msgState("hi bob")+` === "sent"`, 10*time.Second)
		waitFor(t, 15*time.Second, "history lists the DM", func() bool {
			var l struct{ Conversations []struct{ Peer string } }
			return apiGetTok(t, s.addr, aliceTok, "/v1/dm", &l) == 200 && len(l.Conversations) == 1 && l.Conversations[0].Peer == "bob"
		})
		alice.do(chromedp.Click(`#rooms li[data-key="#general"] button`))
		alice.waitFor("back in #general", `document.getElementById("conv-title").textContent === "# general"`, 5*time.Second)
		if _, err := chromedp.Call(alice.ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: wsBlocker}); err != nil {
			t.Fatal(err)
		}
		blockWS(alice)
		alice.do(chromedp.Reload())
		alice.waitFor("history and presence while disconnected", `document.body.dataset.conn !== "online" && `+
			countText(fmt.Sprintf("busy %d from dan", n))+` === 1 && document.querySelector('#dms li[data-key="@bob"] .dot.online') !== null`, 30*time.Second)
		alice.screenshot("reload-offline-alice")
		unblockWS(alice)
		retry(alice)
		online(alice)
		last := flood(1)
		alice.waitFor("live again", newestShown(last), 15*time.Second)
		alice.holds("each message once", allOnce(fmt.Sprintf("busy %d from dan", n-1), last), 1500*time.Millisecond)
	})

	t.Run("a DM that mentions you keeps its mark across a reload", func(t *testing.T) {
		if err := carol.ws.WriteJSON(map[string]string{"type": "private", "target": "alice", "content": "ping @alice, are you there?", "client_id": "mention-1"}); err != nil {
			t.Fatal(err)
		}
		mentioned := `(e => !!e && e.classList.contains("mentioned") && e.textContent === "1")(document.querySelector('#dms li[data-key="@carol"] .unread'))`
		alice.waitFor("unread and mentioned", mentioned, 15*time.Second)
		// What a reloaded page starts from: history has the DM.
		waitFor(t, 20*time.Second, "history counts the DM", func() bool { return unreadOf(t, s.addr, aliceTok)["@carol"] == 1 })
		alice.do(chromedp.Reload())
		online(alice)
		alice.waitFor("still mentioned after the reload", mentioned, 15*time.Second)
		if label := eval[string](alice, `document.querySelector('#dms li[data-key="@carol"] button').getAttribute("aria-label") || ""`); !strings.Contains(label, "mentions you") {
			t.Fatalf("the DM's label after the reload: %q, want it to say it mentions you", label)
		}
	})
}
