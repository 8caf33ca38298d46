package edge

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"golang.org/x/time/rate"

	"github.com/chatsys/chat/pkg/chatevent"
)

type userLimiter struct {
	lim  *rate.Limiter
	refs int
}

func (e *Edge) checkOrigin(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true // not a browser
	}
	for _, o := range e.cfg.AllowedOrigins {
		if o == "*" || strings.EqualFold(o, origin) {
			return true
		}
	}
	u, err := url.Parse(origin)
	return err == nil && strings.EqualFold(u.Host, r.Host)
}

func (e *Edge) serveWS(w http.ResponseWriter, r *http.Request) {
	if e.draining.Load() {
		e.m.handshakes.WithLabelValues("draining").Inc()
		w.Header().Set("Retry-After", "1")
		httpError(w, http.StatusServiceUnavailable, chatevent.CodeUnavailable, "edge is shutting down; reconnect")
		return
	}
	id, err := e.verify.VerifyRequest(r)
	if err != nil {
		e.m.handshakes.WithLabelValues("unauthorized").Inc()
		w.Header().Set("WWW-Authenticate", `Bearer realm="chat"`)
		httpError(w, http.StatusUnauthorized, "unauthorized", err.Error())
		return
	}
	addr := e.clientAddr(r)
	lim, err := e.admit(id.Username, addr)
	if err != nil {
		e.m.handshakes.WithLabelValues("too_many_connections").Inc()
		w.Header().Set("Retry-After", "5")
		httpError(w, http.StatusTooManyRequests, chatevent.CodeTooManyConnections, err.Error())
		return
	}
	e.drainMu.Lock()
	if e.draining.Load() {
		e.drainMu.Unlock()
		e.release(id.Username, addr)
		httpError(w, http.StatusServiceUnavailable, chatevent.CodeUnavailable, "edge is shutting down; reconnect")
		return
	}
	e.wg.Add(1)
	e.drainMu.Unlock()
	hj := &hijacker{ResponseWriter: w}
	ws, err := e.up.Upgrade(hj, r, nil)
	if err != nil {
		e.release(id.Username, addr)
		e.wg.Done()
		e.m.handshakes.WithLabelValues("bad_handshake").Inc()
		return // Upgrade wrote the HTTP error
	}
	// The 101 response was held back: it goes out with the welcome frame,
	// before the connection is visible to any fan-out (so the welcome is
	// always the first frame).
	if err := hj.wc.writeHandshake(appendFrame(nil, opText, chatevent.WelcomeFrame{Username: id.Username}.Encode()), e.up.HandshakeTimeout); err != nil {
		ws.NetConn().Close()
		e.release(id.Username, addr)
		e.wg.Done()
		e.m.handshakes.WithLabelValues("write_failed").Inc()
		return
	}
	e.m.handshakes.WithLabelValues("ok").Inc()
	e.m.frameOut(chatevent.TypeWelcome)
	c := newConn(e, ws, hj.wc, id, lim)
	c.addr = addr
	e.hub.addConn(c)
	e.presence.connected(id.Username)
	e.m.connections.Inc()
	if e.draining.Load() { // raced with Stop's snapshot
		c.close(CloseGoingAway, "server shutting down: reconnect", false)
	}
	if !id.Expires.IsZero() {
		c.expiry = time.AfterFunc(time.Until(id.Expires), func() {
			c.close(CloseTokenExpired, "token expired: reconnect with a new token and since", true)
		})
	}
	// The connection lives on in its own goroutine: returning lets net/http
	// free the request and its 4 KiB buffers, which it holds for as long as
	// the handler runs.
	go e.connLoop(c)
}

// connLoop reads c until it ends, then releases it.
func (e *Edge) connLoop(c *conn) {
	defer e.wg.Done()
	defer func() {
		if c.expiry != nil {
			c.expiry.Stop()
		}
		rooms := make([]string, 0, len(c.rooms))
		for room, s := range c.rooms {
			if !s.revoked.Load() {
				e.hub.removeSub(s)
				rooms = append(rooms, room)
			}
		}
		e.hub.removeConn(c)
		e.presence.disconnected(c.id.Username, rooms)
		c.mu.Lock()
		c.closing = true // nothing more is queued
		c.mu.Unlock()
		c.finish()
		e.release(c.id.Username, c.addr)
		e.m.connections.Dec()
	}()
	e.readLoop(c)
}

// errTooManyConns is a handshake refused by a connection limit.
var errTooManyConns = errors.New("too many connections")

// admit counts a new connection of user from addr against the connection
// limits and returns the user's rate limiter; release undoes it.
func (e *Edge) admit(user string, addr netip.Addr) (*rate.Limiter, error) {
	e.limMu.Lock()
	defer e.limMu.Unlock()
	ul := e.limiters[user]
	if ul != nil && ul.refs >= e.cfg.MaxConnsPerUser {
		return nil, fmt.Errorf("%w: user %s already has %d open connections on this edge", errTooManyConns, user, ul.refs)
	}
	if e.cfg.MaxConnsPerIP > 0 && addr.IsValid() && e.ipConns[addr] >= e.cfg.MaxConnsPerIP {
		return nil, fmt.Errorf("%w: %d open connections from your address", errTooManyConns, e.ipConns[addr])
	}
	if ul == nil {
		ul = &userLimiter{lim: rate.NewLimiter(rate.Limit(e.cfg.RatePerSecond), e.cfg.RateBurst)}
		e.limiters[user] = ul
	}
	ul.refs++
	if e.cfg.MaxConnsPerIP > 0 && addr.IsValid() {
		e.ipConns[addr]++
	}
	return ul.lim, nil
}

func (e *Edge) release(user string, addr netip.Addr) {
	e.limMu.Lock()
	defer e.limMu.Unlock()
	if ul := e.limiters[user]; ul != nil {
		if ul.refs--; ul.refs <= 0 {
			delete(e.limiters, user)
		}
	}
	if e.cfg.MaxConnsPerIP > 0 && addr.IsValid() {
		if e.ipConns[addr]--; e.ipConns[addr] <= 0 {
			delete(e.ipConns, addr)
		}
	}
}

// clientAddr returns the client's address for the per-address limit: the
// TCP peer, or, when the peer is a trusted proxy, the rightmost
// X-Forwarded-For entry that is not itself a trusted proxy.
func (e *Edge) clientAddr(r *http.Request) netip.Addr {
	if e.cfg.MaxConnsPerIP == 0 {
		return netip.Addr{}
	}
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	addr := ap.Addr().Unmap()
	trusted := func(a netip.Addr) bool {
		for _, p := range e.cfg.TrustedProxies {
			if p.Contains(a) {
				return true
			}
		}
		return false
	}
	if !trusted(addr) {
		return addr
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			return addr // a malformed chain: count the proxy itself
		}
		if a = a.Unmap(); !trusted(a) {
			return a
		}
	}
	return addr
}
