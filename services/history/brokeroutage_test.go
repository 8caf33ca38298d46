package history_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/chatsys/chat/pkg/embedkafka"
	"github.com/chatsys/chat/pkg/pgutil/pgtest"
	"github.com/chatsys/chat/pkg/testutil"
)

// TestBrokerOutageHistoryKeepsRunning stops the broker for a few seconds:
// the writer must wait for it (not end), and store what is appended after
// it returns.
func TestBrokerOutageHistoryKeepsRunning(t *testing.T) {
	addr := testutil.FreePort(t)
	b := embedkafka.New(embedkafka.Config{Addr: addr, DataDir: t.TempDir()}, nil)
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Stop(context.Background()) })

	k := topics(t, b.Addr())
	db := pgtest.NewDatabase(t)
	h := startHistory(t, k, db)
	produce(t, k, event("chat", "general", "", "alice", "before", "c0"))
	eventually(t, 20*time.Second, "the first row", func() bool { return count(t, db, "SELECT count(*) FROM messages") == 1 })

	if err := b.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(4 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		select {
		case err := <-h.done:
			h.done <- nil // for the cleanup's stop
			t.Fatalf("history Run ended during the broker outage: %v", err)
		default:
		}
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	for i := 1; i <= 5; i++ {
		produce(t, k, event("chat", fmt.Sprint("room", i), "", "bob", fmt.Sprint("after ", i), fmt.Sprint("c", i)))
	}
	eventually(t, 30*time.Second, "the rows appended after the broker returned", func() bool {
		return count(t, db, "SELECT count(*) FROM messages") == 6
	})
	t.Logf("rows appended after the broker returned were stored %v after its return", time.Since(back).Round(10*time.Millisecond))
}
