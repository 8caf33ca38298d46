package history

import (
	"cmp"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
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

// row is one message as stored, with its raw record for a dead letter.
type row struct {
	ev         chatevent.Event
	topic      string
	partition  int
	offset     int64
	key, value []byte
}

// deadLetter is a record that could not be decoded or stored.
type deadLetter struct {
	topic      string
	partition  int
	offset     int64
	key, value []byte
	err        string
	op         bool // an operation (edit, delete, read, acl record), not a message row
}

var messageColumns = []string{"id", "type", "conversation", "room", "username", "target", "content", "client_id", "created_at", "topic", "log_partition", "log_offset"}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// writeBatch stores rows and dead letters in one transaction and returns
// the number of rows inserted and the rows the database refused for a
// reason of their own (moved to dead_letters in the same transaction).
//
// The common case is one COPY straight into messages. If that hits a unique
// violation (a redelivered event, same id, or a retried send, same username
// and client_id) the batch is copied into a staging table instead and
// inserted with ON CONFLICT DO NOTHING, earliest log position first, so
// duplicates add no row. If either COPY fails because of one record's data
// (say text PostgreSQL cannot store), the rows are inserted one at a time,
// each under its own savepoint, and each refused row becomes a dead letter:
// no single record can stall its partition. Any other error (the database
// is away, the transaction failed) fails the whole batch, to be retried.
//
// Then ops (edits, deletes, read positions and chat.acl records) are applied
// in log order, after every row of the batch is in (an edit of a message
// of the same batch finds its row); an op the database refuses for its own
// data becomes a dead letter the same way.
func writeBatch(ctx context.Context, pool *pgxpool.Pool, rows []row, ops []op, dead []deadLetter) (inserted int64, refused []deadLetter, err error) {
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		inserted, refused = 0, nil
		if len(rows) > 0 {
			n, bad, err := copyRows(ctx, tx, rows)
			if err != nil {
				return err
			}
			inserted, refused = n, bad
		}
		if len(ops) > 0 {
			bad, err := applyOps(ctx, tx, ops)
			if err != nil {
				return err
			}
			refused = append(refused, bad...)
		}
		for _, d := range append(dead[:len(dead):len(dead)], refused...) {
			if _, err := tx.Exec(ctx, `INSERT INTO dead_letters (topic, log_partition, log_offset, key, value, error)
				VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING`, d.topic, d.partition, d.offset, d.key, d.value, d.err); err != nil {
				return fmt.Errorf("dead letter: %w", err)
			}
		}
		return nil
	})
	return inserted, refused, err
}

func rowValues(r *row) ([]any, error) {
	t, err := r.ev.Time()
	if err != nil {
		return nil, err
	}
	// The id as a pgtype.UUID: a string has no binary encode plan for a
	// uuid column, so pgx would fail (building an error) and fall back to
	// parsing it as text, on every row.
	id, err := uuid.Parse(r.ev.ID)
	if err != nil {
		return nil, err
	}
	return []any{pgtype.UUID{Bytes: id, Valid: true}, r.ev.Type, chatevent.Conversation(&r.ev), nullable(r.ev.Room), r.ev.Username,
		nullable(r.ev.Target), r.ev.Content, nullable(r.ev.ClientID), t, r.topic, r.partition, r.offset}, nil
}

func rowSource(rows []row) pgx.CopyFromSource {
	return pgx.CopyFromSlice(len(rows), func(i int) ([]any, error) { return rowValues(&rows[i]) })
}

