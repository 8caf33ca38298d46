package main

// Browser tests of the web client (services/edge/web): the real
// single-machine system, driven through Debian's chromium with chromedp.
// Each user gets a browser context of their own (separate storage, as two
// people on two machines). Screenshots go to $BROWSER_SCREENSHOTS when set,
// else to a temporary directory named in the log.

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/chatsys/chat/pkg/auth"
	"github.com/chatsys/chat/pkg/testutil"
)

// chromiumPath finds the browser, or skips the test saying how to get it.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"/usr/bin/chromium", "chromium", "chromium-browser"} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	t.Skip("browser tests need chromium: apt-get install -y chromium (Debian; .ci/run installs it)")
	return ""
}

// newBrowser starts one headless chromium for the test.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-background-timer-throttling", true),
		chromedp.Flag("disable-backgrounding-occluded-windows", true),
		chromedp.Flag("disable-renderer-backgrounding", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1100, 720),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	if err := chromedp.Do(bctx); err != nil {
		cancelBrowser()
		cancelAlloc()
		t.Fatalf("start chromium: %v", err)
	}
	t.Cleanup(func() { cancelBrowser(); cancelAlloc() })
	return bctx
}

// browserPage is one tab in a browser context of its own.
type browserPage struct {
	t       *testing.T
	name    string
	ctx     context.Context
	dialogs atomic.Int32
}

func openPage(t *testing.T, browser context.Context, name, url string) *browserPage {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browser, chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	p := &browserPage{t: t, name: name, ctx: ctx}
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("%s: new tab: %v", name, err)
	}
	chromedp.Listen(ctx, func(ev any) {
		switch ev := ev.(type) {
		case *page.EventJavascriptDialogOpening:
			p.dialogs.Add(1)
			go chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: false})
		case *runtime.EventExceptionThrown:
			d := ev.ExceptionDetails
			desc := d.Text
			if d.Exception != nil {
				desc += " " + d.Exception.Description
			}
			t.Logf("%s: page exception: %s (line %d)", name, desc, d.LineNumber)
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeWarning {
				var parts []string
				for _, a := range ev.Args {
					parts = append(parts, string(a.Value))
				}
				t.Logf("%s: console.%s %s", name, ev.Type, strings.Join(parts, " "))
			}
		}
	})
	p.do(chromedp.Navigate(url))
	return p
}

func (p *browserPage) do(actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		p.t.Fatalf("%s: %v", p.name, err)
	}
}

// eval evaluates a JavaScript expression in the page.
func eval[T any](p *browserPage, expr string) T {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		p.t.Fatalf("%s: eval %s: %v", p.name, expr, err)
	}
	return v
}

// waitFor polls a JavaScript condition until it holds or the time is up.
func (p *browserPage) waitFor(what, expr string, timeout time.Duration) time.Duration {
	p.t.Helper()
	t0 := time.Now()
	ctx, cancel := context.WithTimeout(p.ctx, timeout+5*time.Second)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr,
		chromedp.WithPollingInterval(25*time.Millisecond), chromedp.WithPollingTimeout(timeout)))
	if err != nil {
		p.screenshot("failed-" + strings.ReplaceAll(p.name+"-"+what, " ", "-"))
		p.t.Fatalf("%s: %s: not within %v (%v); body: %s", p.name, what, timeout, err, p.bodyText())
	}
	return time.Since(t0)
}

