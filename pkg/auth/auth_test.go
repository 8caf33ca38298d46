package auth

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"
)

const secret = "0123456789abcdef0123"

func TestHS256(t *testing.T) {
	v, err := NewVerifier(Config{Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	m := NewHS256Minter(secret, "")
	for _, tc := range []struct {
		name  string
		user  string
		admin bool
		ttl   time.Duration
		ok    bool
	}{
		{"user", "alice", false, time.Hour, true},
		{"admin", "root", true, time.Hour, true},
		{"expired", "alice", false, -time.Hour, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := m.Mint(tc.user, tc.admin, tc.ttl)
			if err != nil {
				t.Fatal(err)
			}
			id, err := v.Verify(tok)
			if (err == nil) != tc.ok {
				t.Fatalf("Verify error = %v, want ok %v", err, tc.ok)
			}
			if tc.ok && (id.Username != tc.user || id.Admin != tc.admin) {
				t.Fatalf("Verify = %+v, want %s admin=%v", id, tc.user, tc.admin)
			}
			if !tc.ok && !errors.Is(err, ErrInvalidToken) {
				t.Fatalf("error %v does not wrap ErrInvalidToken", err)
			}
		})
	}
	if _, err := NewVerifier(Config{Secret: "short"}); err == nil {
		t.Fatal("NewVerifier with a 5-byte secret: nil error, want one")
	}
}

func TestRS256PinnedAlgorithm(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	path := filepath.Join(t.TempDir(), "pub.pem")
	os.WriteFile(path, pubPEM, 0o644)
	v, err := NewVerifier(Config{PublicKeyFile: path})
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := NewRS256Minter(key, "").Mint("alice", false, time.Hour)
	if id, err := v.Verify(tok); err != nil || id.Username != "alice" {
		t.Fatalf("RS256 Verify = %+v, %v; want alice", id, err)
	}
	// Key confusion: an HS256 token signed with the public key's bytes.
	forged, _ := NewHS256Minter(string(pubPEM), "").Mint("alice", true, time.Hour)
	if _, err := v.Verify(forged); err == nil {
		t.Fatal("HS256 token signed with the RSA public key was accepted")
	}
}

func TestTokenFromRequest(t *testing.T) {
	for _, tc := range []struct {
		name   string
		url    string
		header map[string]string
		want   string
	}{
		{"bearer", "/ws", map[string]string{"Authorization": "Bearer abc"}, "abc"},
		{"query", "/ws?token=q1", nil, "q1"},
		{"subprotocol", "/ws", map[string]string{"Sec-WebSocket-Protocol": "chat.v1, bearer.s.t.u"}, "s.t.u"},
		{"none", "/ws", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", tc.url, nil)
			for k, v := range tc.header {
				r.Header.Set(k, v)
			}
			if got := TokenFromRequest(r); got != tc.want {
				t.Fatalf("TokenFromRequest = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestLoadOrCreateSecretIsStable(t *testing.T) {
	dir := t.TempDir()
	a, err := LoadOrCreateSecret(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := LoadOrCreateSecret(dir)
	if err != nil || a != b || len(a) < 32 {
		t.Fatalf("second LoadOrCreateSecret = %q, %v; want the first %q", b, err, a)
	}
	if st, _ := os.Stat(filepath.Join(dir, SecretFile)); st.Mode().Perm() != 0o600 {
		t.Fatalf("secret file mode = %v, want 0600", st.Mode().Perm())
	}
}
