package history_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/chatsys/chat/pkg/chatevent"
	"github.com/chatsys/chat/pkg/pgutil"
	"github.com/chatsys/chat/pkg/testutil"
)

// TestDatabaseOutageLosesNothing stops PostgreSQL for several seconds while
// messages keep arriving. This test runs its own server, since it must stop
// and start it (whatever TEST_DATABASE_URL names is left alone).
func TestDatabaseOutageLosesNothing(t *testing.T) {
	dir, err := os.MkdirTemp("", "pgoutage-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	t.Cleanup(func() { os.RemoveAll(dir) })
	port := testutil.FreePortNumber(t)
	pg := &pgutil.Server{Dir: dir + "/pg", Port: port}
	ctx := context.Background()
	if err := pg.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pg.Stop(ctx) })

	k := topics(t, testBroker(t))
	h := startHistory(t, k, pg.URL())
	var sent []chatevent.Event
	send := func(from, to int) {
		for i := from; i < to; i++ {
			ev := event("chat", fmt.Sprint("room", i%3), "", "alice", fmt.Sprint("m", i), fmt.Sprint("c", i))
			sent = append(sent, ev)
			produce(t, k, ev)
		}
	}
	send(0, 50)
	eventually(t, 20*time.Second, "first rows", func() bool { return count(t, pg.URL(), "SELECT count(*) FROM messages") == 50 })

	if err := pg.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	send(50, 150) // acknowledged by the log while the database is down
	eventually(t, 10*time.Second, "readiness to turn false", func() bool { return h.Ready(ctx) != nil })
	time.Sleep(3 * time.Second)
	if err := pg.Start(ctx); err != nil {
		t.Fatal(err)
	}
	send(150, 200)
	eventually(t, 30*time.Second, "all 200 rows after the database returned", func() bool {
		return count(t, pg.URL(), "SELECT count(*) FROM messages") == 200
	})
	if n := count(t, pg.URL(), "SELECT count(DISTINCT id) FROM messages"); n != 200 {
		t.Fatalf("distinct ids = %d, want 200 (none twice)", n)
	}
	eventually(t, 10*time.Second, "readiness back", func() bool { return h.Ready(ctx) == nil })
}
