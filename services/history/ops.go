package history

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/chatsys/chat/pkg/chatevent"
)

// source is where a record came from, for a dead letter.
type source struct {
	topic      string
	partition  int
	offset     int64
	key, value []byte
	at         time.Time // the record's log time
}

func (s source) dead(err string) deadLetter {
	return deadLetter{topic: s.topic, partition: s.partition, offset: s.offset, key: s.key, value: s.value, err: err}
}

// op is a record applied to the tables rather than inserted as a message:
// an edit, delete or read event (ev), or a chat.acl record (acl).
type op struct {
	source
	ev  chatevent.Event
	acl *chatevent.ACLRecord
}

// statement returns the op's SQL and arguments.
func (o *op) statement() (string, []any) {
	if r := o.acl; r != nil {
		at := o.at
		if t, err := time.Parse(time.RFC3339Nano, r.Timestamp); err == nil {
			at = t
		}
		if at.IsZero() {
			at = time.Now()
		}
		switch r.Type {
		case chatevent.ACLRoom:
			// The first room record in the log wins, as in chatevent.ACL.
			return `INSERT INTO rooms (room, private, owner, created_at) VALUES ($1, $2, $3, $4)
				ON CONFLICT (room) DO NOTHING`, []any{r.Room, r.Private, r.Username, at}
		case chatevent.ACLMember:
			if r.Role == "" && !r.Muted && !r.Banned {
				return `DELETE FROM room_members WHERE room = $1 AND username = $2`, []any{r.Room, r.Username}
			}
			return `INSERT INTO room_members (room, username, role, muted, banned) VALUES ($1, $2, $3, $4, $5)
				ON CONFLICT (room, username) DO UPDATE SET role = EXCLUDED.role, muted = EXCLUDED.muted, banned = EXCLUDED.banned`,
				[]any{r.Room, r.Username, r.Role, r.Muted, r.Banned}
		default: // ACLBlock (DecodeACL admits no other type)
			if !r.Blocked {
				return `DELETE FROM blocks WHERE username = $1 AND blocked = $2`, []any{r.Username, r.Target}
			}
			return `INSERT INTO blocks (username, blocked) VALUES ($1, $2) ON CONFLICT DO NOTHING`, []any{r.Username, r.Target}
		}
	}
	e := &o.ev
	conv := chatevent.Conversation(e)
	switch e.Type {
	case chatevent.TypeEdit:
		// Only the author's edit of a message of the same conversation
		// that is not deleted; edits apply in log order, so the last wins.
		editedAt, _ := time.Parse(time.RFC3339Nano, e.EditedAt) // validated by Decode
		return `UPDATE messages SET content = $2, edited_at = $3
			WHERE id = $1 AND conversation = $4 AND username = $5 AND NOT deleted AND type IN ('chat', 'private')`,
			[]any{e.ID, e.Content, editedAt, conv, e.Username}
	case chatevent.TypeDelete:
		return `UPDATE messages SET deleted = true, content = ''
			WHERE id = $1 AND conversation = $2 AND type IN ('chat', 'private')`, []any{e.ID, conv}
	default: // TypeRead: kept only when it moves forward
		p, _ := chatevent.ParsePos(e.Pos) // validated by Decode
		at, _ := e.Time()
		return `INSERT INTO read_state (username, conversation, log_partition, log_offset, updated_at)
			VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (username, conversation) DO UPDATE
			SET log_partition = EXCLUDED.log_partition, log_offset = EXCLUDED.log_offset, updated_at = EXCLUDED.updated_at
			WHERE read_state.log_partition <> EXCLUDED.log_partition OR read_state.log_offset < EXCLUDED.log_offset`,
			[]any{e.Username, conv, p.Partition, p.Offset, at}
	}
}

// applyOps applies ops in order. The common case is one pipelined batch;
// if the database refuses one op for its own data, they are applied again
// one at a time, each under a savepoint, and each refused op is returned as
// a dead letter. Any other error fails the transaction (to be retried).
func applyOps(ctx context.Context, tx pgx.Tx, ops []op) ([]deadLetter, error) {
	if _, err := tx.Exec(ctx, "SAVEPOINT ops"); err != nil {
		return nil, err
	}
	b := &pgx.Batch{}
	for i := range ops {
		sql, args := ops[i].statement()
		b.Queue(sql, args...)
	}
	err := tx.SendBatch(ctx, b).Close()
	if err == nil {
		_, err = tx.Exec(ctx, "RELEASE SAVEPOINT ops")
		return nil, err
	}
	if !perRecord(err) {
		return nil, fmt.Errorf("apply: %w", err)
	}
	if _, err := tx.Exec(ctx, "ROLLBACK TO SAVEPOINT ops"); err != nil {
		return nil, err
	}
	var refused []deadLetter
	for i := range ops {
		if _, err := tx.Exec(ctx, "SAVEPOINT one_op"); err != nil {
			return nil, err
		}
		sql, args := ops[i].statement()
		if _, err := tx.Exec(ctx, sql, args...); err != nil {
			if !perRecord(err) {
				return nil, fmt.Errorf("apply: %w", err)
			}
			if _, rerr := tx.Exec(ctx, "ROLLBACK TO SAVEPOINT one_op"); rerr != nil {
				return nil, rerr
			}
			d := ops[i].dead("refused by the database: " + err.Error())
			d.op = true
			refused = append(refused, d)
			continue
		}
		if _, err := tx.Exec(ctx, "RELEASE SAVEPOINT one_op"); err != nil {
			return nil, err
		}
	}
	return refused, nil
}
