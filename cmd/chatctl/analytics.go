package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/chatsys/chat/pkg/analyticsapi"
)

func analyticsCmd(g *globals) *cobra.Command {
	var from, to, out, as string
	c := &cobra.Command{
		Use:   "analytics [--from DATE] [--to DATE] [--out DIR]",
		Short: "Run analytics on the server now (admin): daily active users and top words per UTC date",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			b, err := g.adminPost(cmd, as, "/v1/admin/analytics", map[string]string{"from": from, "to": to})
			if err != nil {
				return fmt.Errorf("analytics: %w", err)
			}
			var r struct {
				From, To string
				Events   int64
				Days     []analyticsapi.DayResult
				Note     string
			}
			if err := json.Unmarshal(b, &r); err != nil {
				return err
			}
			res := &analyticsapi.Results{Range: analyticsapi.Range{From: r.From, To: r.To}, Events: r.Events, Days: r.Days, Note: r.Note}
			analyticsapi.Summary(cmd.OutOrStdout(), res)
			if out != "" {
				if err := os.MkdirAll(out, 0o755); err != nil {
					return err
				}
				dau, words := res.CSV()
				if err := os.WriteFile(filepath.Join(out, "dau.csv"), dau, 0o644); err != nil {
					return err
				}
				return os.WriteFile(filepath.Join(out, "words.csv"), words, 0o644)
			}
			return nil
		},
	}
	c.Flags().StringVar(&from, "from", "", "first UTC date, YYYY-MM-DD (default: yesterday)")
	c.Flags().StringVar(&to, "to", "", "last UTC date, inclusive (default: --from)")
	c.Flags().StringVar(&out, "out", "", "also write dau.csv and words.csv to this directory")
	c.Flags().StringVar(&as, "as", "admin", "admin username when minting a token")
	return c
}
