// Package auth verifies and mints the JWTs that authenticate chat users, and
// extracts a token from an HTTP or WebSocket handshake request.
//
// Tokens are HS256 (shared secret) or RS256 (RSA key pair); which one is
// pinned by configuration, so a token signed with any other algorithm,
// including "none", is refused. The sub claim is the username, exp is
// required, and a roles claim containing "admin" grants admin rights.
package auth

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/golang-jwt/jwt/v5"

	"github.com/chatsys/chat/pkg/chatevent"
)

// RoleAdmin is the role that may announce.
const RoleAdmin = "admin"

// SubprotocolPrefix marks the Sec-WebSocket-Protocol entry that carries a
// token from a browser: "bearer.<jwt>". The server never echoes it; it
// selects Subprotocol instead.
const SubprotocolPrefix = "bearer."

// Subprotocol is the chat's WebSocket subprotocol name. Browsers that send a
// token as a subprotocol entry must offer it too, so the server has one to
// select.
const Subprotocol = "chat.v1"

// SecretFile is the name of the generated HS256 secret in the data directory.
const SecretFile = "jwt.secret"

// Config selects how tokens are verified. Exactly one of Secret and
// PublicKeyFile is used; Secret wins when both are set.
type Config struct {
	Secret        string // HS256 shared secret (-jwt.secret)
	PublicKeyFile string // PEM RSA public key for RS256 (-jwt.public-key)
	Issuer        string // required iss claim when not empty (-jwt.issuer)
}

// RegisterFlags registers the jwt.* flags.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Secret, "jwt.secret", "", "HS256 secret that signs tokens; in single-machine mode one is generated into the data directory when empty")
	fs.StringVar(&c.PublicKeyFile, "jwt.public-key", "", "PEM file with the RSA public key that verifies RS256 tokens (instead of -jwt.secret)")
	fs.StringVar(&c.Issuer, "jwt.issuer", "", "required iss claim; empty accepts any issuer")
}

// Redacted returns a copy safe to log.
func (c Config) Redacted() Config {
	if c.Secret != "" {
		c.Secret = "<redacted>"
	}
	return c
}

// Claims are the token's claims.
type Claims struct {
	Roles []string `json:"roles,omitempty"`
	jwt.RegisteredClaims
}

// Identity is an authenticated user.
type Identity struct {
	Username string
	Admin    bool
	// Expires is the token's exp: a connection authenticated by it is
	// closed then (1008), and the client reconnects with a new token.
	Expires time.Time
	// Token is the verified token itself, for a service that calls another
	// on the user's behalf (the edge relays edits to history).
	Token string
}

// Errors returned by Verify; all mean HTTP 401.
var (
	ErrNoToken      = errors.New("no token")
	ErrInvalidToken = errors.New("invalid token")
)

// Verifier checks tokens. It is safe for concurrent use.
type Verifier struct {
	key    any
	method string
	parser *jwt.Parser
}

// NewVerifier returns a verifier for cfg. It reads the public key file, if any.
func NewVerifier(cfg Config) (*Verifier, error) {
	opts := []jwt.ParserOption{jwt.WithExpirationRequired(), jwt.WithLeeway(30 * time.Second)}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	switch {
	case cfg.Secret != "":
		if len(cfg.Secret) < 16 {
			return nil, errors.New("jwt secret must be at least 16 bytes")
		}
		opts = append(opts, jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}))
		return &Verifier{key: []byte(cfg.Secret), method: "HS256", parser: jwt.NewParser(opts...)}, nil
	case cfg.PublicKeyFile != "":
		pem, err := os.ReadFile(cfg.PublicKeyFile)
		if err != nil {
			return nil, fmt.Errorf("read jwt public key: %w", err)
		}
		pub, err := jwt.ParseRSAPublicKeyFromPEM(pem)
		if err != nil {
			return nil, fmt.Errorf("parse jwt public key %s: %w", cfg.PublicKeyFile, err)
		}
		opts = append(opts, jwt.WithValidMethods([]string{jwt.SigningMethodRS256.Alg()}))
		return &Verifier{key: pub, method: "RS256", parser: jwt.NewParser(opts...)}, nil
	}
	return nil, errors.New("no jwt key: set -jwt.secret (CHAT_JWT_SECRET) or -jwt.public-key")
}

