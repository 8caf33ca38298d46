package main

// Browser tests of defects an outside probe found in the web client: the
// DM open before a reload, unread counts across a reconnect, the order of
// rate-limited sends, paging past the DOM bound in both directions, the
// composer of a muted, removed or refused user, refused messages (retry,
// edit, dismiss), sign-in links opened in a tab already showing the page,
// and the layout at 360 px with long names and URLs.

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

// wsSpy records the page's WebSockets (window.__sockets) and the frames
// it sends (window.__sent), so a test can drop the connection from the
// browser's side and count joins. It must run before the page's scripts.
const wsSpy = `(() => { if (window.__sockets) return;
  const R = window.WebSocket; window.__sockets = []; window.__sent = [];
  const W = function (...a) { const s = new R(...a); window.__sockets.push(s);
    s.send = function (d) { window.__sent.push(d); return R.prototype.send.call(this, d); }; return s; };
  W.prototype = R.prototype; W.CONNECTING = 0; W.OPEN = 1; W.CLOSING = 2; W.CLOSED = 3;
  window.WebSocket = W; })()`

// spyOn installs wsSpy in p for the documents it loads next, and reloads.
func spyOn(p *browserPage) {
	p.t.Helper()
	if _, err := chromedp.Call(p.ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: wsSpy}); err != nil {
		p.t.Fatal(err)
	}
	p.do(chromedp.Reload())
	online(p)
}

// dropConnection cuts p off: new WebSockets fail (blockWS) and the open
// ones close.
func dropConnection(p *browserPage) {
	p.t.Helper()
	blockWS(p)
	eval[bool](p, `window.__sockets.forEach(s => s.close()); true`)
	p.waitFor("disconnected", `document.body.dataset.conn !== "online" && !document.getElementById("banner").hidden`, 15*time.Second)
}

// apiAs sends one HTTP request with tok and answers the status.
func apiAs(t *testing.T, addr, tok, method, path, body string) int {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, "http://"+addr+path, r)
	req.Header.Set("Authorization", "Bearer "+tok)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func manageAs(t *testing.T, addr, tok, room, action, user string) {
	t.Helper()
	if st := apiAs(t, addr, tok, "POST", "/v1/rooms/"+room+"/"+action, `{"username":"`+user+`"}`); st != 200 {
		t.Fatalf("%s %s in #%s: HTTP %d", action, user, room, st)
	}
}

// sendOrderJS is a JavaScript expression: the numbers of the messages
// "<prefix> N" in the order the open conversation shows them.
func sendOrderJS(prefix string) string {
	return `[...document.querySelectorAll("#msgs li.msg .body")].map(b => b.textContent).filter(t => t.startsWith(` + js(prefix) + `)).map(t => Number(t.slice(` + fmt.Sprint(len(prefix)) + `)))`
}

func inOrder(n []int, want int) bool {
	if len(n) != want {
		return false
	}
	for i, v := range n {
		if v != i+1 {
			return false
		}
	}
	return true
}

