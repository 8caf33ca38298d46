package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/chatsys/chat/pkg/auth"
)

// apiRecorder is an HTTP server standing in for history's conversation API:
// it records each request (method, path, body, who called) and answers
// with the canned reply of "METHOD PATH".
type apiRecorder struct {
	t       *testing.T
	secret  string
	replies map[string]reply

	mu   sync.Mutex
	reqs []recorded
}

type reply struct {
	status int
	body   string
}

type recorded struct {
	method, path, body, user string
	admin                    bool
	contentType              string
}

func newAPIRecorder(t *testing.T, replies map[string]reply) (*apiRecorder, string) {
	a := &apiRecorder{t: t, secret: "recorder-secret-0123456789abcdef", replies: replies}
	v, err := auth.NewVerifier(auth.Config{Secret: a.secret})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := v.VerifyRequest(r)
		if err != nil {
			t.Errorf("%s %s: token: %v", r.Method, r.URL.Path, err)
		}
		b, _ := io.ReadAll(r.Body)
		a.mu.Lock()
		a.reqs = append(a.reqs, recorded{method: r.Method, path: r.URL.EscapedPath(), body: string(b), user: id.Username, admin: id.Admin,
			contentType: r.Header.Get("Content-Type")})
		a.mu.Unlock()
		rep, ok := a.replies[r.Method+" "+r.URL.EscapedPath()]
		if !ok {
			rep = reply{404, `{"error":{"code":"not_found","message":"no such endpoint"}}`}
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(rep.status)
		io.WriteString(w, rep.body)
	}))
	t.Cleanup(srv.Close)
	return a, srv.URL
}

func (a *apiRecorder) take() []recorded {
	a.mu.Lock()
	defer a.mu.Unlock()
	r := a.reqs
	a.reqs = nil
	return r
}

