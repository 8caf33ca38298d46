package analytics

import (
	"context"
	"embed"
	"io/fs"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/chatsys/chat/pkg/pgutil"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// Migrate applies analytics' migrations (tracked in their own goose table,
// so they live beside history's in one database).
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	sub, _ := fs.Sub(migrationFS, "migrations")
	return pgutil.Migrate(ctx, pool, sub, "analytics_goose_version")
}

// Store replaces the rows of every date in the results' range: a date of
// the range without qualifying events ends up with no rows.
func Store(ctx context.Context, pool *pgxpool.Pool, r *Results) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		for _, table := range []string{"analytics_dau", "analytics_words"} {
			if _, err := tx.Exec(ctx, "DELETE FROM "+table+" WHERE date BETWEEN $1 AND $2", r.Range.From, r.Range.To); err != nil {
				return err
			}
		}
		var dau, words [][]any
		for _, d := range r.Days {
			dau = append(dau, []any{d.Date, d.Users})
			for _, w := range d.Words {
				words = append(words, []any{d.Date, w.Rank, w.Word, w.Count})
			}
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"analytics_dau"}, []string{"date", "users"}, pgx.CopyFromRows(dau)); err != nil {
			return err
		}
		_, err := tx.CopyFrom(ctx, pgx.Identifier{"analytics_words"}, []string{"date", "rank", "word", "count"}, pgx.CopyFromRows(words))
		return err
	})
}
