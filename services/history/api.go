package history

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/chatsys/chat/pkg/auth"
	"github.com/chatsys/chat/pkg/chatevent"
	"github.com/chatsys/chat/pkg/httperr"
)

//go:embed openapi.yaml
var openapiDoc []byte

// OpenAPI returns the OpenAPI 3 document of the history API.
func OpenAPI() []byte { return openapiDoc }

// Limits of the API.
const (
	DefaultLimit   = 50
	MaxLimit       = 200
	MaxQueryLength = 256 // characters of a search query
)

// apiError is an error with its HTTP status and stable code. This is the
// one table mapping errors to responses.
type apiError struct {
	status  int
	code    string
	message string
}

func (e *apiError) Error() string { return e.message }

func badRequest(code, format string, args ...any) *apiError {
	return &apiError{status: http.StatusBadRequest, code: code, message: fmt.Sprintf(format, args...)}
}

var (
	errStarting = &apiError{status: http.StatusServiceUnavailable, code: "unavailable", message: "history is starting: the database is not connected yet"}
	// errNotFound is the one answer for what does not exist and for what
	// the caller may not see: the two are indistinguishable.
	errNotFound  = &apiError{status: http.StatusNotFound, code: "not_found", message: "not found"}
	errForbidden = &apiError{status: http.StatusForbidden, code: "forbidden", message: "not allowed"}
	errConflict  = &apiError{status: http.StatusConflict, code: "conflict", message: "the room already exists"}
)

func invalidRequest(format string, args ...any) *apiError {
	return badRequest("invalid_request", format, args...)
}

// Routes registers the API on mux. In a single-process deployment every
// service shares one mux: the router serves GET /v1/rooms/{room}/members
// and GET /v1/presence, the edge GET /ws, POST /v1/admin/announce and
// GET /; none of these patterns overlaps them.
func (h *History) Routes(mux *http.ServeMux) {
	for _, r := range h.routes() {
		// The metrics label is the path, with the method when not GET.
		label := strings.TrimPrefix(r.pattern, "GET ")
		mux.Handle(r.pattern, h.handleWith(label, r.timeout, r.fn))
	}
	mux.HandleFunc("GET /v1/openapi.yaml", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/yaml")
		w.Write(openapiDoc)
	})
}

// handlerFunc answers one API request with the database db.
type handlerFunc func(r *http.Request, id auth.Identity, db *pgxpool.Pool) (any, error)

// handle authenticates, runs fn, and writes its result or error as JSON.
// Before Start has connected and migrated it answers 503 unavailable; fn's
// database work is bounded by DBTimeout (waiting for a pooled connection
// included), and a database error or timeout is 503 unavailable.
//
// timeout is DBTimeout for reads; routes that append to the log get longer.
func (h *History) handleWith(route string, timeout time.Duration, fn handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t0 := time.Now()
		status := http.StatusOK
		defer func() {
			h.m.requests.WithLabelValues(route, strconv.Itoa(status)).Inc()
			h.m.reqSecs.WithLabelValues(route).Observe(time.Since(t0).Seconds())
		}()
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		ctx, cancel := context.WithTimeout(r.Context(), timeout)
		defer cancel()
		r = r.WithContext(ctx)
		var body any
		id, err := h.verify.VerifyAPIRequest(r)
		db := h.api.Load()
		switch {
		case err != nil:
			err = &apiError{status: http.StatusUnauthorized, code: "unauthorized", message: err.Error()}
		case db == nil:
			err = errStarting
		default:
			body, err = fn(r, id, db)
		}
		if err != nil {
			var ae *apiError
			if !errors.As(err, &ae) {
				h.log.Error("history api", "route", route, "err", err)
				ae = &apiError{status: http.StatusServiceUnavailable, code: "unavailable", message: "history is temporarily unavailable"}
			}
			if ae.status == http.StatusUnauthorized {
				w.Header().Set("WWW-Authenticate", `Bearer realm="chat"`)
			}
			status = ae.status
			httperr.Write(w, status, ae.code, ae.message)
			return
		}
		if c, ok := body.(validated); ok {
			// Revalidated on every use (no-cache), per token (Vary), in
			// the client's own cache only (private).
			w.Header().Set("Cache-Control", "private, no-cache")
			w.Header().Set("Vary", "Authorization")
			w.Header().Set("ETag", c.etag)
			if etagMatch(r.Header.Get("If-None-Match"), c.etag) {
				status = http.StatusNotModified
				w.WriteHeader(status)
				return
			}
			body = c.body()
		}
		if c, ok := body.(created); ok {
			status, body = http.StatusCreated, c.body
			w.WriteHeader(status)
		}
		json.NewEncoder(w).Encode(body)
	})
}

// validated is a body with a validator: etag changes whenever body would
// answer differently. A request whose If-None-Match names it is answered
// 304 Not Modified, without building the body.
type validated struct {
	etag string
	body func() any
}

// etagMatch reports whether an If-None-Match header names etag (weak
// comparison, RFC 9110 13.1.2).
func etagMatch(header, etag string) bool {
	if header == "" {
		return false
	}
	if strings.TrimSpace(header) == "*" {
		return true
	}
	etag = strings.TrimPrefix(etag, "W/")
	for t := range strings.SplitSeq(header, ",") {
		if strings.TrimPrefix(strings.TrimSpace(t), "W/") == etag {
			return true
		}
	}
	return false
}

