package main

// Browser tests of the web client's harder paths: a resume the log can no
// longer serve (recovered:false), the rate limit, a refused handshake
// (HTTP 429), the offline queue across a reload, paging past the DOM bound,
// announcements, close 1008 at the token's expiry, keyboard-only use and
// colour contrast.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/gorilla/websocket"

	"github.com/chatsys/chat/pkg/auth"
)

// wsUser is a plain WebSocket client of the test (no browser): it sends
// messages and waits for their acks.
type wsUser struct {
	t      *testing.T
	ws     *websocket.Conn
	frames chan map[string]any
	n      int
}

func dialUser(t *testing.T, addr, tok string) *wsUser {
	t.Helper()
	u := &wsUser{t: t, ws: dialWS(t, addr, tok), frames: make(chan map[string]any, 8192)}
	go func() {
		defer close(u.frames)
		for {
			var m map[string]any
			if err := u.ws.ReadJSON(&m); err != nil {
				return
			}
			u.frames <- m
		}
	}()
	return u
}

// sendAll sends every text to room (pipelined) and waits until each is
// acknowledged; a rate-limited send is sent again after a pause.
func (u *wsUser) sendAll(room string, texts ...string) {
	u.t.Helper()
	pending := map[string]string{}
	write := func(cid, text string) {
		u.t.Helper()
		if err := u.ws.WriteJSON(map[string]string{"type": "chat", "room": room, "content": text, "client_id": cid}); err != nil {
			u.t.Fatalf("send: %v", err)
		}
	}
	for _, text := range texts {
		u.n++
		cid := fmt.Sprintf("test-%d-%d", time.Now().UnixNano(), u.n)
		pending[cid] = text
		write(cid, text)
	}
	deadline := time.After(90 * time.Second)
	for len(pending) > 0 {
		select {
		case m, ok := <-u.frames:
			if !ok {
				u.t.Fatal("the test's WebSocket closed")
			}
			cid, _ := m["client_id"].(string)
			text, mine := pending[cid]
			if !mine {
				continue
			}
			switch m["type"] {
			case "ack":
				delete(pending, cid)
			case "error":
				if m["code"] != "rate_limited" && m["code"] != "unavailable" {
					u.t.Fatalf("send %q: %v", text, m)
				}
				time.Sleep(300 * time.Millisecond) // the bucket refills; the frames queue meanwhile
				write(cid, text)
			}
		case <-deadline:
			u.t.Fatalf("%d sends not acknowledged within 90s", len(pending))
		}
	}
}

// blockWS makes new WebSockets fail in p's page (a network outage seen
// from the browser); unblockWS ends it. With reloads, the block also
// applies to the pages loaded next while the tab's sessionStorage says so.
const wsBlocker = `window.__RealWebSocket = window.__RealWebSocket || window.WebSocket;
if (sessionStorage.getItem("test.offline")) window.WebSocket = function () { throw new Error("network down (test)"); };`

func blockWS(p *browserPage) {
	p.t.Helper()
	eval[bool](p, `sessionStorage.setItem("test.offline", "1"); `+wsBlocker+`; true`)
}

func unblockWS(p *browserPage) {
	p.t.Helper()
	eval[bool](p, `sessionStorage.removeItem("test.offline"); if (window.__RealWebSocket) window.WebSocket = window.__RealWebSocket; true`)
}

// retry waits until the banner offers "Retry now" and presses it.
func retry(p *browserPage) {
	p.t.Helper()
	p.waitFor("retry now", `!document.getElementById("retry").hidden && (document.getElementById("retry").click(), true)`, 20*time.Second)
}

