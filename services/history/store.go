package history

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/chatsys/chat/pkg/chatevent"
	"github.com/chatsys/chat/pkg/pgutil"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// Migrate applies the pending migrations to the database of pool. A
// PostgreSQL session advisory lock makes concurrent processes take turns.
// Start calls it; it is exported for tools that prepare a database.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	sub, _ := fs.Sub(migrationFS, "migrations")
	return pgutil.Migrate(ctx, pool, sub, "goose_db_version")
}

// row is one message as stored.
type row struct {
	ev        chatevent.Event
	topic     string
	partition int
	offset    int64
}

// deadLetter is a record that could not be decoded.
type deadLetter struct {
	topic      string
	partition  int
	offset     int64
	key, value []byte
	err        string
}

var messageColumns = []string{"id", "type", "conversation", "room", "username", "target", "content", "client_id", "created_at", "topic", "log_partition", "log_offset"}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// writeBatch stores rows and dead letters in one transaction and returns
// the number of rows inserted. The common case is one COPY straight into
// messages. If that hits a unique violation — a redelivered event (same id)
// or a retried send (same username and client_id) — the batch is copied
// into a staging table instead and inserted with ON CONFLICT DO NOTHING,
// earliest log position first, so duplicates add no row.
func writeBatch(ctx context.Context, pool *pgxpool.Pool, rows []row, dead []deadLetter) (int64, error) {
	var inserted int64
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if len(rows) > 0 {
			n, err := copyRows(ctx, tx, rows)
			if err != nil {
				return err
			}
			inserted = n
		}
		for _, d := range dead {
			if _, err := tx.Exec(ctx, `INSERT INTO dead_letters (topic, log_partition, log_offset, key, value, error)
				VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING`, d.topic, d.partition, d.offset, d.key, d.value, d.err); err != nil {
				return fmt.Errorf("dead letter: %w", err)
			}
		}
		return nil
	})
	return inserted, err
}

func rowSource(rows []row) pgx.CopyFromSource {
	return pgx.CopyFromSlice(len(rows), func(i int) ([]any, error) {
		r := &rows[i]
		t, err := r.ev.Time()
		if err != nil {
			return nil, err
		}
		return []any{r.ev.ID, r.ev.Type, chatevent.Conversation(&r.ev), nullable(r.ev.Room), r.ev.Username,
			nullable(r.ev.Target), r.ev.Content, nullable(r.ev.ClientID), t, r.topic, r.partition, r.offset}, nil
	})
}

func copyRows(ctx context.Context, tx pgx.Tx, rows []row) (int64, error) {
	if _, err := tx.Exec(ctx, "SAVEPOINT direct_copy"); err != nil {
		return 0, err
	}
	n, err := tx.CopyFrom(ctx, pgx.Identifier{"messages"}, messageColumns, rowSource(rows))
	if err == nil {
		return n, nil
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "23505" { // unique_violation
		return 0, fmt.Errorf("copy: %w", err)
	}
	if _, err := tx.Exec(ctx, "ROLLBACK TO SAVEPOINT direct_copy"); err != nil {
		return 0, err
	}
	if _, err := tx.Exec(ctx, `CREATE TEMP TABLE IF NOT EXISTS incoming (
		id uuid, type text, conversation text, room text, username text, target text, content text,
		client_id text, created_at timestamptz, topic text, log_partition integer, log_offset bigint
		) ON COMMIT DELETE ROWS`); err != nil {
		return 0, err
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"incoming"}, messageColumns, rowSource(rows)); err != nil {
		return 0, fmt.Errorf("copy to staging: %w", err)
	}
	tag, err := tx.Exec(ctx, `INSERT INTO messages (id, type, conversation, room, username, target, content, client_id, created_at, topic, log_partition, log_offset)
		SELECT id, type, conversation, room, username, target, content, client_id, created_at, topic, log_partition, log_offset
		FROM incoming ORDER BY topic, log_partition, log_offset
		ON CONFLICT DO NOTHING`)
	if err != nil {
		return 0, fmt.Errorf("insert: %w", err)
	}
	return tag.RowsAffected(), nil
}

// page is a keyset page request on one conversation.
type page struct {
	conversation string
	before       string // id: older than this, newest first
	after        string // id: newer than this, oldest first
	limit        int
}

const selectMessage = `SELECT id::text, type, coalesce(room, ''), coalesce(target, ''), username, content,
	coalesce(client_id, ''), created_at, log_partition, log_offset FROM messages `