// TestConversationCommands runs each conversation command against the
// recorder: the request it sends (method, path, JSON body, the user's
// token) and what it prints from the answer.
func TestConversationCommands(t *testing.T) {
	rec, url := newAPIRecorder(t, map[string]reply{
		"POST /v1/rooms/design":        {201, `{"room":"design","private":true,"owner":"alice","role":"owner"}`},
		"POST /v1/rooms/lobby":         {201, `{"room":"lobby","private":false,"owner":"alice","role":"owner"}`},
		"GET /v1/rooms/design":         {200, `{"room":"design","private":true,"owner":"alice","role":"owner","members":[{"username":"alice","role":"owner"},{"username":"bob","role":"member","muted":true},{"username":"eve","banned":true}]}`},
		"GET /v1/rooms":                {200, `{"rooms":[{"room":"design","private":true,"owner":"alice","role":"owner"},{"room":"lobby","private":false,"owner":"carol","role":""}]}`},
		"POST /v1/rooms/design/invite": {200, `{"room":"design","username":"bob","action":"invite","role":"member","muted":false,"banned":false}`},
		"POST /v1/rooms/design/mute":   {200, `{"room":"design","username":"bob","action":"mute","role":"member","muted":true,"banned":false}`},
		"POST /v1/rooms/design/ban":    {200, `{"room":"design","username":"eve","action":"ban","role":"","muted":false,"banned":true}`},
		"PUT /v1/blocks/bob":           {200, `{"username":"bob","blocked":true}`},
		"DELETE /v1/blocks/bob":        {200, `{"username":"bob","blocked":false}`},
		"GET /v1/blocks":               {200, `{"blocked":["bob","eve"]}`},
		"GET /v1/unread":               {200, `{"conversations":[{"room":"general","unread":3,"last_read":"2:41"},{"peer":"bob","unread":1}]}`},
		"PATCH /v1/messages/0f8fad5b-d9cb-469f-a165-70867728950e":  {200, `{"id":"0f8fad5b-d9cb-469f-a165-70867728950e","type":"edit","room":"general","username":"alice","content":"fixed","edited_at":"2026-01-02T03:04:05Z","pos":"1:9"}`},
		"DELETE /v1/messages/0f8fad5b-d9cb-469f-a165-70867728950e": {200, `{"id":"0f8fad5b-d9cb-469f-a165-70867728950e","type":"delete","target":"bob","username":"alice","pos":"1:10"}`},
	})
	base := []string{"--server", url, "--jwt-secret", rec.secret}
	for _, tc := range []struct {
		args   []string
		method string
		path   string
		body   string // JSON ("" for none)
		user   string
		admin  bool
		out    string
	}{
		{[]string{"room", "create", "design", "--private", "--user", "alice"}, "POST", "/v1/rooms/design", `{"private":true}`, "alice", false,
			"created #design private, owner alice, your role owner\n"},
		{[]string{"room", "create", "lobby", "--user", "alice"}, "POST", "/v1/rooms/lobby", `{"private":false}`, "alice", false,
			"created #lobby public, owner alice, your role owner\n"},
		{[]string{"room", "show", "design", "--user", "alice"}, "GET", "/v1/rooms/design", "", "alice", false,
			"#design private, owner alice, your role owner\n  alice: owner\n  bob: member, muted\n  eve: banned\n"},
		{[]string{"room", "list", "--user", "alice"}, "GET", "/v1/rooms", "", "alice", false,
			"#design private, owner alice, your role owner\n#lobby public, owner carol\n"},
		{[]string{"room", "invite", "design", "bob", "--user", "alice"}, "POST", "/v1/rooms/design/invite", `{"username":"bob"}`, "alice", false,
			"#design bob: invite (member)\n"},
		{[]string{"room", "mute", "design", "bob", "--user", "alice"}, "POST", "/v1/rooms/design/mute", `{"username":"bob"}`, "alice", false,
			"#design bob: mute (member, muted)\n"},
		{[]string{"room", "ban", "design", "eve", "--user", "root", "--admin"}, "POST", "/v1/rooms/design/ban", `{"username":"eve"}`, "root", true,
			"#design eve: ban (banned)\n"},
		{[]string{"block", "bob", "--user", "alice"}, "PUT", "/v1/blocks/bob", "", "alice", false, "blocked bob\n"},
		{[]string{"unblock", "bob", "--user", "alice"}, "DELETE", "/v1/blocks/bob", "", "alice", false, "unblocked bob\n"},
		{[]string{"blocks", "--user", "alice"}, "GET", "/v1/blocks", "", "alice", false, "bob\neve\n"},
		{[]string{"unread", "--user", "alice"}, "GET", "/v1/unread", "", "alice", false, "#general: 3 unread (last read 2:41)\n@bob: 1 unread\n"},
		{[]string{"edit", "0f8fad5b-d9cb-469f-a165-70867728950e", "fixed", "--user", "alice"}, "PATCH", "/v1/messages/0f8fad5b-d9cb-469f-a165-70867728950e",
			`{"content":"fixed"}`, "alice", false, "edited 0f8fad5b-d9cb-469f-a165-70867728950e in #general at 2026-01-02T03:04:05Z\n"},
		{[]string{"delete", "0f8fad5b-d9cb-469f-a165-70867728950e", "--user", "alice"}, "DELETE", "/v1/messages/0f8fad5b-d9cb-469f-a165-70867728950e",
			"", "alice", false, "deleted 0f8fad5b-d9cb-469f-a165-70867728950e in @bob\n"},
	} {
		t.Run(strings.Join(tc.args[:2], " "), func(t *testing.T) {
			out, err := ctl(t, "", append(base, tc.args...)...)
			if err != nil {
				t.Fatalf("chatctl %v: %v", tc.args, err)
			}
			if out != tc.out {
				t.Errorf("chatctl %v printed\n%s\nwant\n%s", tc.args, out, tc.out)
			}
			reqs := rec.take()
			if len(reqs) != 1 {
				t.Fatalf("chatctl %v sent %d requests, want 1: %+v", tc.args, len(reqs), reqs)
			}
			r := reqs[0]
			if r.method != tc.method || r.path != tc.path || r.user != tc.user || r.admin != tc.admin {
				t.Errorf("chatctl %v sent %s %s as %s (admin %v), want %s %s as %s (admin %v)", tc.args, r.method, r.path, r.user, r.admin,
					tc.method, tc.path, tc.user, tc.admin)
			}
			if !jsonEqual(r.body, tc.body) {
				t.Errorf("chatctl %v sent body %q, want %q", tc.args, r.body, tc.body)
			}
			if tc.body != "" && r.contentType != "application/json" {
				t.Errorf("chatctl %v sent Content-Type %q, want application/json", tc.args, r.contentType)
			}
		})
	}

	// Every membership action has its command and endpoint.
	for _, action := range []string{"remove", "mod", "unmod", "unmute", "unban"} {
		ctl(t, "", append(base, "room", action, "design", "bob", "--user", "alice")...)
		if reqs := rec.take(); len(reqs) != 1 || reqs[0].method != "POST" || reqs[0].path != "/v1/rooms/design/"+action || !jsonEqual(reqs[0].body, `{"username":"bob"}`) {
			t.Errorf("chatctl room %s design bob sent %+v, want POST /v1/rooms/design/%s {\"username\":\"bob\"}", action, reqs, action)
		}
	}
}