// historyContents lists the contents of a room's newest messages in history.
func historyContents(t *testing.T, addr, tok, room string) []string {
	t.Helper()
	path := "/v1/rooms/" + room + "/messages?limit=200"
	if peer, ok := strings.CutPrefix(room, "@"); ok { // a DM: "@peer"
		path = "/v1/dm/" + peer + "/messages?limit=200"
	}
	req, _ := http.NewRequest("GET", "http://"+addr+path, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var pg struct {
		Messages []struct{ Content string } `json:"messages"`
	}
	json.NewDecoder(resp.Body).Decode(&pg)
	var out []string
	for _, m := range pg.Messages {
		out = append(out, m.Content)
	}
	return out
}

// storedOnce waits until history holds every text, and fails if one is
// stored more than once.
func storedOnce(t *testing.T, addr, tok, room string, texts ...string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		n := map[string]int{}
		for _, c := range historyContents(t, addr, tok, room) {
			n[c]++
		}
		missing := 0
		for _, text := range texts {
			if n[text] > 1 {
				t.Fatalf("history holds %q %d times, want 1", text, n[text])
			}
			if n[text] == 0 {
				missing++
			}
		}
		if missing == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d messages never reached history", missing, len(texts))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// allOnce is a JavaScript expression: every text shows exactly once.
func allOnce(texts ...string) string {
	var parts []string
	for _, text := range texts {
		parts = append(parts, countText(text)+` === 1`)
	}
	return strings.Join(parts, " && ")
}

func adminToken(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, auth.SecretFile))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := auth.NewHS256Minter(strings.TrimSpace(string(b)), "").Mint("root", true, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func announceAs(t *testing.T, addr, tok, room, content string) {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"content": content, "room": room})
	req, _ := http.NewRequest("POST", "http://"+addr+"/v1/admin/announce", strings.NewReader(string(body)))
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("announce: %s", resp.Status)
	}
}