// pgCode returns the SQLSTATE of err, or "" when it is not a PostgreSQL error.
func pgCode(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

// perRecord reports whether a PostgreSQL error is caused by one record's
// data rather than by the database or the connection: data exceptions
// (class 22: bad encoding, value out of range), integrity violations
// (class 23) and program limits (class 54: a value too large to index).
func perRecord(err error) bool {
	code := pgCode(err)
	return len(code) == 5 && (code[:2] == "22" || code[:2] == "23" || code[:2] == "54")
}

const uniqueViolation = "23505"

func copyRows(ctx context.Context, tx pgx.Tx, rows []row) (int64, []deadLetter, error) {
	if _, err := tx.Exec(ctx, "SAVEPOINT direct_copy"); err != nil {
		return 0, nil, err
	}
	n, err := tx.CopyFrom(ctx, pgx.Identifier{"messages"}, messageColumns, rowSource(rows))
	if err == nil {
		return n, nil, nil
	}
	if !perRecord(err) {
		return 0, nil, fmt.Errorf("copy: %w", err)
	}
	if _, err := tx.Exec(ctx, "ROLLBACK TO SAVEPOINT direct_copy"); err != nil {
		return 0, nil, err
	}
	if pgCode(err) == uniqueViolation {
		n, err := copyViaStaging(ctx, tx, rows)
		if err == nil {
			return n, nil, nil
		}
		if !perRecord(err) {
			return 0, nil, err
		}
		if _, err := tx.Exec(ctx, "ROLLBACK TO SAVEPOINT direct_copy"); err != nil {
			return 0, nil, err
		}
	}
	return insertEach(ctx, tx, rows)
}

// copyViaStaging copies rows into a temporary table and inserts them from
// there, skipping duplicates, earliest log position first.
func copyViaStaging(ctx context.Context, tx pgx.Tx, rows []row) (int64, error) {
	if _, err := tx.Exec(ctx, `CREATE TEMP TABLE IF NOT EXISTS incoming (
		id uuid, type text, conversation text, room text, username text, target text, content text,
		client_id text, created_at timestamptz, topic text, log_partition integer, log_offset bigint
		) ON COMMIT DELETE ROWS`); err != nil {
		return 0, err
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"incoming"}, messageColumns, rowSource(rows)); err != nil {
		return 0, fmt.Errorf("copy to staging: %w", err)
	}
	tag, err := tx.Exec(ctx, insertMessage+`
		SELECT id, type, conversation, room, username, target, content, client_id, created_at, topic, log_partition, log_offset
		FROM incoming ORDER BY topic, log_partition, log_offset
		ON CONFLICT DO NOTHING`)
	if err != nil {
		return 0, fmt.Errorf("insert: %w", err)
	}
	return tag.RowsAffected(), nil
}

const insertMessage = `INSERT INTO messages (id, type, conversation, room, username, target, content, client_id, created_at, topic, log_partition, log_offset)`

// insertEach inserts rows one at a time, earliest log position first, each
// under a savepoint. A row refused for its own data is returned as a dead
// letter; any other error ends the batch.
func insertEach(ctx context.Context, tx pgx.Tx, rows []row) (int64, []deadLetter, error) {
	ordered := make([]*row, len(rows))
	for i := range rows {
		ordered[i] = &rows[i]
	}
	slices.SortStableFunc(ordered, func(a, b *row) int {
		return cmp.Or(cmp.Compare(a.topic, b.topic), cmp.Compare(a.partition, b.partition), cmp.Compare(a.offset, b.offset))
	})
	var inserted int64
	var refused []deadLetter
	for _, r := range ordered {
		vals, err := rowValues(r)
		if err == nil {
			if _, err = tx.Exec(ctx, "SAVEPOINT one_row"); err != nil {
				return 0, nil, err
			}
			var tag pgconn.CommandTag
			tag, err = tx.Exec(ctx, insertMessage+` VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT DO NOTHING`, vals...)
			if err == nil {
				inserted += tag.RowsAffected()
				// Released at once, so savepoints do not nest row after row.
				if _, err := tx.Exec(ctx, "RELEASE SAVEPOINT one_row"); err != nil {
					return 0, nil, err
				}
				continue
			}
			if !perRecord(err) {
				return 0, nil, fmt.Errorf("insert: %w", err)
			}
			if _, rerr := tx.Exec(ctx, "ROLLBACK TO SAVEPOINT one_row"); rerr != nil {
				return 0, nil, rerr
			}
		}
		refused = append(refused, deadLetter{topic: r.topic, partition: r.partition, offset: r.offset, key: r.key, value: r.value, err: "refused by the database: " + err.Error()})
	}
	return inserted, refused, nil
}

