package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestNoSecretInLogs: database passwords in every connection-string form,
// the JWT secret and tokens never reach the log or -print-config, at
// start-up, in errors or while serving (at debug level).
func TestNoSecretInLogs(t *testing.T) {
	const jwtSecret = "jwt-secret-never-logged-0123456789"
	closed := freeAddr(t)
	_, port, _ := strings.Cut(closed, ":")
	for _, tc := range []struct{ name, url, password string }{
		{"keyword/value", "host=127.0.0.1 port=" + port + " user=chat password=kv-pw-never-logged dbname=chat connect_timeout=2", "kv-pw-never-logged"},
		{"keyword/value quoted", "host=127.0.0.1 port=" + port + " user=chat password = 'quoted pw never logged' connect_timeout=2", "quoted pw never logged"},
		{"URL userinfo", "postgres://chat:url-pw-never-logged@127.0.0.1:" + port + "/chat?connect_timeout=2", "url-pw-never-logged"},
		{"URL query", "postgres://chat@127.0.0.1:" + port + "/chat?password=query-pw-never-logged&connect_timeout=2", "query-pw-never-logged"},
		{"unparseable URL", "postgres://chat:bad-pw-never-logged@127.0.0.1:port/chat", "bad-pw-never-logged"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var log, out bytes.Buffer
			args := []string{"-target=history", "-data.dir=" + t.TempDir(), "-http.addr=127.0.0.1:0", "-log.level=debug",
				"-kafka.brokers=" + freeAddr(t), "-database.url=" + tc.url, "-jwt.secret=" + jwtSecret}
			// A database that refuses connections is retried for a minute
			// at start: a few seconds show what gets logged.
			ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
			defer cancel()
			if code := run(ctx, args, io.Discard, &log, nil); code != 1 {
				t.Fatalf("exit %d with an unreachable database, want 1:\n%s", code, &log)
			}
			if code := run(context.Background(), append(args, "-print-config"), &out, &log, nil); code != 0 {
				t.Fatalf("-print-config exit %d", code)
			}
			for _, secret := range []string{tc.password, jwtSecret} {
				if strings.Contains(log.String(), secret) || strings.Contains(out.String(), secret) {
					t.Fatalf("%q logged:\n%s\n%s", secret, &log, &out)
				}
			}
			if !strings.Contains(log.String(), "start history") {
				t.Fatalf("no start error logged:\n%s", &log)
			}
		})
	}

	t.Run("serving", func(t *testing.T) {
		dir := dataDir(t)
		log := &syncBuffer{}
		s := startAllLogging(t, dir, log, "-log.level=debug")
		tok := tokenFromDataDir(t, dir, "alice")
		ws, _, err := websocket.DefaultDialer.Dial("ws://"+s.addr+"/ws?token="+tok, nil)
		if err != nil {
			t.Fatal(err)
		}
		ws.WriteJSON(map[string]string{"type": "chat", "room": "general", "content": "hi", "client_id": "s1"})
		readType(t, ws, "ack")
		ws.Close()
		bad := tok[:len(tok)-4] + "AAAA" // bad signature
		for _, path := range []string{"/ws?token=" + bad, "/v1/rooms/general/messages?token=" + bad, "/v1/rooms/general/messages?token=" + tok,
			"/v1/presence?user=alice&token=" + tok, "/v1/presence?user=alice&token=" + bad} {
			resp, err := http.Get("http://" + s.addr + path)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
		}
		s.stop()
		pgPassword, err := os.ReadFile(filepath.Join(dir, "postgres.password"))
		if err != nil {
			t.Fatal(err)
		}
		secret, err := os.ReadFile(filepath.Join(dir, "jwt.secret"))
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range []string{strings.TrimSpace(string(pgPassword)), strings.TrimSpace(string(secret)), tok, bad, strings.Split(tok, ".")[2]} {
			if strings.Contains(log.String(), v) {
				t.Fatalf("%q logged:\n%s", v, log)
			}
		}
	})
}
