package edge

import (
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/url"
	"time"

	"github.com/chatsys/chat/pkg/chatevent"
)

// The page an edge serves calls the HTTP APIs on its own origin (relative
// URLs: nothing is fetched from elsewhere). In single-machine mode they are
// on the same listener; behind the Kubernetes Ingress the Ingress routes
// them. An edge running alone (Compose, the README's several processes)
// forwards them: /v1/presence and a room's members to -edge.router-url,
// every other /v1/ path to -edge.history-url, with the caller's headers
// (its token) unchanged.

// apiProxyRoutes registers the forwarding routes this edge's configuration
// asks for.
func (e *Edge) apiProxyRoutes(mux *http.ServeMux) {
	if e.cfg.HistoryHandler == nil && e.historyAPI != nil {
		// By method: a pattern without one would conflict with "GET /".
		for _, m := range []string{"GET", "POST", "PUT", "PATCH", "DELETE"} {
			mux.Handle(m+" /v1/", e.historyAPI)
		}
	}
	if e.routerAPI != nil {
		mux.Handle("GET /v1/presence", e.routerAPI)
		mux.Handle("GET /v1/rooms/{room}/members", e.routerAPI)
	}
}

// newAPIProxy forwards to base (a validated http(s) URL), directly (not
// through an HTTP_PROXY of the environment); a service that does not
// answer within 30 s gives the API's 503 unavailable.
func (e *Edge) newAPIProxy(base *url.URL, service string) *httputil.ReverseProxy {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	tr.ResponseHeaderTimeout = 30 * time.Second
	return &httputil.ReverseProxy{
		Transport: tr,
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(base)
			r.SetXForwarded()
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if r.Context().Err() != nil {
				return // the client is gone
			}
			e.log.Warn("forwarding the page's API request failed", "service", service, "path", r.URL.Path, "err", err)
			httpError(w, http.StatusServiceUnavailable, chatevent.CodeUnavailable, service+" is not reachable from this edge; try again")
		},
	}
}

// serviceURL checks a -edge.*-url flag's value (empty: not set).
func serviceURL(flag, s string) (*url.URL, error) {
	if s == "" {
		return nil, nil
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%s must be an http or https URL, got %q", flag, s)
	}
	return u, nil
}

// newAPIProxies builds the forwarders the configuration asks for.
func (e *Edge) newAPIProxies() {
	if u, _ := serviceURL("edge.history-url", e.cfg.HistoryURL); u != nil {
		e.historyAPI = e.newAPIProxy(u, "history")
	}
	if u, _ := serviceURL("edge.router-url", e.cfg.RouterURL); u != nil {
		e.routerAPI = e.newAPIProxy(u, "the router")
	}
}