// holds checks that a JavaScript condition stays true for d: an absence
// check (no dialog, no duplicate) that waits long enough to mean something.
func (p *browserPage) holds(what, expr string, d time.Duration) {
	p.t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if !eval[bool](p, expr) {
			p.t.Fatalf("%s: %s stopped holding; body: %s", p.name, what, p.bodyText())
		}
		if n := p.dialogs.Load(); n > 0 {
			p.t.Fatalf("%s: %d JavaScript dialogs opened", p.name, n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (p *browserPage) bodyText() string {
	ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
	defer cancel()
	s, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
	if len(s) > 2000 {
		s = s[len(s)-2000:]
	}
	return s
}

func screenshotDir(t *testing.T) string {
	if d := os.Getenv("BROWSER_SCREENSHOTS"); d != "" {
		os.MkdirAll(d, 0o755)
		return d
	}
	return t.TempDir()
}

var shotDir string

func (p *browserPage) screenshot(name string) {
	if shotDir == "" {
		return
	}
	ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	defer cancel()
	b, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		p.t.Logf("%s: screenshot: %v", p.name, err)
		return
	}
	path := filepath.Join(shotDir, name+".png")
	if err := os.WriteFile(path, b, 0o644); err == nil {
		p.t.Logf("screenshot %s", path)
	}
}

// js quotes s as a JavaScript string literal.
func js(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// send writes text into the composer and presses Send.
func (p *browserPage) send(text string) {
	p.t.Helper()
	p.do(chromedp.WaitEnabled("#content"), chromedp.SetValue("#content", text), chromedp.Click("#send"))
}

// countText is a JavaScript expression: how many messages of the open
// conversation have exactly this text.
func countText(text string) string {
	return `[...document.querySelectorAll("#msgs li.msg .body")].filter(e => e.textContent === ` + js(text) + `).length`
}

func msgState(text string) string {
	return `([...document.querySelectorAll("#msgs li.msg.mine")].find(li => li.querySelector(".body").textContent === ` + js(text) + `) || {dataset:{}}).dataset.state`
}

// handshakes reads chat_edge_handshakes_total by result from /metrics.
func handshakes(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, `chat_edge_handshakes_total{result="`)
		if !ok {
			continue
		}
		result, val, _ := strings.Cut(rest, `"} `)
		f, _ := strconv.ParseFloat(strings.TrimSpace(val), 64)
		out[result] = f
	}
	return out
}

// roomListsNotModified reads how many GET /v1/rooms were answered 304
// from /metrics.
func roomListsNotModified(t *testing.T, addr string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), `chat_history_http_requests_total{route="/v1/rooms",status="304"} `); ok {
			f, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f
		}
	}
	return 0
}

func total(m map[string]float64) (n float64) {
	for _, v := range m {
		n += v
	}
	return n
}

