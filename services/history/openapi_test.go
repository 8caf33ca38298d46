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
	produce(t, k, event("chat", "general", "", "alice", "hello spec", "o1"), event("private", "", "bob", "alice", "dm spec", "o2"))
	eventually(t, 20*time.Second, "rows", func() bool { return count(t, db, "SELECT count(*) FROM messages") == 2 })

	mux := http.NewServeMux()
	h.Routes(mux)
	tok := token(t, "alice")
	documented := map[string]bool{}
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			documented[method+" "+path] = true
		}
	}
	exercised := map[string]bool{}
	for _, tc := range []struct {
		path   string
		auth   bool
		status int
	}{
		{"/v1/rooms/general/messages", true, 200},
		{"/v1/rooms/general/messages?limit=1&before=01a21b52-067e-741d-817d-36892065b11f", true, 200},
		{"/v1/rooms/general/messages?limit=999", true, 400},
		{"/v1/rooms/general/messages", false, 401},
		{"/v1/dm/bob/messages", true, 200},
		{"/v1/dm/bob/messages?after=nope", true, 400},
		{"/v1/dm", true, 200},
		{"/v1/dm?since=01a21b52-067e-741d-817d-36892065b11f", true, 200},
		{"/v1/dm?since=yesterday", true, 400},
		{"/v1/search?q=spec", true, 200},
		{"/v1/search?q=spec&limit=0", true, 400},
		{"/v1/search?q=spec", false, 401},
	} {
		t.Run(tc.path, func(t *testing.T) {
			req := httptest.NewRequest("GET", "http://chat.test"+tc.path, nil)
			if tc.auth {
				req.Header.Set("Authorization", "Bearer "+tok)
			}
			rec := httptest.NewRecorder()
			mux.ServeHTTP(rec, req)
			if rec.Code != tc.status {
				t.Fatalf("GET %s = %d, want %d: %s", tc.path, rec.Code, tc.status, rec.Body)
			}
			route, params, err := router.FindRoute(req)
			if err != nil {
				t.Fatalf("GET %s is served but not documented: %v", tc.path, err)
			}
			exercised["GET "+route.Path] = true
			in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route,
				Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}}
			if tc.status == 200 {
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