// TestBrowserFixesSendOrder: messages refused with rate_limited go out again
// in the order written, and every page (the sender's too) shows the log's
// order.
func TestBrowserFixesSendOrder(t *testing.T) {
	chromiumPath(t)
	shotDir = screenshotDir(t)
	dir := dataDir(t)
	s := startAll(t, dir, "-edge.rate=0.5", "-edge.rate-burst=3") // a refill the page cannot outrun (its sends wait for each fsync-covered ack)
	browser := newBrowser(t)
	aliceTok := tokenFromDataDir(t, dir, "alice")
	alice := signIn(t, browser, s.addr, "alice", aliceTok)
	bob := signIn(t, browser, s.addr, "bob", tokenFromDataDir(t, dir, "bob"))

	const n = 8
	var texts []string
	for i := 1; i <= n; i++ {
		texts = append(texts, fmt.Sprintf("order %d", i))
	}
	eval[bool](alice, `window.__states = new Set(); new MutationObserver(ms => { for (const m of ms) if (m.target.dataset && m.target.dataset.state) window.__states.add(m.target.dataset.state) })
		.observe(document.getElementById("log"), {subtree: true, attributes: true, attributeFilter: ["data-state"]}); true`)
	eval[bool](alice, `for (const t of `+mustJSON(texts)+`) { document.getElementById("content").value = t; document.getElementById("send").click(); } true`)
	for _, text := range texts {
		alice.waitFor("sent: "+text, msgState(text)+` === "sent"`, 40*time.Second)
	}
	if !eval[bool](alice, `window.__states.has("waiting")`) {
		t.Fatal("no send was rate limited: the test proves nothing")
	}
	bob.waitFor("every message on bob's page", allOnce(texts...), 15*time.Second)
	// History is the log's order.
	storedOnce(t, s.addr, aliceTok, "general", texts...)
	var stored []int
	for _, c := range historyContents(t, s.addr, aliceTok, "general") { // newest first
		var k int
		if _, err := fmt.Sscanf(c, "order %d", &k); err == nil {
			stored = append([]int{k}, stored...)
		}
	}
	if !inOrder(stored, n) {
		t.Fatalf("history holds the messages in the order %v, want 1..%d", stored, n)
	}
	for _, p := range []*browserPage{alice, bob} {
		p.waitFor("the log's order", `(o => o.length === `+fmt.Sprint(n)+` && o.every((v, i) => v === i + 1))(`+sendOrderJS("order ")+`)`, 5*time.Second)
	}
	alice.holds("still in order", `(o => o.every((v, i) => v === i + 1))(`+sendOrderJS("order ")+`)`, time.Second)
}

