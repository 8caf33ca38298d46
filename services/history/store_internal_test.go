package history

import (
	"context"
	"github.com/jackc/pgx/v5/pgxpool"
	"strings"
	"testing"
	"time"

	"github.com/chatsys/chat/pkg/chatevent"
	"github.com/chatsys/chat/pkg/pgutil"
	"github.com/chatsys/chat/pkg/pgutil/pgtest"
)

// A record that passed decoding but that PostgreSQL refuses (here content
// with NUL, which an older edge could have appended) becomes a dead letter;
// the rows around it, and a duplicate in the same batch, are stored as usual.
func TestWriteBatchIsolatesRecordsTheDatabaseRefuses(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pool := migratedPool(ctx, t)
	mk := func(offset int64, user, content, clientID string) row {
		ev := chatevent.Event{ID: chatevent.NewID(), Type: chatevent.TypeChat, Room: "general", Username: user,
			Content: content, ClientID: clientID, Timestamp: chatevent.FormatTime(time.Now())}
		b, _ := ev.Encode()
		return row{ev: ev, topic: "chat.rooms", partition: 3, offset: offset, key: []byte("general"), value: b}
	}
	first := mk(10, "alice", "before", "a1")
	poison := mk(11, "mallory", "bad\x00byte", "m1")
	dup := mk(12, "alice", "before again", "a1") // a retried send: same user and client_id
	last := mk(13, "bob", "after", "b1")

	for i, batch := range [][]row{
		{first, poison, last},      // the direct COPY fails on the poison row
		{first, dup, poison, last}, // the staging path fails on it too (duplicates first)
	} {
		n, refused, err := writeBatch(ctx, pool, batch, nil, nil)
		if err != nil {
			t.Fatalf("writeBatch: %v", err)
		}
		if len(refused) != 1 || refused[0].offset != 11 || !strings.Contains(refused[0].err, "22021") {
			t.Fatalf("refused = %+v, want the record at offset 11 with SQLSTATE 22021", refused)
		}
		if want := []int64{2, 0}[i]; n != want { // the second batch holds only rows already stored
			t.Fatalf("batch %d: inserted %d rows, want %d", i, n, want)
		}
	}
	var rows, dead int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM messages").Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM dead_letters WHERE log_offset = 11 AND value = $1", poison.value).Scan(&dead); err != nil {
		t.Fatal(err)
	}
	if rows != 2 || dead != 1 {
		t.Fatalf("messages = %d (want 2: first and last), dead letters with the raw record = %d (want 1)", rows, dead)
	}
	var content string
	if err := pool.QueryRow(ctx, "SELECT content FROM messages WHERE username = 'alice'").Scan(&content); err != nil || content != "before" {
		t.Fatalf("alice's row = %q, %v; want the earliest send kept", content, err)
	}
}

// Ops apply after the batch's rows; one the database refuses (an edit
// with NUL, which Decode would have refused) becomes a dead letter and the
// others still apply, in log order.
func TestApplyOpsIsolatesRefusedOps(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pool := migratedPool(ctx, t)
	now := chatevent.FormatTime(time.Now())
	msg := chatevent.Event{ID: chatevent.NewID(), Type: chatevent.TypeChat, Room: "general", Username: "alice", Content: "draft", Timestamp: now}
	b, _ := msg.Encode()
	rows := []row{{ev: msg, topic: "chat.rooms", partition: 0, offset: 1, value: b}}
	edit := func(offset int64, content string) op {
		return op{source: source{topic: "chat.rooms", partition: 0, offset: offset, value: []byte(content)},
			ev: chatevent.Event{ID: msg.ID, Type: chatevent.TypeEdit, Room: "general", Username: "alice", Content: content, Timestamp: now, EditedAt: now}}
	}
	read := op{source: source{topic: "chat.direct", partition: 2, offset: 7},
		ev: chatevent.Event{ID: chatevent.NewID(), Type: chatevent.TypeRead, Room: "general", Username: "bob", Timestamp: now, Pos: "0:1"}}
	ops := []op{edit(2, "bad\x00edit"), edit(3, "second"), edit(4, "third"), read}
	n, refused, err := writeBatch(ctx, pool, rows, ops, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 || len(refused) != 1 || refused[0].offset != 2 || !refused[0].op {
		t.Fatalf("inserted %d, refused %+v; want 1 row and the op at offset 2", n, refused)
	}
	var content string
	var reads int
	if err := pool.QueryRow(ctx, "SELECT content FROM messages WHERE id = $1 AND edited_at IS NOT NULL", msg.ID).Scan(&content); err != nil || content != "third" {
		t.Fatalf("content = %q, %v; want the last edit", content, err)
	}
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM read_state WHERE username = 'bob' AND conversation = 'room:general' AND log_offset = 1").Scan(&reads); err != nil || reads != 1 {
		t.Fatalf("read_state = %d, %v", reads, err)
	}
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM dead_letters WHERE log_offset = 2").Scan(&reads); err != nil || reads != 1 {
		t.Fatalf("dead letters = %d, %v", reads, err)
	}
}

// migratedPool opens a pool on a fresh database with history's schema.
func migratedPool(ctx context.Context, t *testing.T) *pgxpool.Pool {
	t.Helper()
	pool, err := pgutil.Open(ctx, pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	return pool
}