// Page queries pick the page's ids with an ordered (index-only) scan of
// (conversation, id), then fetch those rows by primary key. Written as one
// query, the planner may instead read every row of a large conversation and
// sort it, which makes the newest page of a busy room slow.
const (
	pageNewest = `WITH p AS (SELECT id FROM messages WHERE conversation = $1 ORDER BY id DESC LIMIT $2) ` +
		selectMessage + `WHERE id IN (SELECT id FROM p) ORDER BY id DESC`
	pageBefore = `WITH p AS (SELECT id FROM messages WHERE conversation = $1 AND id < $3 ORDER BY id DESC LIMIT $2) ` +
		selectMessage + `WHERE id IN (SELECT id FROM p) ORDER BY id DESC`
	pageAfter = `WITH p AS (SELECT id FROM messages WHERE conversation = $1 AND id > $3 ORDER BY id ASC LIMIT $2) ` +
		selectMessage + `WHERE id IN (SELECT id FROM p) ORDER BY id ASC`
)

func scanMessages(rows pgx.Rows) ([]chatevent.Event, error) {
	out := []chatevent.Event{}
	for rows.Next() {
		var e chatevent.Event
		var t time.Time
		var p chatevent.Pos
		if err := rows.Scan(&e.ID, &e.Type, &e.Room, &e.Target, &e.Username, &e.Content, &e.ClientID, &t, &p.Partition, &p.Offset); err != nil {
			return nil, err
		}
		e.Timestamp = chatevent.FormatTime(t)
		e.Pos = p.String()
		out = append(out, e)
	}
	return out, rows.Err()
}

func queryPage(ctx context.Context, pool *pgxpool.Pool, p page) ([]chatevent.Event, error) {
	var rows pgx.Rows
	var err error
	switch {
	case p.after != "":
		rows, err = pool.Query(ctx, pageAfter, p.conversation, p.limit, p.after)
	case p.before != "":
		rows, err = pool.Query(ctx, pageBefore, p.conversation, p.limit, p.before)
	default:
		rows, err = pool.Query(ctx, pageNewest, p.conversation, p.limit)
	}
	if err != nil {
		return nil, err
	}
	return scanMessages(rows)
}

// search runs a websearch-syntax full-text query over the rooms and the
// caller's own private conversations, best match first, newest first on ties.
func search(ctx context.Context, pool *pgxpool.Pool, caller, q, room string, limit int) ([]chatevent.Event, error) {
	conv := ""
	if room != "" {
		conv = "room:" + room
	}
	rows, err := pool.Query(ctx, selectMessage+`, websearch_to_tsquery('simple', $1) q
		WHERE search @@ q
		  AND (conversation LIKE 'room:%' OR username = $2 OR target = $2)
		  AND ($3 = '' OR conversation = $3)
		ORDER BY ts_rank(search, q) DESC, id DESC
		LIMIT $4`, q, caller, conv, limit)
	if err != nil {
		return nil, err
	}
	return scanMessages(rows)
}

// conversationsSince lists user's private conversations with messages
// newer than since ("" for all), newest activity first, at most 200.
func conversationsSince(ctx context.Context, pool *pgxpool.Pool, user, since string) ([]Conversation, error) {
	rows, err := pool.Query(ctx, `
		WITH news AS (
			SELECT conversation, id, count(*) OVER (PARTITION BY conversation) AS n,
			       row_number() OVER (PARTITION BY conversation ORDER BY id DESC) AS r
			FROM messages
			WHERE type = 'private' AND (username = $1 OR target = $1)
			  AND ($2 = '' OR id > $2::uuid))
		SELECT id::text, n FROM news WHERE r = 1 ORDER BY id DESC LIMIT 200`, user, since)
	if err != nil {
		return nil, err
	}
	var ids []string
	counts := map[string]int{}
	for rows.Next() {
		var id string
		var n int
		if err := rows.Scan(&id, &n); err != nil {
			return nil, err
		}
		ids = append(ids, id)
		counts[id] = n
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	out := []Conversation{}
	if len(ids) == 0 {
		return out, nil
	}
	mrows, err := pool.Query(ctx, selectMessage+`WHERE id = ANY($1::uuid[]) ORDER BY id DESC`, ids)
	if err != nil {
		return nil, err
	}
	msgs, err := scanMessages(mrows)
	if err != nil {
		return nil, err
	}
	for _, m := range msgs {
		peer := m.Target
		if peer == user {
			peer = m.Username
		}
		out = append(out, Conversation{Peer: peer, Count: counts[m.ID], Latest: m})
	}
	return out, nil
}
