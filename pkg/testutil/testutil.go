// Package testutil holds the helpers the tests of every package share:
// waiting on a condition with a deadline, a free loopback port, a token.
// Only tests import it.
package testutil

import (
	"bytes"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/chatsys/chat/pkg/auth"
)

// Eventually polls cond every 25ms until it holds, failing the test with
// what if d passes first.
func Eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// FreePort returns a loopback address whose port was free a moment ago,
// for a server a test starts later (see FreePortNumber).
func FreePort(t testing.TB) string {
	t.Helper()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePortNumber(t)))
}

// FreePortNumber returns a loopback port that was free a moment ago. It
// picks from 20000-31999, below Linux's default ephemeral range
// (32768-60999): a port from ":0" is in that range, where any outgoing
// connection or other ":0" listener of a busy test run can take it before
// the server binds (a process starting, PostgreSQL after its initdb).
func FreePortNumber(t testing.TB) int {
	t.Helper()
	for range 100 {
		port := 20000 + rand.IntN(12000)
		if l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port)); err == nil {
			l.Close()
			return port
		}
	}
	t.Fatal("no free port in 20000-31999")
	return 0
}

// Token mints an HS256 token for user with secret, valid for an hour.
func Token(t testing.TB, secret, user string, admin bool) string {
	t.Helper()
	tok, err := auth.NewHS256Minter(secret, "").Mint(user, admin, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// SyncBuffer is a log destination a test reads while a process or
// goroutine writes to it.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
