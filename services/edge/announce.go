package edge

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/chatsys/chat/pkg/chatevent"
)

// Announce request and response bodies of POST /v1/admin/announce.
type announceRequest struct {
	Content string `json:"content"`
	Room    string `json:"room,omitempty"`
}

func (e *Edge) serveAnnounce(w http.ResponseWriter, r *http.Request) {
	id, err := e.verify.VerifyAPIRequest(r)
	if err != nil {
		w.Header().Set("WWW-Authenticate", `Bearer realm="chat"`)
		httpError(w, http.StatusUnauthorized, "unauthorized", err.Error())
		return
	}
	if !id.Admin {
		httpError(w, http.StatusForbidden, chatevent.CodeForbidden, "announce needs a token with the admin role")
		return
	}
	var req announceRequest
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, e.cfg.ReadLimit))
	if err == nil {
		err = chatevent.DecodeObject(b, &req)
	}
	if err != nil {
		httpError(w, http.StatusBadRequest, chatevent.CodeInvalidMessage, "body must be a JSON object {content, room?}: "+err.Error())
		return
	}
	if n := utf8.RuneCountInString(req.Content); n == 0 || n > e.cfg.MaxContentChars || strings.IndexByte(req.Content, 0) >= 0 {
		httpError(w, http.StatusBadRequest, chatevent.CodeInvalidMessage, fmt.Sprintf("content must be 1..%d characters of text without NUL", e.cfg.MaxContentChars))
		return
	}
	if req.Room != "" && !chatevent.ValidRoom(req.Room) {
		httpError(w, http.StatusBadRequest, chatevent.CodeInvalidMessage, fmt.Sprintf("room %q is not valid", req.Room))
		return
	}
	ev := chatevent.Event{ID: chatevent.NewID(), Type: chatevent.TypeSystem, Room: req.Room, Username: id.Username,
		Content: req.Content, Timestamp: chatevent.FormatTime(time.Now())}
	if err := e.append(r.Context(), &ev); err != nil {
		httpError(w, http.StatusServiceUnavailable, chatevent.CodeUnavailable, "the message log did not acknowledge the announcement")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(ev)
}
