package edge_test

import (
	"context"
	"encoding/base64"
	"net"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

type netConn = net.Conn

func bearer(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }

func mintWith(t testing.TB, secret, user string, ttl time.Duration, alg string) string {
	t.Helper()
	c := jwt.RegisteredClaims{Subject: user, ExpiresAt: jwt.NewNumericDate(time.Now().Add(ttl))}
	s, err := jwt.NewWithClaims(jwt.GetSigningMethod(alg), c).SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mintNoExp(t testing.TB, user string) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{Subject: user}).SignedString([]byte(testSecret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// noneToken builds an unsigned token by hand, as an attacker would.
func noneToken(user string) string {
	enc := base64.RawURLEncoding.EncodeToString
	exp := time.Now().Add(time.Hour).Unix()
	return enc([]byte(`{"alg":"none","typ":"JWT"}`)) + "." +
		enc([]byte(`{"sub":"`+user+`","exp":`+itoa(exp)+`}`)) + "."
}

func itoa(n int64) string {
	b := []byte{}
	for n > 0 {
		b = append([]byte{byte('0' + n%10)}, b...)
		n /= 10
	}
	return string(b)
}

// dialSmallBuffer dials with a 4 KiB receive buffer so a client that never
// reads fills up quickly.
func dialSmallBuffer(ctx context.Context, network, addr string) (net.Conn, error) {
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		return serr
	}}
	return d.DialContext(ctx, network, addr)
}