// TestConversationErrors: the server's {"error":{code,message}} becomes the
// command's error (non-zero exit); bad arguments are refused before any
// request.
func TestConversationErrors(t *testing.T) {
	rec, url := newAPIRecorder(t, map[string]reply{
		"POST /v1/rooms/design":        {409, `{"error":{"code":"conflict","message":"room design already exists"}}`},
		"GET /v1/rooms/secret":         {404, `{"error":{"code":"not_found","message":"room not found"}}`},
		"POST /v1/rooms/design/mod":    {403, `{"error":{"code":"forbidden","message":"only the owner makes moderators"}}`},
		"DELETE /v1/messages/nope":     {404, `{"error":{"code":"not_found","message":"no such message of yours"}}`},
		"GET /v1/unread":               {502, `<html>bad gateway</html>`},
		"POST /v1/rooms/design/invite": {400, `{"error":{"code":"invalid_request","message":"username is missing"}}`},
	})
	base := []string{"--server", url, "--jwt-secret", rec.secret}
	for _, tc := range []struct {
		args []string
		want string
		sent bool
	}{
		{[]string{"room", "create", "design"}, "conflict: room design already exists", true},
		{[]string{"room", "show", "secret"}, "not_found: room not found", true},
		{[]string{"room", "mod", "design", "bob"}, "forbidden: only the owner makes moderators", true},
		{[]string{"room", "invite", "design", "bob"}, "invalid_request: username is missing", true},
		{[]string{"delete", "nope"}, "not_found: no such message of yours", true},
		{[]string{"unread"}, "502 Bad Gateway: <html>bad gateway</html>", true},
		{[]string{"room", "create", "not a room!"}, `"not a room!" is not a valid room name`, false},
		{[]string{"room", "ban", "design", "Bad User"}, `"Bad User" is not a valid username`, false},
		{[]string{"block", "x y"}, `"x y" is not a valid username`, false},
		{[]string{"edit", "0f8fad5b-d9cb-469f-a165-70867728950e", ""}, "give the new text", false},
		{[]string{"room", "invite", "design"}, "accepts 2 arg(s), received 1", false},
		{[]string{"unblock"}, "accepts 1 arg(s), received 0", false},
		{[]string{"room", "frob", "design", "carol"}, `unknown command "frob" for "chatctl room"`, false},
	} {
		_, err := ctl(t, "", append(base, tc.args...)...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("chatctl %v: error %v, want one saying %q", tc.args, err, tc.want)
		}
		if reqs := rec.take(); (len(reqs) > 0) != tc.sent {
			t.Errorf("chatctl %v sent %d requests, want a request: %v", tc.args, len(reqs), tc.sent)
		}
	}
}

// jsonEqual compares two JSON texts by value ("" equals "").
func jsonEqual(a, b string) bool {
	if a == "" || b == "" {
		return a == b
	}
	var x, y any
	if json.Unmarshal([]byte(a), &x) != nil || json.Unmarshal([]byte(b), &y) != nil {
		return false
	}
	xb, _ := json.Marshal(x)
	yb, _ := json.Marshal(y)
	return string(xb) == string(yb)
}
