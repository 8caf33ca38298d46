package pgutil

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"
)

func TestRedacted(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
		secrets        []string // must not appear in the result
	}{
		{"empty", "", "", nil},
		{"url without password", "postgres://chat@127.0.0.1:5432/chat?sslmode=disable", "postgres://chat@127.0.0.1:5432/chat?sslmode=disable", nil},
		{"url userinfo", "postgres://chat:s3cr3t@db:5432/chat", "postgres://chat:xxxxx@db:5432/chat", []string{"s3cr3t"}},
		{"postgresql scheme", "postgresql://chat:s3cr3t@db/chat", "postgresql://chat:xxxxx@db/chat", []string{"s3cr3t"}},
		{"url escaped password", "postgres://chat:p%40ss%2Fw0rd@db/chat", "postgres://chat:xxxxx@db/chat", []string{"p%40ss", "p@ss"}},
		{"url query password", "postgres://db/chat?user=chat&password=s3cr3t&sslmode=require", "postgres://db/chat?user=chat&password=xxxxx&sslmode=require", []string{"s3cr3t"}},
		{"url query sslpassword", "postgres://db/chat?sslkey=/k.pem&sslpassword=k3ypass", "postgres://db/chat?sslkey=/k.pem&sslpassword=xxxxx", []string{"k3ypass"}},
		{"url query key case", "postgres://db/chat?PASSWORD=s3cr3t", "postgres://db/chat?PASSWORD=xxxxx", []string{"s3cr3t"}},
		{"url both", "postgres://chat:one1@db/chat?password=two2", "postgres://chat:xxxxx@db/chat?password=xxxxx", []string{"one1", "two2"}},
		{"url multiple hosts", "postgres://chat:s3cr3t@h1:5432,h2:5433/chat", "", []string{"s3cr3t"}},
		{"unparseable url", "postgres://chat:s3cr3t@db:port/chat", "postgres://(unparseable URL, redacted)", []string{"s3cr3t"}},
		{"kv plain", "host=db user=chat password=s3cr3t dbname=chat", "host=db user=chat password=xxxxx dbname=chat", []string{"s3cr3t"}},
		{"kv spaces around =", "host=db password = s3cr3t dbname=chat", "host=db password = xxxxx dbname=chat", []string{"s3cr3t"}},
		{"kv quoted", "host=db password='two words' user=chat", "host=db password=xxxxx user=chat", []string{"two", "words"}},
		{"kv quoted escapes", `password='it\'s \\ secret' host=db`, "password=xxxxx host=db", []string{"it", "secret"}},
		{"kv unquoted escape", `password=a\ b\ c host=db`, "password=xxxxx host=db", []string{"a\\ b"}},
		{"kv sslpassword", "host=db sslkey=/etc/k.pem sslpassword=k3ypass", "host=db sslkey=/etc/k.pem sslpassword=xxxxx", []string{"k3ypass"}},
		{"kv upper-case key", "PASSWORD=s3cr3t", "PASSWORD=xxxxx", []string{"s3cr3t"}},
		{"kv tabs and newlines", "host=db\tpassword=s3cr3t\nuser=chat", "host=db\tpassword=xxxxx\nuser=chat", []string{"s3cr3t"}},
		{"kv password last", "host=db password=s3cr3t", "host=db password=xxxxx", []string{"s3cr3t"}},
		{"kv unterminated quote", "host=db password='s3cr3t", "(unparseable connection string, redacted)", []string{"s3cr3t"}},
		{"kv missing =", "host=db password s3cr3t", "(unparseable connection string, redacted)", []string{"s3cr3t"}},
		{"kv with a URL-looking value", "host=db password=s3cr3t options=x://y", "host=db password=xxxxx options=x://y", []string{"s3cr3t"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Redacted(tc.in)
			if tc.want != "" && got != tc.want {
				t.Errorf("Redacted(%q) = %q, want %q", tc.in, got, tc.want)
			}
			for _, s := range tc.secrets {
				if strings.Contains(got, s) {
					t.Errorf("Redacted(%q) = %q still contains %q", tc.in, got, s)
				}
			}
		})
	}
}

// TestOpenErrorsHideSecrets opens connection strings pgx refuses or cannot
// connect with, in every form, and checks no error message shows a secret.
func TestOpenErrorsHideSecrets(t *testing.T) {
	port := closedPort(t)
	for _, conn := range []string{
		"postgres://chat:s3cr3t-url@127.0.0.1:" + port + "/chat?connect_timeout=2",
		"postgres://chat@127.0.0.1:" + port + "/chat?password=s3cr3t-query&connect_timeout=2",
		"host=127.0.0.1 port=" + port + " user=chat password=s3cr3t-kv connect_timeout=2",
		"host=127.0.0.1 port=" + port + " password = 's3cr3t quoted' connect_timeout=2",
		"postgres://chat:s3cr3t-badport@127.0.0.1:notaport/chat",
		"host=127.0.0.1 port=notaport password = s3cr3t-kvbad",
		"host=127.0.0.1 sslmode=bogus password='s3cr3t-sslmode'",
		"postgres://chat:s3cr3t-%zz@127.0.0.1/chat",
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		pool, err := Open(ctx, conn)
		cancel()
		if err == nil {
			pool.Close()
			t.Fatalf("Open(%q) succeeded against a closed port", conn)
		}
		if strings.Contains(err.Error(), "s3cr3t") {
			t.Errorf("Open(%q) error shows the secret: %v", conn, err)
		}
		t.Logf("%v", err)
	}
}

// closedPort returns a 127.0.0.1 port nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(l.Addr().String())
	l.Close()
	return port
}