// TestBrowserRecoveryAndLimits runs the system with tight limits: a rate of
// 2 messages/s (burst 3), resumes of at most 3 records, one connection per
// user.
func TestBrowserRecoveryAndLimits(t *testing.T) {
	chromiumPath(t)
	shotDir = screenshotDir(t)
	dir := dataDir(t)
	addr := freeAddr(t)
	args := []string{"-http.addr=" + addr, "-edge.max-replay=3", "-edge.rate=0.5", "-edge.rate-burst=3", "-edge.max-conns-per-user=1"}
	s := startAll(t, dir, args...)
	browser := newBrowser(t)
	aliceTok := tokenFromDataDir(t, dir, "alice")
	alice := signIn(t, browser, addr, "alice", aliceTok)

	burst := []string{"burst 1", "burst 2", "burst 3", "burst 4", "burst 5", "burst 6", "burst 7"}
	t.Run("rate_limited: the page waits and retries, each message sent once", func(t *testing.T) {
		eval[bool](alice, `window.__states = new Set(); new MutationObserver(ms => { for (const m of ms) if (m.target.dataset && m.target.dataset.state) window.__states.add(m.target.dataset.state) })
			.observe(document.getElementById("log"), {subtree: true, attributes: true, attributeFilter: ["data-state"]}); true`)
		// Seven sends at once, as fast as a user pasting: more than the burst.
		eval[bool](alice, `for (const t of `+mustJSON(burst)+`) { document.getElementById("content").value = t; document.getElementById("send").click(); } true`)
		alice.waitFor("rate limited, waiting", `window.__states.has("waiting")`, 10*time.Second)
		alice.screenshot("rate-limited-alice")
		for _, text := range burst {
			alice.waitFor("sent: "+text, msgState(text)+` === "sent"`, 30*time.Second)
		}
		alice.holds("each once", allOnce(burst...), 1500*time.Millisecond)
		storedOnce(t, addr, aliceTok, "general", burst...)
	})

	missed := []string{"missed 1", "missed 2", "missed 3", "missed 4", "missed 5", "missed 6"}
	t.Run("recovered:false after a restart; a refused handshake backs off", func(t *testing.T) {
		blockWS(alice)
		s.stop()
		alice.waitFor("disconnected", `document.body.dataset.conn !== "online" && !document.getElementById("banner").hidden`, 15*time.Second)
		s = startAll(t, dir, args...)
		// bob writes more than -edge.max-replay while alice is away.
		bob := dialUser(t, addr, tokenFromDataDir(t, dir, "bob"))
		bob.sendAll("general", missed...)
		// Another connection of alice's takes her only slot: the page's
		// handshake gets HTTP 429, which a browser sees as 1006.
		hold, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/ws?token="+aliceTok, nil)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		defer hold.Close()
		readType(t, hold, "welcome")
		before := handshakes(t, addr)
		unblockWS(alice)
		retry(alice)
		alice.waitFor("refused banner", `document.getElementById("banner-text").textContent.includes("refuses connections")`, 15*time.Second)
		alice.screenshot("refused-alice")
		alice.holds("no tight loop", `document.body.dataset.conn !== "online"`, 3*time.Second)
		after := handshakes(t, addr)
		if n := after["too_many_connections"] - before["too_many_connections"]; n < 1 || n > 2 {
			t.Fatalf("%v refused handshakes in about 3 s, want 1 or 2 (backoff); before %v, after %v", n, before, after)
		}
		hold.Close()
		retry(alice)
		online(alice)
		alice.waitFor("recovered:false seen", `Number(document.body.dataset.unrecovered || 0) >= 1`, 15*time.Second)
		alice.waitFor("every message once", allOnce(append(burst, missed...)...), 15*time.Second)
		bob.sendAll("general", "live after the gap")
		alice.waitFor("live again", allOnce("live after the gap"), 10*time.Second)
		alice.holds("each message once", allOnce(append(append(burst, missed...), "live after the gap")...), 2*time.Second)
	})

	t.Run("the offline queue survives a reload and is sent once", func(t *testing.T) {
		if _, err := chromedp.Call(alice.ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: wsBlocker}); err != nil {
			t.Fatal(err)
		}
		blockWS(alice)
		s.stop()
		alice.waitFor("disconnected", `document.body.dataset.conn !== "online"`, 15*time.Second)
		const text = "written offline, sent after a reload"
		alice.send(text)
		alice.waitFor("queued", msgState(text)+` === "queued" && (sessionStorage.getItem("chat:alice:outbox") || "").includes(`+js(text)+`)`, 5*time.Second)
		s = startAll(t, dir, args...)
		alice.do(chromedp.Reload())
		alice.waitFor("still queued after the reload", `document.getElementById("conv-title").textContent === "# general" && `+msgState(text)+` === "queued" && document.body.dataset.conn !== "online"`, 15*time.Second)
		alice.screenshot("queued-after-reload-alice")
		unblockWS(alice)
		retry(alice)
		online(alice)
		alice.waitFor("sent", msgState(text)+` === "sent" && !sessionStorage.getItem("chat:alice:outbox")`, 20*time.Second)
		alice.holds("shown once", allOnce(text), 1500*time.Millisecond)
		storedOnce(t, addr, aliceTok, "general", text)
	})
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// newDocument waits until the page marked with window.__before has been
// replaced by a new document (a reload the page made itself).
func (p *browserPage) newDocument() {
	p.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(p.ctx, 2*time.Second)
		old, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`!!window.__before && document.readyState !== "loading"`))
		cancel()
		if err == nil && !old {
			return
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s: the page did not reload", p.name)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// pressEnter presses Enter as a keyboard does: one keyDown carrying the
// text "\r" (the browser derives keypress from it, and a handler that
// prevents the keydown's default suppresses it), then keyUp. chromedp's
// KeyEvent("\r") sends the character as a separate event, which reaches
// the focused element even when keydown was handled.
func (p *browserPage) pressEnter() {
	p.t.Helper()
	down := input.DispatchKeyEventParams{Type: input.DispatchKeyEventTypeKeyDown, Key: "Enter", Code: "Enter", Text: "\r", UnmodifiedText: "\r", WindowsVirtualKeyCode: 13, NativeVirtualKeyCode: 13}
	up := input.DispatchKeyEventParams{Type: input.DispatchKeyEventTypeKeyUp, Key: "Enter", Code: "Enter", WindowsVirtualKeyCode: 13, NativeVirtualKeyCode: 13}
	for _, ev := range []input.DispatchKeyEventParams{down, up} {
		ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
		_, err := chromedp.Call(ctx, input.DispatchKeyEvent, ev)
		cancel()
		if err != nil {
			p.t.Fatalf("%s: Enter: %v", p.name, err)
		}
	}
}

// tabTo presses Tab until the element matching sel has the focus.
func (p *browserPage) tabTo(sel string) {
	p.t.Helper()
	for i := 0; i < 150; i++ {
		if eval[bool](p, `!!document.activeElement && document.activeElement.matches(`+js(sel)+`)`) {
			return
		}
		p.do(chromedp.KeyEvent("\t"))
	}
	p.t.Fatalf("%s: Tab never reached %s; focus on %s", p.name, sel, eval[string](p, `document.activeElement ? document.activeElement.outerHTML.slice(0, 200) : "nothing"`))
}

// contrastJS computes, for each named selector, the WCAG contrast ratio of
// the first visible matching element's text against its effective
// background (the backgrounds of it and its ancestors composited on white).
const contrastJS = `((checks) => {
  const parse = (c) => {
    const m = /rgba?\(([^)]+)\)/.exec(c || "");
    if (!m) return null;
    const p = m[1].split(/[\s,\/]+/).filter(Boolean).map(Number);
    return { r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1 };
  };
  const over = (top, bottom) => ({ r: top.r * top.a + bottom.r * (1 - top.a), g: top.g * top.a + bottom.g * (1 - top.a), b: top.b * top.a + bottom.b * (1 - top.a), a: 1 });
  const lum = (c) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(c.r) + 0.7152 * f(c.g) + 0.0722 * f(c.b);
  };
  const background = (el) => {
    const layers = [];
    for (let e = el; e; e = e.parentElement) {
      const c = parse(getComputedStyle(e).backgroundColor);
      if (c && c.a > 0) { layers.push(c); if (c.a >= 1) break; }
    }
    let acc = { r: 255, g: 255, b: 255, a: 1 };
    for (const l of layers.reverse()) acc = over(l, acc);
    return acc;
  };
  const out = {};
  for (const [name, sel] of Object.entries(checks)) {
    const el = [...document.querySelectorAll(sel)].find((e) => e.getClientRects().length > 0 && e.textContent.trim() !== "");
    if (!el) { out[name] = -1; continue; }
    const bg = background(el), fg = over(parse(getComputedStyle(el).color), bg);
    const l1 = lum(fg), l2 = lum(bg);
    out[name] = (Math.max(l1, l2) + 0.05) / (Math.min(l1, l2) + 0.05);
  }
  return out;
})`

// unlabelledJS lists the form controls without an accessible name.
const unlabelledJS = `[...document.querySelectorAll("button, input, textarea, select")].filter((e) => e.type !== "hidden" &&
  !(e.getAttribute("aria-label") || "").trim() && !e.getAttribute("aria-labelledby") && !(e.labels && e.labels.length) &&
  !(e.tagName === "BUTTON" && e.textContent.trim()) && !(e.title || "").trim()).map((e) => e.outerHTML.slice(0, 120))`

// TestBrowserPagingAnnouncementsKeyboard: a room with more messages than
// the page keeps, admin announcements, close 1008 at a token's expiry,
// keyboard-only use, colour contrast and labels.
func TestBrowserPagingAnnouncementsKeyboard(t *testing.T) {
	chromiumPath(t)
	shotDir = screenshotDir(t)
	dir := dataDir(t)
	s := startAll(t, dir, "-edge.rate=2000", "-edge.rate-burst=2000")
	browser := newBrowser(t)
	alice := signIn(t, browser, s.addr, "alice", tokenFromDataDir(t, dir, "alice"))
	bob := signIn(t, browser, s.addr, "bob", tokenFromDataDir(t, dir, "bob"))

	t.Run("paging past the DOM bound reaches the oldest message", func(t *testing.T) {
		const total = 330
		var texts []string
		for i := 0; i < total; i++ {
			texts = append(texts, fmt.Sprintf("bulk %03d", i))
		}
		loader := dialUser(t, s.addr, tokenFromDataDir(t, dir, "loader"))
		loader.sendAll("bulk", texts...)
		storedOnce(t, s.addr, tokenFromDataDir(t, dir, "loader"), "bulk", texts[total-50:]...)
		alice.do(chromedp.SetValue("#join-room", "bulk"), chromedp.Click("#join-form button"))
		alice.waitFor("newest page", `document.getElementById("conv-title").textContent === "# bulk" && `+allOnce("bulk 329", "bulk 280"), 15*time.Second)
		// The largest number of messages the conversation ever held in the DOM.
		eval[bool](alice, `window.__maxDom = 0; const l = document.getElementById("msgs"); window.__bulk = l;
			new MutationObserver(() => { window.__maxDom = Math.max(window.__maxDom, l.querySelectorAll("li.msg").length) }).observe(l, {childList: true}); true`)
		// Scroll to the top until the oldest message shows.
		alice.waitFor("oldest reached by scrolling up", `(document.getElementById("log").scrollTop = 0, `+countText("bulk 000")+` === 1 && document.getElementById("older").hidden)`, 60*time.Second)
		alice.screenshot("paging-top-alice")
		if n := eval[int](alice, `window.__maxDom`); n > 300 || n < 250 {
			t.Fatalf("the DOM held up to %d messages, want at most 300 (and the bound reached)", n)
		}
		if n := eval[int](alice, countText("bulk 329")); n != 0 {
			t.Fatalf("the newest message is still in the DOM at the top (%d), want it dropped", n)
		}
		// A live message while the page shows old history: it shows once
		// after scrolling back down.
		loader.sendAll("bulk", "bulk live")
		alice.holds("not shown while reading old messages", countText("bulk live")+` === 0 && !document.getElementById("newer").hidden`, time.Second)
		alice.waitFor("newest reached by scrolling down", `(document.getElementById("log").scrollTop = document.getElementById("log").scrollHeight, `+
			allOnce("bulk 329", "bulk live")+` && document.getElementById("newer").hidden)`, 60*time.Second)
		if n := eval[int](alice, `window.__maxDom`); n > 300 {
			t.Fatalf("the DOM held up to %d messages, want at most 300", n)
		}
		if !eval[bool](alice, `window.__bulk === document.getElementById("msgs") && document.querySelectorAll("#msgs li.msg").length <= 300`) {
			t.Fatal("more than 300 messages in the DOM")
		}
		alice.do(chromedp.Click(`#rooms li[data-key="#general"] button`))
	})

	t.Run("announcements stand out in the room and as a banner", func(t *testing.T) {
		admin := adminToken(t, dir)
		bob.do(chromedp.Click(`#rooms li[data-key="#general"] button`))
		alice.send("an ordinary message")
		announceAs(t, s.addr, admin, "general", "maintenance at noon")
		for _, p := range []*browserPage{alice, bob} {
			p.waitFor("announcement in the room", `(() => { const li = [...document.querySelectorAll("#msgs li.msg.announcement")].find(li => li.querySelector(".body").textContent === "maintenance at noon");
				const plain = document.querySelector("#msgs li.msg:not(.announcement):not(.note)");
				return !!li && li.querySelector(".user").textContent.includes("Announcement") && li.querySelectorAll("button").length === 0 &&
					!!plain && getComputedStyle(li).backgroundColor !== getComputedStyle(plain).backgroundColor && getComputedStyle(li).borderLeftColor !== getComputedStyle(plain).borderLeftColor })()`, 10*time.Second)
		}
		// A broadcast reaches every page whatever room is open.
		bob.do(chromedp.Click(`#rooms li[data-key="#general"] button`))
		alice.do(chromedp.SetValue("#join-room", "elsewhere"), chromedp.Click("#join-form button"))
		alice.waitFor("in #elsewhere", `document.getElementById("conv-title").textContent === "# elsewhere" && document.body.dataset.conn === "online"`, 10*time.Second)
		announceAs(t, s.addr, admin, "", "the server restarts at five")
		for _, p := range []*browserPage{alice, bob} {
			p.waitFor("banner", `!document.getElementById("announcement").hidden && document.getElementById("announcement-text").textContent === "the server restarts at five" && document.getElementById("announcement").getAttribute("role") === "status" && document.getElementById("announcement").textContent.includes("Announcement")`, 10*time.Second)
		}
		alice.screenshot("announcement-alice")
		bob.screenshot("announcement-bob")
		alice.do(chromedp.Click("#announcement-close"))
		alice.waitFor("dismissed", `document.getElementById("announcement").hidden`, 5*time.Second)
	})

	t.Run("close 1008 at the token's expiry shows sign-in without reconnecting", func(t *testing.T) {
		tok := mintFromDataDir(t, dir, "carol", 30*time.Second) // room for a new browser context to sign in under load
		carol := signIn(t, browser, s.addr, "carol", tok)
		before := handshakes(t, s.addr)
		carol.waitFor("sign-in screen after 1008", `!document.getElementById("signin").hidden && document.getElementById("signin-reason").textContent.includes("expired") && document.body.dataset.lastClose === "1008"`, 45*time.Second)
		carol.holds("no reconnect loop", `!document.getElementById("signin").hidden`, 2*time.Second)
		after := handshakes(t, s.addr)
		if total(after) != total(before) {
			t.Fatalf("handshakes went from %v to %v after the token expired, want none", before, after)
		}
	})

	t.Run("keyboard alone: sign in, join, send, switch rooms, open a DM", func(t *testing.T) {
		dave := openPage(t, browser, "dave", "http://"+s.addr+"/")
		dave.waitFor("sign-in screen focused", `!document.getElementById("signin").hidden && document.activeElement === document.getElementById("signin-token")`, 10*time.Second)
		eval[bool](dave, `window.__before = true`)
		dave.do(chromedp.KeyEvent(tokenFromDataDir(t, dir, "dave")))
		dave.pressEnter()
		dave.newDocument()
		dave.waitFor("signed in", `document.body.dataset.conn === "online" && document.getElementById("me").textContent === "dave"`, 30*time.Second)
		if bad := eval[[]string](dave, unlabelledJS); len(bad) > 0 {
			t.Fatalf("controls without a label: %v", bad)
		}
		dave.tabTo("#join-room")
		dave.do(chromedp.KeyEvent("keys"))
		dave.pressEnter()
		dave.waitFor("in #keys, composer focused", `document.getElementById("conv-title").textContent === "# keys" && document.activeElement === document.getElementById("content")`, 10*time.Second)
		dave.do(chromedp.KeyEvent("typed without a mouse"))
		dave.pressEnter()
		dave.waitFor("sent", msgState("typed without a mouse")+` === "sent"`, 10*time.Second)
		dave.tabTo(`#rooms li[data-key="#general"] button`)
		dave.pressEnter()
		dave.waitFor("in #general", `document.getElementById("conv-title").textContent === "# general"`, 10*time.Second)
		dave.tabTo("#dm-user")
		dave.do(chromedp.KeyEvent("bob"))
		dave.pressEnter()
		dave.waitFor("conversation with bob, composer focused", `document.getElementById("conv-title").textContent === "bob" && document.activeElement === document.getElementById("content")`, 10*time.Second)
		dave.do(chromedp.KeyEvent("a DM by keyboard"))
		dave.pressEnter()
		dave.waitFor("DM sent, composer empty", msgState("a DM by keyboard")+` === "sent" && document.getElementById("content").value === ""`, 10*time.Second)
		bob.waitFor("bob has it", badgeOf("@dave")+` === "1"`, 10*time.Second)
		// Back to the room, by keyboard, with the DM still listed.
		dave.tabTo(`#rooms li[data-key="#keys"] button`)
		dave.pressEnter()
		dave.waitFor("in #keys", `document.getElementById("conv-title").textContent === "# keys" && `+countText("typed without a mouse")+` === 1`, 10*time.Second)
		dave.screenshot("keyboard-dave")
	})

	t.Run("contrast meets WCAG AA", func(t *testing.T) {
		alice.do(chromedp.Click(`#rooms li[data-key="#general"] button`))
		alice.waitFor("in #general", `document.getElementById("conv-title").textContent === "# general" && !!document.querySelector("#msgs li.announcement") && document.getElementById("members").textContent !== ""`, 10*time.Second)
		checks := map[string]string{
			"main text":           "#msgs li.msg .body",
			"muted text (time)":   "#msgs li.msg time",
			"muted text (labels)": ".stack label",
			"sidebar heading":     ".sidebar h2",
			"signed-in line":      ".who",
			"send button":         "#send",
			"sign-out button":     "#signout",
			"join button":         "#join-form button",
			"conversation button": "#rooms li .open",
			"message state":       "#msgs li.mine .state",
			"announcement":        "#msgs li.announcement .body",
			"members":             "#members",
		}
		got := eval[map[string]float64](alice, contrastJS+`(`+mustJSON(checks)+`)`)
		for name, ratio := range got {
			if ratio < 0 {
				t.Errorf("%s (%s): nothing visible to check", name, checks[name])
			} else if ratio < 4.5 {
				t.Errorf("%s (%s): contrast %.2f:1, want at least 4.5:1", name, checks[name], ratio)
			}
		}
		t.Logf("contrast ratios: %v", got)
	})
}
