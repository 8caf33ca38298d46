package history_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/chatsys/chat/pkg/chatevent"
	"github.com/chatsys/chat/pkg/pgutil/pgtest"
	"github.com/chatsys/chat/services/history"
)

// TestOpenAPIMatchesHandlers validates the OpenAPI document and every
// response of the real handlers against it, for each documented operation,
// successes and errors, and checks that every route served is documented.
func TestOpenAPIMatchesHandlers(t *testing.T) {
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(history.OpenAPI())
	if err != nil {
		t.Fatal(err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("openapi.yaml is not valid: %v", err)
	}
	doc.Servers = nil // match requests to any host
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	k := topics(t, testBroker(t))
	db := pgtest.NewDatabase(t)
	h := startHistory(t, k, db)
	general := event("chat", "general", "", "alice", "hello spec", "o1")
	gone := event("chat", "general", "", "alice", "deleted spec", "o3")
	bobs := event("chat", "general", "", "bob", "bob spec", "o4")
	produce(t, k, general, event("private", "", "bob", "alice", "dm spec", "o2"), gone, bobs)
	eventually(t, 20*time.Second, "rows", func() bool { return count(t, db, "SELECT count(*) FROM messages") == 4 })
	must(t, 200, h.URL, "DELETE", "alice", "/v1/messages/"+gone.ID, nil)
	must(t, 200, h.URL, "PATCH", "alice", "/v1/messages/"+general.ID, map[string]string{"content": "hello edited spec"})
	must(t, 201, h.URL, "POST", "carol", "/v1/rooms/closed", map[string]any{"private": true})
	eventually(t, 20*time.Second, "edit and delete applied", func() bool {
		return count(t, db, "SELECT count(*) FROM messages WHERE deleted OR edited_at IS NOT NULL") == 2
	})

	mux := http.NewServeMux()
	h.Routes(mux)
	documented := map[string]bool{}
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			documented[method+" "+path] = true
		}
	}
	for _, p := range history.RoutePatterns(h.History) {
		if !documented[p] {
			t.Errorf("route %s is served but not documented", p)
		}
	}
	exercised := map[string]bool{}
	for _, tc := range []struct {
		method, path, body string
		user               string // "" sends no token
		status             int
	}{
		{"GET", "/v1/rooms/general/messages", "", "alice", 200},
		{"GET", "/v1/rooms/general/messages?limit=1&before=01a21b52-067e-741d-817d-36892065b11f", "", "alice", 200},
		{"GET", "/v1/rooms/general/messages?limit=999", "", "alice", 400},
		{"GET", "/v1/rooms/general/messages", "", "", 401},
		{"GET", "/v1/rooms/closed/messages", "", "alice", 404},
		{"GET", "/v1/dm/bob/messages", "", "alice", 200},
		{"GET", "/v1/dm/bob/messages?after=nope", "", "alice", 400},
		{"GET", "/v1/dm", "", "alice", 200},
		{"GET", "/v1/dm?since=01a21b52-067e-741d-817d-36892065b11f", "", "alice", 200},
		{"GET", "/v1/dm?since=yesterday", "", "alice", 400},
		{"GET", "/v1/search?q=spec", "", "alice", 200},
		{"GET", "/v1/search?q=spec&limit=0", "", "alice", 400},
		{"GET", "/v1/search?q=spec", "", "", 401},
		{"GET", "/v1/search?q=spec&room=closed", "", "alice", 404},
		{"GET", "/v1/rooms", "", "carol", 200},
		{"GET", "/v1/rooms", "", "", 401},
		{"POST", "/v1/rooms/spec", `{"private":true}`, "alice", 201},
		{"POST", "/v1/rooms/open", "", "alice", 201},
		{"POST", "/v1/rooms/general", "", "alice", 409},
		{"POST", "/v1/rooms/spec", `[1]`, "alice", 400},
		{"GET", "/v1/rooms/spec", "", "alice", 200},
		{"GET", "/v1/rooms/general", "", "alice", 200},
		{"GET", "/v1/rooms/closed", "", "alice", 404},
		{"POST", "/v1/rooms/spec/invite", `{"username":"bob"}`, "alice", 200},
		{"POST", "/v1/rooms/spec/mute", `{"username":"alice"}`, "bob", 403},
		{"POST", "/v1/rooms/closed/invite", `{"username":"alice"}`, "alice", 404},
		{"POST", "/v1/rooms/spec/ban", `{"username":"no way"}`, "alice", 400},
		{"GET", "/v1/blocks", "", "alice", 200},
		{"PUT", "/v1/blocks/mallory", "", "alice", 200},
		{"PUT", "/v1/blocks/alice", "", "alice", 400},
		{"DELETE", "/v1/blocks/mallory", "", "alice", 200},
		{"DELETE", "/v1/blocks/mallory", "", "", 401},
		{"GET", "/v1/unread", "", "alice", 200},
		{"GET", "/v1/unread", "", "", 401},
		{"GET", "/v1/messages/" + general.ID, "", "bob", 200},
		{"GET", "/v1/messages/" + gone.ID, "", "bob", 200},
		{"GET", "/v1/messages/" + chatevent.NewID(), "", "bob", 404},
		{"GET", "/v1/messages/nope", "", "bob", 400},
		{"PATCH", "/v1/messages/" + general.ID, `{"content":"again","client_id":"e1"}`, "alice", 200},
		{"PATCH", "/v1/messages/" + general.ID, `{"content":""}`, "alice", 400},
		{"PATCH", "/v1/messages/" + general.ID, `{"content":"mine now"}`, "bob", 404},
		{"DELETE", "/v1/messages/" + bobs.ID, "", "bob", 200},
		{"DELETE", "/v1/messages/" + general.ID, "", "bob", 404},
		{"DELETE", "/v1/messages/nope", "", "bob", 400},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			var body io.Reader
			if tc.body != "" {
				body = strings.NewReader(tc.body)
			}
			req := httptest.NewRequest(tc.method, "http://chat.test"+tc.path, body)
			if tc.body != "" {
				req.Header.Set("Content-Type", "application/json")
			}
			if tc.user != "" {
				req.Header.Set("Authorization", "Bearer "+token(t, tc.user))
			}
			rec := httptest.NewRecorder()
			mux.ServeHTTP(rec, req)
			if rec.Code != tc.status {
				t.Fatalf("%s %s = %d, want %d: %s", tc.method, tc.path, rec.Code, tc.status, rec.Body)
			}
			route, params, err := router.FindRoute(req)
			if err != nil {
				t.Fatalf("%s %s is served but not documented: %v", tc.method, tc.path, err)
			}
			exercised[tc.method+" "+route.Path] = true
			if tc.body != "" {
				req.Body = io.NopCloser(strings.NewReader(tc.body))
			}
			in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route,
				Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}}
			if tc.status < 300 {
				if err := openapi3filter.ValidateRequest(context.Background(), in); err != nil {
					t.Fatalf("request rejected by the spec: %v", err)
				}
			}
			out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: rec.Code, Header: rec.Header(),
				Body: io.NopCloser(bytes.NewReader(rec.Body.Bytes())), Options: &openapi3filter.Options{IncludeResponseStatus: true}}
			if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil {
				t.Fatalf("response does not match the spec: %v\n%s", err, rec.Body)
			}
		})
	}
	for op := range documented {
		if !exercised[op] {
			t.Errorf("documented operation %s has no test request", op)
		}
	}
	// The document itself is served.
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", "/v1/openapi.yaml", nil))
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), "openapi: 3") {
		t.Fatalf("GET /v1/openapi.yaml = %d", rec.Code)
	}
}