func mintFromDataDir(t *testing.T, dir, user string, ttl time.Duration) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, auth.SecretFile))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := auth.NewHS256Minter(strings.TrimSpace(string(b)), "").Mint(user, false, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// signIn opens the page as user and waits until it is online in #general.
func signIn(t *testing.T, browser context.Context, addr, user, tok string) *browserPage {
	t.Helper()
	p := openPage(t, browser, user, "http://"+addr+"/#token="+tok)
	p.waitFor("online", `document.body.dataset.conn === "online" && document.getElementById("conv-title").textContent === "# general"`, 30*time.Second)
	return p
}

func online(p *browserPage) {
	p.waitFor("online", `document.body.dataset.conn === "online"`, 30*time.Second)
}

// TestBrowserChat drives two users through the page on one running system:
// room messages, message states, escaping, rooms on one socket, direct
// messages and their unread counts across a reload, search, sign-in and
// the narrow layout.
// browserPair starts the single-machine system and signs alice and bob in,
// each in a browser context of their own.
func browserPair(t *testing.T) (s *server, dir string, browser context.Context, alice, bob *browserPage) {
	t.Helper()
	chromiumPath(t)
	shotDir = screenshotDir(t)
	dir = dataDir(t)
	s = startAll(t, dir)
	browser = newBrowser(t)
	alice = signIn(t, browser, s.addr, "alice", tokenFromDataDir(t, dir, "alice"))
	bob = signIn(t, browser, s.addr, "bob", tokenFromDataDir(t, dir, "bob"))
	return s, dir, browser, alice, bob
}

func TestBrowserChat(t *testing.T) {
	s, dir, browser, alice, bob := browserPair(t)
	// The joins are done when both are members.
	alice.waitFor("both in the members line", `document.getElementById("members").textContent.includes("bob")`, 15*time.Second)

	t.Run("room message on both pages, pending then sent", func(t *testing.T) {
		// Record every state the message element goes through.
		eval[bool](alice, `window.__states = []; new MutationObserver(ms => { for (const m of ms) if (m.target.dataset && m.target.dataset.state) window.__states.push(m.target.dataset.state) })
			.observe(document.getElementById("log"), {subtree: true, attributes: true, attributeFilter: ["data-state"], childList: true}); true`)
		eval[bool](alice, `new MutationObserver(ms => { for (const m of ms) for (const n of m.addedNodes) if (n.dataset && n.dataset.state) window.__states.push(n.dataset.state) })
			.observe(document.getElementById("log"), {subtree: true, childList: true}); true`)
		t0 := time.Now()
		alice.send("hello from alice")
		bob.waitFor("bob sees alice's message", countText("hello from alice")+" === 1", 10*time.Second)
		// Latency is measured by the benchmarks, not asserted here: a
		// loaded CI machine under -race can take longer than a second.
		t.Logf("bob saw the message after %v", time.Since(t0))
		alice.waitFor("sent", msgState("hello from alice")+` === "sent"`, 10*time.Second)
		states := eval[[]string](alice, `window.__states`)
		if len(states) < 2 || states[0] != "pending" || states[len(states)-1] != "sent" {
			t.Fatalf("alice's message went through states %v, want pending … sent", states)
		}
		bob.holds("one copy on each page", countText("hello from alice")+" === 1", time.Second)
		if got := eval[int](alice, countText("hello from alice")); got != 1 {
			t.Fatalf("alice shows her message %d times, want 1", got)
		}
		alice.screenshot("room-alice")
	})

	t.Run("markup renders as text and opens no dialog", func(t *testing.T) {
		const evil = `<img src=x onerror=alert(1)> see https://example.com/a?b=1 and javascript:alert(2)`
		alice.send(evil)
		bob.waitFor("bob sees the text", countText(evil)+" === 1", 10*time.Second)
		alice.waitFor("alice sees the text", countText(evil)+" === 1", 10*time.Second)
		for _, p := range []*browserPage{alice, bob} {
			if n := eval[int](p, `document.querySelectorAll("#log img, #log script").length`); n != 0 {
				t.Fatalf("%s: %d img/script elements in the log, want 0", p.name, n)
			}
			links := eval[[]map[string]string](p, `[...document.querySelectorAll("#log a")].map(a => ({href: a.href, rel: a.rel}))`)
			if len(links) != 1 || links[0]["href"] != "https://example.com/a?b=1" || links[0]["rel"] != "noopener noreferrer" {
				t.Fatalf("%s: links %v, want only https://example.com/a?b=1 with rel=noopener noreferrer", p.name, links)
			}
			p.holds("no dialog, one copy", countText(evil)+" === 1", 1500*time.Millisecond)
		}
	})

	t.Run("links end where the prose does", func(t *testing.T) {
		const text = `(see https://example.com/x) and https://en.wikipedia.org/wiki/Go_(game).`
		alice.send(text)
		bob.waitFor("bob sees it", countText(text)+" === 1", 10*time.Second)
		links := eval[[]string](bob, `[...document.querySelectorAll("#log a")].map(a => a.href).slice(-2)`)
		if len(links) != 2 || links[0] != "https://example.com/x" || links[1] != "https://en.wikipedia.org/wiki/Go_(game)" {
			t.Fatalf("links %q, want https://example.com/x and https://en.wikipedia.org/wiki/Go_(game)", links)
		}
	})

	t.Run("switching rooms opens no new WebSocket", func(t *testing.T) {
		before := handshakes(t, s.addr)
		// An invalid name is refused before anything is sent.
		alice.do(chromedp.SetValue("#join-room", "Not A Room!"), chromedp.Click("#join-form button"))
		alice.waitFor("room name error", `document.getElementById("join-error").textContent.includes("lowercase")`, 5*time.Second)
		alice.do(chromedp.SetValue("#join-room", "random"), chromedp.Click("#join-form button"))
		alice.waitFor("in #random", `document.getElementById("conv-title").textContent === "# random"`, 5*time.Second)
		alice.send("over in random")
		alice.waitFor("sent in random", msgState("over in random")+` === "sent"`, 10*time.Second)
		alice.do(chromedp.Click(`#rooms li[data-key="#general"] button`))
		alice.waitFor("back in #general", `document.getElementById("conv-title").textContent === "# general" && `+countText("hello from alice")+` === 1`, 5*time.Second)
		if got := eval[int](alice, countText("over in random")); got != 0 {
			t.Fatalf("#random's message shown in #general %d times", got)
		}
		alice.do(chromedp.Click(`#rooms li[data-key="#random"] button`))
		alice.waitFor("#random kept its log", countText("over in random")+` === 1`, 5*time.Second)
		alice.do(chromedp.Click(`#rooms li[data-key="#general"] button`))
		after := handshakes(t, s.addr)
		if after["ok"] != before["ok"] || total(after) != total(before) {
			t.Fatalf("handshakes went from %v to %v while switching rooms, want no new one", before, after)
		}
		// Rooms are remembered across reloads. The room list (GET
		// /v1/rooms, polled) is revalidated: unchanged since the first
		// load, it comes back 304 without a body.
		notModified := roomListsNotModified(t, s.addr)
		alice.do(chromedp.Reload())
		online(alice)
		alice.waitFor("rooms after reload", `!!document.querySelector('#rooms li[data-key="#random"]') && !!document.querySelector('#rooms li[data-key="#general"]')`, 10*time.Second)
		testutil.Eventually(t, 10*time.Second, "a 304 for the reloaded page's room list", func() bool {
			return roomListsNotModified(t, s.addr) > notModified
		})
	})

	t.Run("direct message raises unread and survives a reload", func(t *testing.T) {
		alice.do(chromedp.SetValue("#dm-user", "bob"), chromedp.Click("#dm-form button"))
		alice.waitFor("conversation with bob open", `document.getElementById("conv-title").textContent === "bob"`, 5*time.Second)
		alice.send("psst @bob, a secret")
		alice.waitFor("dm sent", msgState("psst @bob, a secret")+` === "sent"`, 10*time.Second)
		const badge = `(document.querySelector('#dms li[data-key="@alice"] .unread') || {}).textContent`
		bob.waitFor("unread 1 from alice", badge+` === "1"`, 10*time.Second)
		if got := eval[string](bob, `document.title`); !strings.HasPrefix(got, "(1)") {
			t.Errorf("bob's title = %q, want the unread total (1)", got)
		}
		if got := eval[int](bob, countText("psst @bob, a secret")); got != 0 {
			t.Fatalf("the DM shows in bob's room log %d times, want 0", got)
		}
		bob.screenshot("dm-unread-bob")
		// What a reloaded page starts from: history has the DM.
		waitFor(t, 20*time.Second, "history counts the DM", func() bool { return unreadOf(t, s.addr, tokenFromDataDir(t, dir, "bob"))["@alice"] == 1 })
		bob.do(chromedp.Reload())
		online(bob)
		bob.waitFor("unread 1 after reload", badge+` === "1"`, 15*time.Second)
		bob.do(chromedp.Click(`#dms li[data-key="@alice"] button`))
		bob.waitFor("the DM in the conversation, highlighted", countText("psst @bob, a secret")+` === 1 && !!document.querySelector("#msgs li.msg.mention")`, 10*time.Second)
		bob.waitFor("unread cleared", badge+` === ""`, 5*time.Second)
		bob.do(chromedp.Reload())
		online(bob)
		bob.waitFor("conversation listed after reload", `!!document.querySelector('#dms li[data-key="@alice"]')`, 10*time.Second)
		bob.waitFor("the conversation open before the reload is open again", `document.getElementById("conv-title").textContent === "alice"`, 5*time.Second)
		bob.holds("still read after reload", badge+` === ""`, time.Second)
		// bob replies; alice has the conversation open, so it counts as read.
		bob.do(chromedp.Click(`#dms li[data-key="@alice"] button`))
		bob.send("got it")
		alice.waitFor("alice sees the reply", countText("got it")+` === 1`, 10*time.Second)
		bob.do(chromedp.Click(`#rooms li[data-key="#general"] button`))
	})

	t.Run("search finds a message and opens it", func(t *testing.T) {
		alice.do(chromedp.Click(`#rooms li[data-key="#random"] button`))
		alice.send("the zebracorn migration is done")
		alice.waitFor("sent", msgState("the zebracorn migration is done")+` === "sent"`, 10*time.Second)
		// History lags the log by up to a second: search until it is found.
		deadline := time.Now().Add(15 * time.Second)
		for {
			bob.do(chromedp.SetValue("#search-q", "zebracorn"), chromedp.Click("#search-form button"))
			bob.waitFor("search answered", `!document.getElementById("search-results").hidden && !document.getElementById("results-note").textContent.startsWith("Searching")`, 10*time.Second)
			if eval[int](bob, `document.querySelectorAll("#results li").length`) > 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("search found nothing; %s", bob.bodyText())
			}
		}
		bob.screenshot("search-bob")
		bob.do(chromedp.Click("#results li button"))
		bob.waitFor("opened at the message", `document.getElementById("conv-title").textContent === "# random" && (document.querySelector("#msgs li.target .body") || {}).textContent === "the zebracorn migration is done"`, 10*time.Second)
		if got := eval[int](bob, countText("the zebracorn migration is done")); got != 1 {
			t.Fatalf("the result's message shows %d times, want 1", got)
		}
		// bob joined #random by opening the result: live messages arrive there.
		alice.send("after the search")
		bob.waitFor("live after opening a result", countText("after the search")+` === 1`, 10*time.Second)
	})

	t.Run("narrow layout", func(t *testing.T) {
		bob.do(chromedp.EmulateViewport(360, 740))
		bob.waitFor("no horizontal overflow", `document.documentElement.scrollWidth <= 360 && getComputedStyle(document.getElementById("menu")).display !== "none"`, 5*time.Second)
		bob.do(chromedp.Click("#menu"))
		bob.waitFor("sidebar opens", `document.getElementById("sidebar").classList.contains("open")`, 5*time.Second)
		bob.screenshot("narrow-bob")
		bob.do(chromedp.Click(`#rooms li[data-key="#general"] button`))
		bob.waitFor("sidebar closes on choosing", `!document.getElementById("sidebar").classList.contains("open")`, 5*time.Second)
		bob.do(chromedp.EmulateViewport(1100, 720))
	})

	t.Run("expired or refused token shows sign-in", func(t *testing.T) {
		before := handshakes(t, s.addr)
		expired := mintFromDataDir(t, dir, "carol", -time.Minute)
		p := openPage(t, browser, "carol-expired", "http://"+s.addr+"/#token="+expired)
		p.waitFor("sign-in screen", `!document.getElementById("signin").hidden && document.getElementById("signin-reason").textContent.includes("expired")`, 10*time.Second)
		// A token from another secret: the handshake is refused (the browser
		// sees 1006); the page probes, finds 401, and stops.
		foreign, _ := auth.NewHS256Minter("some-other-secret-0123456789", "").Mint("mallory", false, time.Hour)
		q := openPage(t, browser, "mallory", "http://"+s.addr+"/#token="+foreign)
		q.waitFor("sign-in screen", `!document.getElementById("signin").hidden && document.getElementById("signin-reason").textContent.includes("did not accept")`, 15*time.Second)
		q.holds("no reconnect loop", `!document.getElementById("signin").hidden`, 2*time.Second)
		after := handshakes(t, s.addr)
		if n := total(after) - total(before); n > 1 {
			t.Fatalf("%v handshakes for an expired and a refused token, want at most 1 (before %v, after %v)", n, before, after)
		}
		q.screenshot("signin")
	})

	// The picture for the README: alice in #general.
	alice.do(chromedp.Click(`#rooms li[data-key="#general"] button`))
	alice.screenshot("chat")
}

