package auth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
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

// signHS256 signs payload as it is, byte for byte (a minter would never
// write a duplicate or a case variant; another issuer might).
func signHS256(payload string) string {
	enc := base64.RawURLEncoding
	input := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + enc.EncodeToString([]byte(payload))
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(input))
	return input + "." + enc.EncodeToString(mac.Sum(nil))
}

// Claims are read case-sensitively and once: encoding/json alone would take
// "Roles" for roles and the last of two subs.
func TestClaimsAreStrict(t *testing.T) {
	v, err := NewVerifier(Config{Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	exp := time.Now().Add(time.Hour).Unix()
	for _, tc := range []struct {
		payload string
		ok      bool
		admin   bool
	}{
		{fmt.Sprintf(`{"sub":"dave","exp":%d,"roles":["admin"],"nickname":"D"}`, exp), true, true},
		{fmt.Sprintf(`{"sub":"dave","exp":%d,"Nickname":"D"}`, exp), true, false},
		{fmt.Sprintf(`{"sub":"dave","exp":%d,"Roles":["admin"]}`, exp), false, false},
		{fmt.Sprintf(`{"sub":"dave","sub":"root","exp":%d}`, exp), false, false},
		{fmt.Sprintf(`{"SUB":"root","sub":"dave","exp":%d}`, exp), false, false},
		{fmt.Sprintf(`{"sub":"dave","exp":%d,"EXP":1}`, exp), false, false},
		{fmt.Sprintf(`{"sub":"dave","exp":"%d"}`, exp), false, false}, // a NumericDate is a number
		{fmt.Sprintf(`{"sub":"dave","exp":%d,"iat":"%d"}`, exp, exp-60), false, false},
		{fmt.Sprintf(`{"sub":"dave","exp":%d,"nbf":%d.5}`, exp, exp-7200), true, false},
	} {
		id, err := v.Verify(signHS256(tc.payload))
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrInvalidToken)) {
			t.Errorf("Verify(%s) error = %v, want ok %v", tc.payload, err, tc.ok)
			continue
		}
		if tc.ok && (id.Username != "dave" || id.Admin != tc.admin) {
			t.Errorf("Verify(%s) = %+v, want dave admin=%v", tc.payload, id, tc.admin)
		}
	}
}

// TestAPIRequestsGetNoLeeway: a token 5 s past its exp still passes the
// handshake's leeway, but not an API request.
func TestAPIRequestsGetNoLeeway(t *testing.T) {
	const secret = "0123456789abcdef0123"
	v, err := NewVerifier(Config{Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	req := func(ttl time.Duration) *http.Request {
		tok, err := NewHS256Minter(secret, "").Mint("alice", true, ttl)
		if err != nil {
			t.Fatal(err)
		}
		r := httptest.NewRequest("POST", "/v1/admin/announce", nil)
		r.Header.Set("Authorization", "Bearer "+tok)
		return r
	}
	if _, err := v.VerifyRequest(req(-5 * time.Second)); err != nil {
		t.Fatalf("handshake within the leeway: %v", err)
	}
	if _, err := v.VerifyAPIRequest(req(-5 * time.Second)); !errors.Is(err, ErrExpired) {
		t.Fatalf("API request 5 s after exp: %v, want ErrExpired", err)
	}
	if id, err := v.VerifyAPIRequest(req(time.Minute)); err != nil || id.Username != "alice" {
		t.Fatalf("valid API request: %v %v", id, err)
	}
}

// The HTTP APIs take the token from the Authorization header only: a
// token in the query string (which proxies log) is refused with a reason,
// while /ws (VerifyRequest) still takes it there.
func TestAPIRequestsTakeTheHeaderOnly(t *testing.T) {
	const secret = "0123456789abcdef0123"
	v, err := NewVerifier(Config{Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := NewHS256Minter(secret, "").Mint("alice", false, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest("GET", "/v1/unread?token="+tok, nil)
	if _, err := v.VerifyAPIRequest(r); !errors.Is(err, ErrQueryToken) {
		t.Fatalf("API request with ?token=: %v, want ErrQueryToken", err)
	}
	if id, err := v.VerifyRequest(r); err != nil || id.Username != "alice" {
		t.Fatalf("handshake with ?token=: %v %v, want alice", id, err)
	}
	r.Header.Set("Authorization", "Bearer "+tok)
	if id, err := v.VerifyAPIRequest(r); err != nil || id.Username != "alice" {
		t.Fatalf("API request with the header (and ?token=): %v %v", id, err)
	}
}