// Verify checks a token and returns who it authenticates.
func (v *Verifier) Verify(token string) (Identity, error) {
	if token == "" {
		return Identity{}, ErrNoToken
	}
	var c Claims
	_, err := v.parser.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) { return v.key, nil })
	if err != nil {
		return Identity{}, fmt.Errorf("%w: %v", ErrInvalidToken, err)
	}
	if err := strictClaims(token); err != nil {
		return Identity{}, fmt.Errorf("%w: %v", ErrInvalidToken, err)
	}
	if !chatevent.ValidUsername(c.Subject) {
		return Identity{}, fmt.Errorf("%w: sub %q is not a valid username", ErrInvalidToken, c.Subject)
	}
	id := Identity{Username: c.Subject, Admin: slices.Contains(c.Roles, RoleAdmin), Token: token}
	if c.ExpiresAt != nil {
		id.Expires = c.ExpiresAt.Time
	}
	return id, nil
}

// claimNames are the claims Verify reads (the jwt library decodes them with
// encoding/json, which matches names case-insensitively and keeps the last
// of duplicates).
var claimNames = []string{"sub", "roles", "exp", "nbf", "iat", "iss", "aud", "jti"}

// strictClaims refuses a signed payload that encoding/json would read
// leniently: a claim given twice ({"sub":"dave","sub":"root"}) or a case
// variant of a claim Verify reads ("Roles"), which could otherwise stand in
// for the real one.
func strictClaims(token string) error {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return errors.New("not a JWS compact token")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return fmt.Errorf("payload: %v", err)
	}
	// The decoder refuses duplicate names and invalid UTF-8 by default.
	dec := jsontext.NewDecoder(bytes.NewReader(payload))
	if tok, err := dec.ReadToken(); err != nil || tok.Kind() != '{' {
		return errors.New("claims are not a JSON object")
	}
	for dec.PeekKind() == '"' {
		tok, err := dec.ReadToken()
		if err != nil {
			return fmt.Errorf("claims: %v", err)
		}
		name := tok.String()
		if chatevent.CaseVariant(name, claimNames) != "" {
			return fmt.Errorf("claim %q: names are case-sensitive, want %q", name, chatevent.CaseVariant(name, claimNames))
		}
		switch name {
		case "exp", "nbf", "iat": // a NumericDate is a JSON number (RFC 7519), not a string holding one
			if dec.PeekKind() != '0' {
				return fmt.Errorf("claim %q must be a number of seconds since the epoch", name)
			}
		}
		if err := dec.SkipValue(); err != nil {
			return fmt.Errorf("claims (a claim given twice?): %v", err)
		}
	}
	if _, err := dec.ReadToken(); err != nil { // }
		return fmt.Errorf("claims: %v", err)
	}
	return nil
}

// VerifyRequest extracts the token from r (see TokenFromRequest) and verifies it.
func (v *Verifier) VerifyRequest(r *http.Request) (Identity, error) {
	return v.Verify(TokenFromRequest(r))
}

// ErrExpired is VerifyAPIRequest's answer to a token past its exp.
var ErrExpired = errors.New("token has expired")

// ErrQueryToken answers an HTTP API request that carries its token only in
// the query string: proxies log URLs, so the APIs take the header alone.
var ErrQueryToken = errors.New("the HTTP APIs take the token in an Authorization: Bearer header (the token query parameter is for /ws only)")