// TestBrowserResumeAcrossRestart stops the whole system and starts it again
// on the same data directory and address: both pages reconnect, a message
// written meanwhile goes out once, and every message shows exactly once.
func TestBrowserResumeAcrossRestart(t *testing.T) {
	chromiumPath(t)
	shotDir = screenshotDir(t)
	dir := dataDir(t)
	addr := freeAddr(t)
	s := startAll(t, dir, "-http.addr="+addr)
	browser := newBrowser(t)
	alice := signIn(t, browser, addr, "alice", tokenFromDataDir(t, dir, "alice"))
	bob := signIn(t, browser, addr, "bob", tokenFromDataDir(t, dir, "bob"))
	alice.send("before the restart")
	for _, p := range []*browserPage{alice, bob} {
		p.waitFor("first message", countText("before the restart")+` === 1`, 10*time.Second)
	}
	s.stop()
	for _, p := range []*browserPage{alice, bob} {
		p.waitFor("disconnected banner", `document.body.dataset.conn !== "online" && !document.getElementById("banner").hidden`, 15*time.Second)
	}
	alice.send("written while down")
	alice.waitFor("queued", msgState("written while down")+` === "queued"`, 5*time.Second)
	alice.screenshot("offline-alice")
	startAll(t, dir, "-http.addr="+addr)
	for _, p := range []*browserPage{alice, bob} {
		if p == alice { // alice presses "retry now"; bob waits for the countdown
			eval[bool](p, `document.getElementById("retry").hidden || (document.getElementById("retry").click(), true)`)
		}
		online(p)
	}
	alice.waitFor("sent after reconnect", msgState("written while down")+` === "sent"`, 15*time.Second)
	alice.send("after the restart")
	for _, p := range []*browserPage{alice, bob} {
		p.waitFor("every message", countText("before the restart")+` === 1 && `+countText("written while down")+` === 1 && `+countText("after the restart")+` === 1`, 15*time.Second)
	}
	for _, p := range []*browserPage{alice, bob} {
		p.holds("each message once", countText("before the restart")+` === 1 && `+countText("written while down")+` === 1 && `+countText("after the restart")+` === 1`, 1500*time.Millisecond)
	}
}