type messagesResponse struct {
	Messages []Message `json:"messages"`
}

// parseLimit reads a limit parameter: 1..MaxLimit, DefaultLimit when empty.
func parseLimit(s string) (int, error) {
	if s == "" {
		return DefaultLimit, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > MaxLimit {
		return 0, badRequest("invalid_limit", "limit must be an integer from 1 to %d", MaxLimit)
	}
	return n, nil
}

// pageParams reads limit, before and after.
func pageParams(r *http.Request) (page, error) {
	q := r.URL.Query()
	p := page{}
	var err error
	if p.limit, err = parseLimit(q.Get("limit")); err != nil {
		return p, err
	}
	for _, c := range []struct {
		name string
		dst  *string
	}{{"before", &p.before}, {"after", &p.after}} {
		if s := q.Get(c.name); s != "" {
			u, err := uuid.Parse(s)
			if err != nil {
				return p, badRequest("invalid_cursor", "%s must be a message id (UUID)", c.name)
			}
			*c.dst = u.String()
		}
	}
	if p.before != "" && p.after != "" {
		return p, badRequest("invalid_cursor", "give before or after, not both")
	}
	return p, nil
}

// roomMessages answers a page of a room the caller may read; a room that
// does not exist and one the caller may not read are both 404 not_found.
func (h *History) roomMessages(r *http.Request, id auth.Identity, db *pgxpool.Pool) (any, error) {
	room := r.PathValue("room")
	if !chatevent.ValidRoom(room) {
		return nil, badRequest("invalid_room", "room %q is not valid: want [a-z0-9][a-z0-9_-]{0,63}", room)
	}
	p, err := pageParams(r)
	if err != nil {
		return nil, err
	}
	if !h.mayRead(r.Context(), room, id) {
		return nil, errNotFound
	}
	p.conversation = "room:" + room
	msgs, err := queryPage(r.Context(), db, p)
	if err != nil {
		return nil, err
	}
	if len(msgs) == 0 {
		if err := h.roomExists(r.Context(), db, room); err != nil {
			return nil, err
		}
	}
	return messagesResponse{Messages: msgs}, nil
}

func (h *History) dmMessages(r *http.Request, id auth.Identity, db *pgxpool.Pool) (any, error) {
	peer := r.PathValue("peer")
	if !chatevent.ValidUsername(peer) {
		return nil, badRequest("invalid_user", "peer %q is not a valid username", peer)
	}
	p, err := pageParams(r)
	if err != nil {
		return nil, err
	}
	p.conversation = chatevent.DMKey(id.Username, peer) // only ever the caller's own conversation
	msgs, err := queryPage(r.Context(), db, p)
	if err != nil {
		return nil, err
	}
	return messagesResponse{Messages: msgs}, nil
}

func (h *History) search(r *http.Request, id auth.Identity, db *pgxpool.Pool) (any, error) {
	q := r.URL.Query()
	text := q.Get("q")
	if n := utf8.RuneCountInString(text); n == 0 || n > MaxQueryLength || !utf8.ValidString(text) || strings.IndexByte(text, 0) >= 0 {
		return nil, badRequest("invalid_query", "q must be 1 to %d characters of text without NUL", MaxQueryLength)
	}
	room := q.Get("room")
	if room != "" && !chatevent.ValidRoom(room) {
		return nil, badRequest("invalid_room", "room %q is not valid", room)
	}
	limit, err := parseLimit(q.Get("limit"))
	if err != nil {
		return nil, err
	}
	hidden := []string{} // private rooms the caller may not read
	if room != "" {
		if !h.mayRead(r.Context(), room, id) {
			return nil, errNotFound
		}
		if err := h.roomExists(r.Context(), db, room); err != nil {
			return nil, err
		}
	} else if !id.Admin {
		acl := h.acl.ACL()
		for _, ri := range acl.Rooms(id.Username, true) {
			if ri.Private && !acl.MayRead(ri.Room, id.Username, false) {
				hidden = append(hidden, ri.Room)
			}
		}
	}
	msgs, err := search(r.Context(), db, id.Username, text, room, hidden, limit)
	if err != nil {
		return nil, err
	}
	return messagesResponse{Messages: msgs}, nil
}

// Conversation is one of the caller's private conversations with news.
type Conversation struct {
	Peer   string  `json:"peer"`
	Count  int     `json:"count"`  // messages after since
	Latest Message `json:"latest"` // the newest of them
}

// dmSince answers GET /v1/dm?since=ID: the caller's conversations with
// messages after ID (all of them without since), newest activity first.
func (h *History) dmSince(r *http.Request, id auth.Identity, db *pgxpool.Pool) (any, error) {
	since := ""
	if s := r.URL.Query().Get("since"); s != "" {
		u, err := uuid.Parse(s)
		if err != nil {
			return nil, badRequest("invalid_cursor", "since must be a message id (UUID)")
		}
		since = u.String()
	}
	convs, err := conversationsSince(r.Context(), db, id.Username, since)
	if err != nil {
		return nil, err
	}
	return map[string]any{"conversations": convs}, nil
}