// VerifyAPIRequest is VerifyRequest for an HTTP API request, which takes
// its token from the Authorization header only (see ErrQueryToken): a token past
// its exp is refused, without the clock leeway. (The WebSocket handshake
// keeps the leeway only to close such a connection with 1008 rather than
// refuse it; an API request acts at once, so nothing is changed after exp.)
func (v *Verifier) VerifyAPIRequest(r *http.Request) (Identity, error) {
	tok := BearerToken(r)
	if tok == "" && r.URL.Query().Has("token") {
		return Identity{}, ErrQueryToken
	}
	id, err := v.Verify(tok)
	if err == nil && !id.Expires.IsZero() && !time.Now().Before(id.Expires) {
		return Identity{}, ErrExpired
	}
	return id, err
}

// BearerToken returns the token of a request's "Authorization: Bearer"
// header, or "".
func BearerToken(r *http.Request) string {
	if h := r.Header.Get("Authorization"); h != "" {
		if scheme, tok, ok := strings.Cut(h, " "); ok && strings.EqualFold(scheme, "bearer") {
			return strings.TrimSpace(tok)
		}
	}
	return ""
}

// TokenFromRequest returns the token of a request, looked up in this order:
// "Authorization: Bearer <jwt>", the "token" query parameter, and a
// "bearer.<jwt>" entry of Sec-WebSocket-Protocol.
func TokenFromRequest(r *http.Request) string {
	if t := BearerToken(r); t != "" {
		return t
	}
	if t := r.URL.Query().Get("token"); t != "" {
		return t
	}
	for _, h := range r.Header.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(h, ",") {
			if p = strings.TrimSpace(p); strings.HasPrefix(p, SubprotocolPrefix) {
				return strings.TrimPrefix(p, SubprotocolPrefix)
			}
		}
	}
	return ""
}

// Minter signs tokens. Use NewHS256Minter or NewRS256Minter.
type Minter struct {
	method jwt.SigningMethod
	key    any
	issuer string
}

// NewHS256Minter returns a minter for an HS256 secret.
func NewHS256Minter(secret, issuer string) *Minter {
	return &Minter{method: jwt.SigningMethodHS256, key: []byte(secret), issuer: issuer}
}

// NewRS256Minter returns a minter for an RSA private key.
func NewRS256Minter(key *rsa.PrivateKey, issuer string) *Minter {
	return &Minter{method: jwt.SigningMethodRS256, key: key, issuer: issuer}
}

// Mint returns a token for user that expires after ttl.
func (m *Minter) Mint(user string, admin bool, ttl time.Duration) (string, error) {
	if !chatevent.ValidUsername(user) {
		return "", fmt.Errorf("username %q is not valid: want [A-Za-z0-9][A-Za-z0-9_.-]{0,63}", user)
	}
	now := time.Now()
	c := Claims{RegisteredClaims: jwt.RegisteredClaims{
		Subject:   user,
		Issuer:    m.issuer,
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
	}}
	if admin {
		c.Roles = []string{RoleAdmin}
	}
	return jwt.NewWithClaims(m.method, c).SignedString(m.key)
}

// LoadOrCreateSecret returns the HS256 secret stored in dataDir/SecretFile,
// generating a random one (mode 0600) on first use.
func LoadOrCreateSecret(dataDir string) (string, error) {
	path := filepath.Join(dataDir, SecretFile)
	if b, err := os.ReadFile(path); err == nil {
		s := strings.TrimSpace(string(b))
		if s == "" {
			return "", fmt.Errorf("jwt secret file %s is empty", path)
		}
		return s, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("read jwt secret: %w", err)
	}
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return "", fmt.Errorf("create data dir: %w", err)
	}
	buf := make([]byte, 32)
	if _, err := rand.Read(buf); err != nil {
		return "", err
	}
	s := hex.EncodeToString(buf)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) { // lost a race with another process: use its secret
		return LoadOrCreateSecret(dataDir)
	}
	if err != nil {
		return "", fmt.Errorf("create jwt secret: %w", err)
	}
	if _, err := f.WriteString(s + "\n"); err != nil {
		f.Close()
		return "", fmt.Errorf("write jwt secret: %w", err)
	}
	return s, f.Close()
}