// page is a keyset page request on one conversation.
type page struct {
	conversation string
	before       string // id: older than this, newest first
	after        string // id: newer than this, oldest first
	limit        int
}

const selectMessage = `SELECT id::text, type, coalesce(room, ''), coalesce(target, ''), username, content,
	coalesce(client_id, ''), created_at, log_partition, log_offset, edited_at, deleted FROM messages `

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

// Message is a stored message as the API serves it: an event with its log
// position, edited_at once edited; a deleted one is a tombstone (see
// MarshalJSON).
type Message struct {
	ID        string `json:"id"`
	Type      string `json:"type"`
	Room      string `json:"room,omitempty"`
	Target    string `json:"target,omitempty"`
	Username  string `json:"username"`
	Content   string `json:"content,omitempty"`
	Timestamp string `json:"timestamp"`
	ClientID  string `json:"client_id,omitempty"`
	EditedAt  string `json:"edited_at,omitempty"`
	Deleted   bool   `json:"deleted,omitempty"`
	Pos       string `json:"pos"`
}

// MarshalJSON encodes a deleted message as a tombstone: id, type, room or
// target, timestamp, pos and "deleted": true; no content, author or
// client_id.
func (m Message) MarshalJSON() ([]byte, error) {
	type plain Message
	if !m.Deleted {
		return json.Marshal(plain(m))
	}
	return json.Marshal(struct {
		ID        string `json:"id"`
		Type      string `json:"type"`
		Room      string `json:"room,omitempty"`
		Target    string `json:"target,omitempty"`
		Timestamp string `json:"timestamp"`
		Deleted   bool   `json:"deleted"`
		Pos       string `json:"pos"`
	}{m.ID, m.Type, m.Room, m.Target, m.Timestamp, true, m.Pos})
}

func scanMessages(rows pgx.Rows) ([]Message, error) {
	out := []Message{}
	for rows.Next() {
		var e Message
		var t time.Time
		var edited *time.Time
		var p chatevent.Pos
		if err := rows.Scan(&e.ID, &e.Type, &e.Room, &e.Target, &e.Username, &e.Content, &e.ClientID, &t, &p.Partition, &p.Offset, &edited, &e.Deleted); err != nil {
			return nil, err
		}
		e.Timestamp = chatevent.FormatTime(t)
		if edited != nil {
			e.EditedAt = chatevent.FormatTime(*edited)
		}
		e.Pos = p.String()
		out = append(out, e)
	}
	return out, rows.Err()
}

func queryPage(ctx context.Context, pool *pgxpool.Pool, p page) ([]Message, error) {
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

// search runs a websearch-syntax full-text query over the rooms (but the
// hidden ones) and the caller's own private conversations, best match
// first, newest first on ties. Deleted messages never match. The hidden
// rooms are a NOT IN over a subquery, which PostgreSQL hashes once, so a
// long list costs one lookup per candidate row (<> ALL(array) would scan
// the whole array for each).
func search(ctx context.Context, pool *pgxpool.Pool, caller, q, room string, hidden []string, limit int) ([]Message, error) {
	conv := ""
	if room != "" {
		conv = "room:" + room
	}
	rows, err := pool.Query(ctx, selectMessage+`, websearch_to_tsquery('simple', $1) q
		WHERE search @@ q AND NOT deleted
		  AND (conversation LIKE 'room:%' OR username = $2 OR target = $2)
		  AND ($3 = '' OR conversation = $3)
		  AND (room IS NULL OR room NOT IN (SELECT unnest($5::text[])))
		ORDER BY ts_rank(search, q) DESC, id DESC
		LIMIT $4`, q, caller, conv, limit, hidden)
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