// TestBrowserBrokerOutage: with the broker down the page shows the message
// as retrying; once the broker is back it is sent, shown and stored once.
func TestBrowserBrokerOutage(t *testing.T) {
	chromiumPath(t)
	shotDir = screenshotDir(t)
	brokerDir, dir := dataDir(t), dataDir(t)
	brokerAddr := freeAddr(t)
	brokerArgs := []string{"-target=broker", "-broker.addr=" + brokerAddr}
	b := startAll(t, brokerDir, brokerArgs...)
	s := startAll(t, dir, "-kafka.brokers="+brokerAddr, "-kafka.write-timeout=1s")
	browser := newBrowser(t)
	alice := signIn(t, browser, s.addr, "alice", tokenFromDataDir(t, dir, "alice"))
	bob := signIn(t, browser, s.addr, "bob", tokenFromDataDir(t, dir, "bob"))
	alice.send("broker is up")
	bob.waitFor("first message", countText("broker is up")+` === 1`, 10*time.Second)

	b.stop()
	alice.send("during the outage")
	alice.waitFor("retrying", msgState("during the outage")+` === "retrying"`, 30*time.Second)
	alice.screenshot("retrying-alice")
	startAll(t, brokerDir, brokerArgs...)
	alice.waitFor("sent after recovery", msgState("during the outage")+` === "sent"`, 60*time.Second)
	for _, p := range []*browserPage{alice, bob} {
		p.waitFor("shown", countText("during the outage")+` === 1`, 30*time.Second)
		p.holds("shown once", countText("during the outage")+` === 1`, 1500*time.Millisecond)
	}
	// One row in history.
	tok := tokenFromDataDir(t, dir, "alice")
	count := func() int {
		req, _ := http.NewRequest("GET", "http://"+s.addr+"/v1/rooms/general/messages?limit=50", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return -1
		}
		defer resp.Body.Close()
		var page struct {
			Messages []struct{ Content string } `json:"messages"`
		}
		json.NewDecoder(resp.Body).Decode(&page)
		n := 0
		for _, m := range page.Messages {
			if m.Content == "during the outage" {
				n++
			}
		}
		return n
	}
	deadline := time.Now().Add(30 * time.Second)
	for count() < 1 {
		if time.Now().After(deadline) {
			t.Fatal("the message never reached history")
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(1500 * time.Millisecond) // history writes within a second: a duplicate would be there by now
	if n := count(); n != 1 {
		t.Fatalf("history holds %d rows of the message, want 1", n)
	}
}
