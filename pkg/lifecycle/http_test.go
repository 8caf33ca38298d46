package lifecycle

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// routedPart is a part with HTTP routes.
type routedPart struct {
	*part
	routes func(*http.ServeMux)
}

func (p *routedPart) Routes(mux *http.ServeMux) { p.routes(mux) }

type answer struct {
	status int
	body   string
	code   string
}

func get(t *testing.T, url string, header ...string) answer {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var e struct{ Error struct{ Code string } }
	json.Unmarshal(b, &e)
	return answer{resp.StatusCode, string(b), e.Error.Code}
}

// TestRoutesGatedWhileNotRunning: a component's routes answer 503
// unavailable (upgrades too) until its Start returned nil and again once its
// shutdown began; other components' routes and the health endpoints are
// served meanwhile; path values still reach the handlers.
func TestRoutesGatedWhileNotRunning(t *testing.T) {
	j := &journal{}
	other := &routedPart{part: newPart("other", j), routes: func(mux *http.ServeMux) {
		mux.HandleFunc("GET /v1/other/{id}", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "other ", r.PathValue("id")) })
	}}
	slow := &routedPart{part: newPart("slow", j), routes: func(mux *http.ServeMux) {
		mux.HandleFunc("GET /v1/slow", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "slow") })
		mux.HandleFunc("GET /", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "catch-all") })
	}}
	slow.startGate = make(chan struct{})
	slow.stopGate = make(chan struct{})

	r := &Runner{}
	mux := NewMux()
	r.Mux = mux
	r.HealthHandler(mux)
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "metrics") })
	for _, c := range []*routedPart{other, slow} {
		mux.Mount(c, c.Routes)
	}
	h := &HTTPServer{Addr: "127.0.0.1:0", Handler: mux}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := runAsync(ctx, r, h, other, slow)
	deadline := time.Now().Add(10 * time.Second)
	for !j.has("start other") {
		if time.Now().After(deadline) {
			t.Fatal("other not started within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	base := "http://" + h.ListenAddr()

	expect := func(path string, status int, want string, header ...string) {
		t.Helper()
		a := get(t, base+path, header...)
		if a.status != status || !strings.Contains(a.body, want) {
			t.Fatalf("GET %s = %d %q, want %d with %q", path, a.status, a.body, status, want)
		}
		if status == 503 && path != "/readyz" && a.code != "unavailable" {
			t.Fatalf("GET %s = %q, want {\"error\":{\"code\":\"unavailable\"…}}", path, a.body)
		}
	}
	// slow is starting.
	expect("/v1/slow", 503, "slow is starting")
	expect("/index.html", 503, "slow is starting") // its catch-all
	expect("/v1/slow", 503, "slow is starting", "Connection", "Upgrade", "Upgrade", "websocket", "Sec-WebSocket-Version", "13", "Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	expect("/v1/other/42", 200, "other 42")
	expect("/healthz", 200, "ok")
	expect("/readyz", 503, "not ready")
	expect("/metrics", 200, "metrics")

	close(slow.startGate)
	waitReady(t, r, done)
	expect("/v1/slow", 200, "slow")
	expect("/index.html", 200, "catch-all")
	expect("/readyz", 200, "ready")

	// Shutdown: slow stops first (and blocks in Stop); its routes are
	// closed, other's still open.
	cancel()
	deadline = time.Now().Add(10 * time.Second)
	for !j.has("run-returned slow") {
		if time.Now().After(deadline) {
			t.Fatal("slow's Run not cancelled within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	expect("/v1/slow", 503, "slow is stopping")
	expect("/v1/other/7", 200, "other 7")
	close(slow.stopGate)
	if err := waitDone(t, done); err != nil {
		t.Fatal(err)
	}
}

// TestHTTPServerTimeouts: slow requests and idle keep-alive connections are
// cut by the server's timeouts, oversized headers refused, while a hijacked
// connection (a WebSocket) outlives every timeout.
func TestHTTPServerTimeouts(t *testing.T) {
	const timeout = 300 * time.Millisecond
	bodyErr := make(chan error, 1)
	release, lateIn := make(chan struct{}), make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ok", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "ok") })
	mux.HandleFunc("POST /body", func(w http.ResponseWriter, r *http.Request) {
		_, err := io.ReadAll(r.Body)
		bodyErr <- err
	})
	mux.HandleFunc("GET /late", func(w http.ResponseWriter, r *http.Request) {
		close(lateIn)
		<-release
		fmt.Fprint(w, "too late")
	})
	mux.HandleFunc("GET /upgrade", func(w http.ResponseWriter, r *http.Request) {
		c, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		defer c.Close()
		rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		rw.Flush()
		for {
			line, err := rw.ReadString('\n')
			if err != nil {
				return
			}
			rw.WriteString("echo " + line)
			if rw.Flush() != nil {
				return
			}
		}
	})
	h := &HTTPServer{Addr: "127.0.0.1:0", Handler: mux, ReadHeaderTimeout: timeout, ReadTimeout: timeout, WriteTimeout: timeout, IdleTimeout: timeout}
	if err := h.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer h.Stop(context.Background())
	addr := h.ListenAddr()
	dial := func() (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c, bufio.NewReader(c)
	}

	// The upgraded connection, opened first.
	up, upr := dial()
	fmt.Fprintf(up, "GET /upgrade HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	up.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(upr, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", resp, err)
	}

	// A request whose handler answers after the write timeout.
	lateErr := make(chan error, 1)
	go func() {
		c := &http.Client{Timeout: 20 * time.Second}
		resp, err := c.Get("http://" + addr + "/late")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			err = fmt.Errorf("got %d %q", resp.StatusCode, b)
		} else {
			err = nil // cut off: what we want
		}
		lateErr <- err
	}()

	// An idle keep-alive connection is closed after IdleTimeout: once it
	// is, every timeout has passed for the upgraded connection too.
	idle, idler := dial()
	t0 := time.Now() // before the request: a slow wake-up after the answer cannot make the close look early
	fmt.Fprintf(idle, "GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
	idle.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err = http.ReadResponse(idler, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /ok: %v %v", resp, err)
	}
	io.Copy(io.Discard, resp.Body)
	if _, err := idler.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("idle keep-alive connection: read %v, want EOF (closed by the server's idle timeout)", err)
	}
	if time.Since(t0) < timeout/2 {
		t.Fatalf("idle connection closed after %v, before the idle timeout", time.Since(t0))
	}

	// A request body that stalls is cut off by the read timeout.
	slow, _ := dial()
	fmt.Fprintf(slow, "POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\npartial")
	select {
	case err := <-bodyErr:
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("reading a stalled body: %v, want a timeout", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a stalled request body was not cut off within 10s")
	}

	// The late answer is past the write timeout: the client never gets it.
	select {
	case <-lateIn:
	case <-time.After(20 * time.Second):
		t.Fatal("the late request never reached its handler")
	}
	time.Sleep(2 * timeout) // the write deadline (set when its headers were read) has passed
	close(release)
	select {
	case err := <-lateErr:
		if err != nil {
			t.Fatalf("answer after the write timeout reached the client: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("late request neither answered nor cut within 20s")
	}

	// The upgraded connection still works both ways.
	fmt.Fprintf(up, "still here\n")
	up.SetReadDeadline(time.Now().Add(10 * time.Second))
	if line, err := upr.ReadString('\n'); err != nil || line != "echo still here\n" {
		t.Fatalf("upgraded connection after the timeouts: %q, %v", line, err)
	}

	// Headers: a token-sized one passes, an oversized one is refused.
	if a := get(t, "http://"+addr+"/ok", "Authorization", "Bearer "+strings.Repeat("t", 16<<10)); a.status != 200 {
		t.Fatalf("16 KiB Authorization header: %d", a.status)
	}
	if a := get(t, "http://"+addr+"/ok", "X-Big", strings.Repeat("b", 80<<10)); a.status != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("80 KiB header: %d, want 431", a.status)
	}
}

// TestMuxErrorsAreJSON: a path no route takes, a method its route does not
// accept, and the static files' 404 answer in the API's error shape; a
// handler's own 404 is left alone.
func TestMuxErrorsAreJSON(t *testing.T) {
	mux := NewMux()
	mux.HandleFunc("POST /v1/things", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "ok") })
	mux.HandleFunc("GET /v1/mine", func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "mine", http.StatusNotFound) })
	mux.Handle("GET /", http.FileServer(http.Dir(t.TempDir())))
	srv := &http.Server{Handler: mux}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Close()
	base := "http://" + ln.Addr().String()

	for _, c := range []struct {
		method, path string
		status       int
		code, allow  string
	}{
		{"DELETE", "/v1/nothing", 404, "not_found", ""}, // only the page's GET / takes the path: no API route
		{"PUT", "/v1/things", 405, "method_not_allowed", "POST"},
		{"GET", "/v1/things", 405, "method_not_allowed", "POST"}, // GET / takes it, but it is an API path POST serves
		{"GET", "/v1/other", 404, "not_found", ""},
		{"POST", "/v1/mine", 405, "method_not_allowed", "GET, HEAD"},
		{"GET", "/missing.js", 404, "not_found", ""},
		{"DELETE", "/missing.js", 405, "method_not_allowed", "GET"}, // the page's files
	} {
		req, _ := http.NewRequest(c.method, base+c.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var e struct {
			Error struct{ Code, Message string }
		}
		allowOK := strings.Contains(resp.Header.Get("Allow"), c.allow) && (c.status == 405) == (resp.Header.Get("Allow") != "")
		if c.path == "/v1/things" && strings.Contains(resp.Header.Get("Allow"), "GET") {
			allowOK = false // the catch-all's GET is not offered for an API path
		}
		if err := json.Unmarshal(b, &e); err != nil || resp.StatusCode != c.status || e.Error.Code != c.code || e.Error.Message == "" ||
			resp.Header.Get("Content-Type") != "application/json" || !allowOK {
			t.Errorf("%s %s = %d %s %q (Allow %q), want %d {\"error\":{\"code\":%q…}} as JSON", c.method, c.path,
				resp.StatusCode, resp.Header.Get("Content-Type"), b, resp.Header.Get("Allow"), c.status, c.code)
		}
	}
	if a := get(t, base+"/v1/mine"); a.status != 404 || a.body != "mine\n" {
		t.Errorf("GET /v1/mine = %d %q, want the handler's own 404", a.status, a.body)
	}
}