func TestBrowserFixes(t *testing.T) {
	chromiumPath(t)
	shotDir = screenshotDir(t)
	dir := dataDir(t)
	s := startAll(t, dir, "-edge.rate=2000", "-edge.rate-burst=2000")
	browser := newBrowser(t)
	aliceTok, bobTok := tokenFromDataDir(t, dir, "alice"), tokenFromDataDir(t, dir, "bob")
	alice := signIn(t, browser, s.addr, "alice", aliceTok)
	bob := signIn(t, browser, s.addr, "bob", bobTok)
	spyOn(bob)

	const title = `document.getElementById("conv-title").textContent`
	openDM := func(p *browserPage, peer string) {
		p.t.Helper()
		p.do(chromedp.SetValue("#dm-user", peer), chromedp.Click("#dm-form button"))
		p.waitFor("conversation with "+peer, title+` === `+js(peer), 5*time.Second)
	}
	const seenOnReply = `([...document.querySelectorAll("#msgs li.mine")].find(li => li.querySelector(".body").textContent === "a reply from bob") || document).querySelector(".seen") !== null`

	t.Run("a DM open before a reload shows its history and Seen", func(t *testing.T) {
		openDM(alice, "bob")
		alice.send("a DM to read after a reload")
		bob.waitFor("unread", badgeOf("@alice")+` === "1"`, 10*time.Second)
		bob.do(chromedp.Click(`#dms li[data-key="@alice"] button`))
		bob.waitFor("the DM", countText("a DM to read after a reload")+` === 1`, 10*time.Second)
		bob.send("a reply from bob")
		alice.waitFor("alice reads the reply", countText("a reply from bob")+` === 1`, 10*time.Second)
		bob.waitFor("Seen", seenOnReply, 10*time.Second)
		storedOnce(t, s.addr, bobTok, "@alice", "a DM to read after a reload", "a reply from bob") // the reloaded page's history
		bob.do(chromedp.Reload())
		online(bob)
		bob.waitFor("the open DM's history after the reload", title+` === "alice" && `+allOnce("a DM to read after a reload", "a reply from bob"), 15*time.Second)
		bob.waitFor("Seen after the reload", seenOnReply, 10*time.Second)
	})

	t.Run("DMs that arrive while disconnected are counted unread", func(t *testing.T) {
		// bob has read the conversation, and /v1/unread counts it at the
		// page's start.
		openDM(alice, "bob")
		alice.send("before the disconnect")
		bob.waitFor("the DM listed", `!!document.querySelector('#dms li[data-key="@alice"] button')`, 10*time.Second)
		bob.do(chromedp.Click(`#dms li[data-key="@alice"] button`))
		bob.waitFor("read", countText("before the disconnect")+` === 1 && `+badgeOf("@alice")+` === ""`, 10*time.Second)
		waitFor(t, 15*time.Second, "history has the read", func() bool { n, ok := unreadOf(t, s.addr, bobTok)["@alice"]; return ok && n == 0 })
		bob.do(chromedp.Click(`#rooms li[data-key="#general"] button`))
		bob.do(chromedp.Reload())
		online(bob)
		bob.waitFor("in #general, the DM listed and read", title+` === "# general" && !!document.querySelector('#dms li[data-key="@alice"]') && `+badgeOf("@alice")+` === ""`, 15*time.Second)
		dropConnection(bob)
		alice.send("while you were away 1")
		alice.send("while you were away 2")
		alice.waitFor("sent", msgState("while you were away 2")+` === "sent"`, 10*time.Second)
		waitFor(t, 15*time.Second, "history counts them", func() bool { return unreadOf(t, s.addr, bobTok)["@alice"] == 2 })
		unblockWS(bob)
		retry(bob)
		online(bob)
		bob.waitFor("unread 2 and the title total", badgeOf("@alice")+` === "2" && document.title.startsWith("(2)")`, 15*time.Second)
		bob.holds("still 2", badgeOf("@alice")+` === "2"`, 2*time.Second)
	})

	t.Run("deleting an unread message lowers the count", func(t *testing.T) {
		id := eval[string](alice, msgID("while you were away 2"))
		alice.do(chromedp.Click(`#msgs li[data-id="`+id+`"] button[data-act="delete"]`), chromedp.Click(`#msgs li[data-id="`+id+`"] button[data-act="confirm-delete"]`))
		alice.waitFor("deleted", byID(id)+`.classList.contains("deleted")`, 10*time.Second)
		bob.waitFor("unread 1", badgeOf("@alice")+` === "1" && document.title.startsWith("(1)")`, 10*time.Second)
	})

	t.Run("a refused message can be retried, edited or dismissed", func(t *testing.T) {
		if st := apiAs(t, s.addr, aliceTok, "PUT", "/v1/blocks/bob", ""); st/100 != 2 {
			t.Fatalf("block: HTTP %d", st)
		}
		openDM(bob, "alice")
		const unsent = `([...document.querySelectorAll("#msgs li.mine")].find(li => li.querySelector(".body").textContent === %s) || null)`
		failedWithActions := func(text string) string {
			li := fmt.Sprintf(unsent, js(text))
			return msgState(text) + ` === "failed" && ` + li + `.querySelector('button[data-act="retry"]').getAttribute("aria-label") === "Retry sending your message" && ` +
				li + `.querySelector('button[data-act="revise"]') !== null && ` + li + `.querySelector('button[data-act="dismiss"]') !== null`
		}
		bob.send("refused, then edited")
		bob.waitFor("failed, with Retry, Edit and Dismiss", failedWithActions("refused, then edited"), 10*time.Second)
		bob.screenshot("fixes-unsent-bob")
		// It outlives a reload.
		bob.do(chromedp.Reload())
		online(bob)
		bob.waitFor("still there after a reload", title+` === "alice" && `+failedWithActions("refused, then edited"), 15*time.Second)
		// Edit: the text goes back to the composer.
		bob.do(chromedp.Click(`#msgs li.mine[data-state="failed"] button[data-act="revise"]`))
		bob.waitFor("back in the composer", `document.getElementById("content").value === "refused, then edited" && `+countText("refused, then edited")+` === 0 && document.activeElement === document.getElementById("content")`, 5*time.Second)
		eval[bool](bob, `document.getElementById("content").value = ""; true`)
		// Dismiss: gone.
		bob.send("refused, then dismissed")
		bob.waitFor("failed", failedWithActions("refused, then dismissed"), 10*time.Second)
		bob.do(chromedp.Click(`#msgs li.mine[data-state="failed"] button[data-act="dismiss"]`))
		bob.waitFor("dismissed", countText("refused, then dismissed")+` === 0 && !(sessionStorage.getItem("chat:bob:outbox") || "").includes("dismissed")`, 5*time.Second)
		// Retry once the server would take it.
		bob.send("refused, then retried")
		bob.waitFor("failed", failedWithActions("refused, then retried"), 10*time.Second)
		if st := apiAs(t, s.addr, aliceTok, "DELETE", "/v1/blocks/bob", ""); st/100 != 2 {
			t.Fatalf("unblock: HTTP %d", st)
		}
		bob.do(chromedp.Click(`#msgs li.mine[data-state="failed"] button[data-act="retry"]`))
		bob.waitFor("sent", msgState("refused, then retried")+` === "sent" && `+countText("refused, then retried")+` === 1`, 10*time.Second)
		alice.waitFor("alice has it once", countText("refused, then retried")+` === 1`, 10*time.Second)
		alice.holds("once", countText("refused, then retried")+` === 1`, time.Second)
	})

	t.Run("the composer follows mute, removal, refusal and invitation", func(t *testing.T) {
		if st := apiAs(t, s.addr, aliceTok, "POST", "/v1/rooms/lab", `{"private":true}`); st/100 != 2 {
			t.Fatalf("create #lab: HTTP %d", st)
		}
		manageAs(t, s.addr, aliceTok, "lab", "invite", "bob")
		bob.do(chromedp.SetValue("#join-room", "lab"), chromedp.Click("#join-form button"))
		bob.waitFor("in #lab", title+` === "# lab" && !document.getElementById("content").disabled`, 10*time.Second)
		bob.send("bob's own words in lab")
		bob.waitFor("sent, with Edit", msgState("bob's own words in lab")+` === "sent" && !!document.querySelector('#msgs li.mine button[data-act="edit"]')`, 10*time.Second)
		const closed = `document.getElementById("content").disabled && document.getElementById("send").disabled`
		const open = `!document.getElementById("content").disabled && !document.getElementById("send").disabled`

		manageAs(t, s.addr, aliceTok, "lab", "mute", "bob")
		bob.waitFor("muted: composer closed, saying why", closed+` && document.getElementById("conv-notice").textContent.includes("muted")`, 10*time.Second)
		manageAs(t, s.addr, aliceTok, "lab", "unmute", "bob")
		bob.waitFor("unmuted: composer open", open+` && document.getElementById("composer-error").textContent === ""`, 10*time.Second)

		manageAs(t, s.addr, aliceTok, "lab", "remove", "bob")
		bob.waitFor("removed: composer closed, no Edit or Delete", closed+` && document.querySelector('#rooms li[data-key="#lab"]').classList.contains("revoked") && !document.querySelector('#msgs li.mine button[data-act="edit"], #msgs li.mine button[data-act="delete"]')`, 10*time.Second)
		joinsBefore := eval[int](bob, `window.__sent.filter(f => JSON.parse(f).type === "join" && JSON.parse(f).room === "lab").length`)
		manageAs(t, s.addr, aliceTok, "lab", "invite", "bob")
		bob.waitFor("invited again: joined, composer open", open+` && !document.querySelector('#rooms li[data-key="#lab"]').classList.contains("revoked") && document.getElementById("conv-notice").textContent === ""`, 10*time.Second)
		alice.do(chromedp.SetValue("#join-room", "lab"), chromedp.Click("#join-form button"))
		alice.waitFor("alice in #lab", title+` === "# lab" && !document.getElementById("content").disabled`, 10*time.Second)
		alice.send("welcome back, bob")
		bob.waitFor("live again", countText("welcome back, bob")+` === 1`, 10*time.Second)
		if n := eval[int](bob, `window.__sent.filter(f => JSON.parse(f).type === "join" && JSON.parse(f).room === "lab").length`) - joinsBefore; n != 1 {
			t.Fatalf("%d joins of #lab after the invitation, want 1", n)
		}

		manageAs(t, s.addr, aliceTok, "lab", "ban", "bob")
		bob.waitFor("banned: composer closed", closed+` && document.getElementById("conv-notice").textContent.includes("banned")`, 10*time.Second)
		bob.do(chromedp.SetValue("#join-room", "lab"), chromedp.Click("#join-form button"))
		bob.waitFor("the join refused: composer still closed, saying why", `document.getElementById("join-error").textContent !== "" && `+closed+` && document.getElementById("conv-notice").textContent.includes("Could not join")`, 10*time.Second)
		bob.holds("stays closed", closed, time.Second)
		manageAs(t, s.addr, aliceTok, "lab", "unban", "bob")
		manageAs(t, s.addr, aliceTok, "lab", "invite", "bob")
		bob.waitFor("invited after the unban: composer open", open+` && document.getElementById("conv-notice").textContent === ""`, 10*time.Second)
		bob.send("back after the ban")
		bob.waitFor("sent", msgState("back after the ban")+` === "sent"`, 10*time.Second)
	})

	t.Run("a sign-in link opened in a tab showing the page signs in", func(t *testing.T) {
		erin := openPage(t, browser, "erin", "http://"+s.addr+"/")
		erin.waitFor("sign-in screen", `!document.getElementById("signin").hidden`, 10*time.Second)
		eval[bool](erin, `window.__before = true; location.hash = "#token=" + `+js(tokenFromDataDir(t, dir, "erin"))+`; true`)
		erin.newDocument()
		erin.waitFor("signed in, the token gone from the address", `document.body.dataset.conn === "online" && document.getElementById("me").textContent === "erin" && !location.href.includes("token")`, 20*time.Second)
	})

	t.Run("paging past the DOM bound keeps the reader's place both ways", func(t *testing.T) {
		const total = 330
		var texts []string
		for i := 0; i < total; i++ {
			texts = append(texts, fmt.Sprintf("deep %03d", i))
		}
		loaderTok := tokenFromDataDir(t, dir, "loader")
		loader := dialUser(t, s.addr, loaderTok)
		loader.sendAll("deep", texts...)
		storedOnce(t, s.addr, loaderTok, "deep", texts[total-50:]...)
		alice.do(chromedp.SetValue("#join-room", "deep"), chromedp.Click("#join-form button"))
		alice.waitFor("newest page", title+` === "# deep" && `+allOnce("deep 329", "deep 280"), 15*time.Second)
		eval[bool](alice, `window.__first = () => { const top = document.getElementById("log").getBoundingClientRect().top;
			for (const li of document.querySelectorAll("#msgs li.msg")) { if (li.getBoundingClientRect().bottom > top + 1) {
				const m = /^deep (\d+)$/.exec((li.querySelector(".body") || {}).textContent || ""); return m ? Number(m[1]) : -1; } } return -1; };
			window.__gapless = () => { const n = [...document.querySelectorAll("#msgs li.msg .body")].map(b => /^deep (\d+)$/.exec(b.textContent)).filter(Boolean).map(m => Number(m[1]));
				return n.length <= 300 && n.every((v, i) => i === 0 || v === n[i - 1] + 1); }; true`)
		// A reader scrolling by small steps: the first message in view
		// moves a few messages at a time, never jumps, and never stalls.
		scroll := func(dir int, done string) {
			t.Helper()
			prev := eval[int](alice, `window.__first()`)
			deadline := time.Now().Add(60 * time.Second)
			for !eval[bool](alice, done) {
				if time.Now().After(deadline) {
					t.Fatalf("scrolling stalled at deep %03d; %s", prev, alice.bodyText())
				}
				eval[bool](alice, fmt.Sprintf(`(document.getElementById("log").scrollTop += %d, true)`, dir*120))
				time.Sleep(30 * time.Millisecond) // a reader's pace
				cur := eval[int](alice, `window.__first()`)
				if cur < 0 || (dir < 0 && (cur > prev || prev-cur > 12)) || (dir > 0 && (cur < prev || cur-prev > 12)) {
					alice.screenshot("fixes-paging-jump")
					t.Fatalf("scrolling %+d px: the first message in view went from deep %03d to deep %03d", dir*120, prev, cur)
				}
				if !eval[bool](alice, `window.__gapless()`) {
					t.Fatalf("the shown messages have a gap: %v", eval[[]int](alice, sendOrderJS("deep ")))
				}
				prev = cur
			}
		}
		scroll(-1, `window.__first() === 0 && document.getElementById("older").hidden`)
		if n := eval[int](alice, countText("deep 329")); n != 0 {
			t.Fatalf("the newest message is still in the DOM at the top (%d), want it dropped", n)
		}
		scroll(1, `document.getElementById("newer").hidden && `+countText("deep 329")+` === 1 && (l => l.scrollTop + l.clientHeight >= l.scrollHeight - 8)(document.getElementById("log"))`)
		alice.do(chromedp.Click(`#rooms li[data-key="#general"] button`))
	})

	t.Run("what another device read while this tab was away is not unread after the reconnect", func(t *testing.T) {
		bob.do(chromedp.Click(`#rooms li[data-key="#general"] button`))
		bob.waitFor("in #general", title+` === "# general" && `+badgeOf("@alice")+` === ""`, 10*time.Second)
		phone := signIn(t, browser, s.addr, "bob", bobTok) // bob's other device
		dropConnection(bob)
		openDM(alice, "bob")
		alice.send("read on the phone 1")
		alice.send("read on the phone 2")
		alice.waitFor("sent", msgState("read on the phone 2")+` === "sent"`, 10*time.Second)
		phone.waitFor("the DM listed", `!!document.querySelector('#dms li[data-key="@alice"] button')`, 10*time.Second)
		phone.do(chromedp.Click(`#dms li[data-key="@alice"] button`))
		phone.waitFor("read on the phone", countText("read on the phone 2")+` === 1`, 10*time.Second)
		waitFor(t, 15*time.Second, "history has the phone's read", func() bool { n, ok := unreadOf(t, s.addr, bobTok)["@alice"]; return ok && n == 0 })
		unblockWS(bob)
		retry(bob)
		online(bob)
		bob.waitFor("no unread after the reconnect", badgeOf("@alice")+` === "" && !document.title.startsWith("(")`, 15*time.Second)
		bob.holds("still none", badgeOf("@alice")+` === ""`, 3*time.Second)
	})

	t.Run("a room left with unsent messages stays left after a reload", func(t *testing.T) {
		eval[bool](bob, `document.getElementById("join-room").value = "left-behind"; document.getElementById("join-form").requestSubmit(); true`)
		bob.waitFor("in the room", title+` === "# left-behind" && document.body.dataset.conn === "online"`, 10*time.Second)
		dropConnection(bob)
		bob.send("queued, then the room was left")
		bob.waitFor("queued", msgState("queued, then the room was left")+` === "queued"`, 5*time.Second)
		bob.do(chromedp.Click("#leave"))
		bob.waitFor("left", `!document.querySelector('#rooms li[data-key="#left-behind"]')`, 5*time.Second)
		unblockWS(bob)
		bob.do(chromedp.Reload())
		online(bob)
		bob.holds("not back in the sidebar, nothing queued", `!document.querySelector('#rooms li[data-key="#left-behind"]') && !(sessionStorage.getItem("chat:bob:outbox") || "").includes("room was left")`, 3*time.Second)
		for _, m := range historyContents(t, s.addr, bobTok, "left-behind") {
			if m == "queued, then the room was left" {
				t.Fatal("the message queued for a room that was then left was sent")
			}
		}
	})

	t.Run("360 px: long names and URLs stay within the width", func(t *testing.T) {
		longUser := ("Long_user_" + strings.Repeat("abcdefgh", 8))[:64]
		longRoom := ("room-" + strings.Repeat("longroom", 8))[:64]
		p := signIn(t, browser, s.addr, longUser, tokenFromDataDir(t, dir, longUser))
		p.do(chromedp.EmulateViewport(360, 740))
		// An element wider than its scroll or clip box is cut, not overflowing.
		eval[bool](p, `window.__clipped = (e) => { for (let a = e.parentElement; a && a.id !== "app"; a = a.parentElement) {
			if (getComputedStyle(a).overflowX !== "visible") return a.getBoundingClientRect().right <= 361; } return false; }; true`)
		eval[bool](p, `document.getElementById("join-room").value = `+js(longRoom)+`; document.getElementById("join-form").requestSubmit(); true`)
		p.waitFor("in the long room", title+` === `+js("# "+longRoom)+` && document.body.dataset.conn === "online"`, 10*time.Second)
		p.send("see https://example.com/" + strings.Repeat("x", 120) + " and " + strings.Repeat("unbroken", 20) + " zebrafish")
		// The room's announcement goes live to joined members: wait for the
		// join (the router lists the member once the edge has it).
		p.waitFor("joined", `document.getElementById("members").textContent.includes(`+js(longUser)+`)`, 20*time.Second)
		announceAs(t, s.addr, adminToken(t, dir), "", "Maintenance tonight: read https://example.com/"+strings.Repeat("status/", 30)+" first")
		announceAs(t, s.addr, adminToken(t, dir), longRoom, "room note https://example.com/"+strings.Repeat("y", 150))
		p.waitFor("the banner and the room's announcement", `!document.getElementById("announcement").hidden && !!document.querySelector("#msgs li.announcement")`, 10*time.Second)
		const fits = `document.documentElement.scrollWidth <= 360 && document.body.scrollWidth <= 360 &&
			["signout", "announcement-close", "menu", "send", "conv-title"].every(id => { const r = document.getElementById(id).getBoundingClientRect(); return r.left >= 0 && r.right <= 360; }) &&
			[...document.querySelectorAll("#app *")].every(e => e.closest("#sidebar") || !e.getClientRects().length || e.getBoundingClientRect().right <= 361 || window.__clipped(e))`
		if !eval[bool](p, fits) {
			t.Logf("wider than 360 px (document %d): %v", eval[int](p, `document.documentElement.scrollWidth`), eval[[]string](p, `[...document.querySelectorAll("#app *")].filter(e => !e.closest("#sidebar") && e.getClientRects().length && e.getBoundingClientRect().right > 361 && !window.__clipped(e)).map(e => e.tagName + "#" + e.id + "." + e.className + " " + Math.round(e.getBoundingClientRect().right))`))
		}
		p.waitFor("nothing wider than the viewport", fits, 5*time.Second)
		p.screenshot("fixes-narrow-long-names")
		// Searching from the drawer closes it over the results.
		p.do(chromedp.Click("#menu"))
		p.waitFor("drawer open", `document.getElementById("sidebar").classList.contains("open") && document.getElementById("sidebar").getBoundingClientRect().left >= 0`, 5*time.Second)
		p.do(chromedp.SetValue("#search-q", "zebrafish"), chromedp.Click("#search-form button"))
		p.waitFor("results shown, drawer closed, focus in the results", `!document.getElementById("search-results").hidden && !document.getElementById("sidebar").classList.contains("open") && document.getElementById("search-results").contains(document.activeElement)`, 10*time.Second)
		// Banner, results and room details open: the log keeps a usable height.
		p.do(chromedp.Click("#details"))
		p.waitFor("details open", `!document.getElementById("panel").hidden`, 5*time.Second)
		p.waitFor("the log keeps a usable height", `document.getElementById("log").clientHeight >= 90 && `+fits, 5*time.Second)
		p.screenshot("fixes-narrow-panels")
	})
}
