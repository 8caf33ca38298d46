package lifecycle

import (
	"net/http"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/chatsys/chat/pkg/httperr"
)

// Routed is a component that serves HTTP routes.
type Routed interface {
	Routes(mux *http.ServeMux)
}

// Mux is a process's HTTP handler. Routes registered with Handle and
// HandleFunc (health, metrics) are always served; the routes of a mounted
// component only while it runs (see the package documentation): before
// its Start has returned nil, and once its shutdown has begun, they answer
// 503 {"error":{"code":"unavailable","message":…}} with Retry-After: 1.
//
// Routing is http.ServeMux's: all routes share one ServeMux, so its
// precedence rules pick the handler, and the chosen pattern tells which
// component owns the request.
type Mux struct {
	all    *http.ServeMux
	mu     sync.Mutex
	mounts []*mount
	owners sync.Map // pattern → *mount; nil for the Mux's own routes
	byComp map[Component]*mount
}

type mount struct {
	c     Component
	own   *http.ServeMux // the component's routes alone
	state atomic.Int32
}

// The states of a mounted component's routes.
const (
	starting int32 = iota
	running
	stopping
)

// NewMux returns an empty Mux.
func NewMux() *Mux {
	return &Mux{all: http.NewServeMux(), byComp: map[Component]*mount{}}
}

// Handle registers an always-served route.
func (m *Mux) Handle(pattern string, h http.Handler) { m.all.Handle(pattern, h) }

// HandleFunc registers an always-served route.
func (m *Mux) HandleFunc(pattern string, h func(http.ResponseWriter, *http.Request)) {
	m.all.HandleFunc(pattern, h)
}

// Mount registers c's routes, served only while c runs. routes is called
// twice, once on the shared ServeMux and once on one of c's own (which
// tells which patterns are c's), so it must do nothing but register
// handlers, as Routed.Routes does. c must be comparable (a pointer).
func (m *Mux) Mount(c Component, routes func(*http.ServeMux)) {
	mt := &mount{c: c, own: http.NewServeMux()}
	routes(m.all)
	routes(mt.own)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.mounts = append(m.mounts, mt)
	m.byComp[c] = mt
	m.owners.Clear() // a pattern's owner is looked up again
}

// ServeHTTP serves r, or answers 503 when r's route belongs to a component
// that is not running. A path no route takes, or a method its route does
// not accept, is answered in the API's error shape: 404 not_found or 405
// method_not_allowed (with Allow), never http.Error's plain text.
func (m *Mux) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	mt, pattern := m.owner(r)
	if mt != nil {
		switch mt.state.Load() {
		case starting:
			unavailable(w, mt.c.Name()+" is starting")
			return
		case stopping:
			unavailable(w, mt.c.Name()+" is stopping")
			return
		}
	}
	if (pattern == "" || pattern == "GET /") && strings.HasPrefix(r.URL.Path, "/v1/") {
		// An API path no API route takes in this method: the page's
		// catch-all would answer a GET with the files' 404, and ServeMux
		// would offer the catch-all's GET in Allow. 405 with the methods
		// the API serves the path with, or 404 when none.
		allow := m.allowed(r)
		if len(allow) == 0 {
			httperr.Write(w, http.StatusNotFound, "not_found", "no such path")
			return
		}
		w.Header().Set("Allow", strings.Join(allow, ", "))
		httperr.Write(w, http.StatusMethodNotAllowed, "method_not_allowed", "method not allowed here; see the Allow header")
		return
	}
	if pattern == "" || pattern == "GET /" {
		// The mux's own 404 and 405, or the static files' 404. (Never a
		// WebSocket route: the wrapper hides http.Hijacker.)
		w = &jsonErrors{ResponseWriter: w}
	}
	m.all.ServeHTTP(w, r)
}

// owner returns the mounted component whose route r takes, or nil, and
// the route's pattern ("" when none: not found, method not allowed, or a
// redirect).
func (m *Mux) owner(r *http.Request) (*mount, string) {
	_, pattern := m.all.Handler(r)
	if pattern == "" {
		return nil, ""
	}
	if v, ok := m.owners.Load(pattern); ok {
		mt, _ := v.(*mount)
		return mt, pattern
	}
	m.mu.Lock()
	mounts := m.mounts
	m.mu.Unlock()
	// Patterns are unique in the shared ServeMux, and a pattern that is the
	// most specific match among all routes is also among the component's.
	var owner *mount
	for _, mt := range mounts {
		if _, p := mt.own.Handler(r); p == pattern {
			owner = mt
			break
		}
	}
	m.owners.Store(pattern, owner)
	return owner, pattern
}

// allowed lists the methods that a route other than the page's catch-all
// serves r's path with (HEAD with GET).
func (m *Mux) allowed(r *http.Request) []string {
	var allow []string
	for _, method := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
		rr := r.Clone(r.Context())
		rr.Method = method
		if _, p := m.all.Handler(rr); p != "" && p != "GET /" {
			allow = append(allow, method)
			if method == http.MethodGet {
				allow = append(allow, http.MethodHead)
			}
		}
	}
	return allow
}

// jsonErrors turns a plain-text 404 or 405 (http.Error's, as ServeMux and
// http.FileServer write them) into {"error":{"code","message"}}.
type jsonErrors struct {
	http.ResponseWriter
	replaced bool
}

func (w *jsonErrors) WriteHeader(status int) {
	h := w.Header()
	if (status == http.StatusNotFound || status == http.StatusMethodNotAllowed) &&
		strings.HasPrefix(h.Get("Content-Type"), "text/plain") {
		w.replaced = true
		code, msg := "not_found", "no such path"
		if status == http.StatusMethodNotAllowed {
			code, msg = "method_not_allowed", "method not allowed here; see the Allow header"
		}
		httperr.Write(w.ResponseWriter, status, code, msg)
		return
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *jsonErrors) Write(b []byte) (int, error) {
	if w.replaced {
		return len(b), nil // http.Error's text, replaced
	}
	return w.ResponseWriter.Write(b)
}

func (m *Mux) setState(c Component, s int32) {
	if m == nil {
		return
	}
	m.mu.Lock()
	mt := m.byComp[c]
	m.mu.Unlock()
	if mt != nil {
		mt.state.Store(s)
	}
}

// open lets requests reach c's routes; nil-safe.
func (m *Mux) open(c Component) { m.setState(c, running) }

// close turns c's routes away again; nil-safe.
func (m *Mux) close(c Component) { m.setState(c, stopping) }

// unavailable writes 503 {"error":{"code":"unavailable","message":msg}}.
func unavailable(w http.ResponseWriter, msg string) {
	w.Header().Set("Retry-After", "1")
	httperr.Write(w, http.StatusServiceUnavailable, "unavailable", msg)
}
