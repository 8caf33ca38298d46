package testutil

import (
	"net"
	"testing"
	"time"
)

func TestEventuallyAndFreePort(t *testing.T) {
	n := 0
	Eventually(t, time.Second, "three calls", func() bool { n++; return n == 3 })
	addr := FreePort(t)
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("FreePort gave %s, not free: %v", addr, err)
	}
	l.Close()
	if Token(t, "0123456789abcdef", "alice", false) == "" {
		t.Fatal("empty token")
	}
}
