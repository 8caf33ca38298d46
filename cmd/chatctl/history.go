package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"strconv"

	"github.com/spf13/cobra"
)

type storedMessage struct {
	ID        string `json:"id"`
	Type      string `json:"type"`
	Room      string `json:"room"`
	Target    string `json:"target"`
	Username  string `json:"username"`
	Content   string `json:"content"`
	Timestamp string `json:"timestamp"`
	Pos       string `json:"pos"`
	EditedAt  string `json:"edited_at"`
	Deleted   bool   `json:"deleted"`
}

// messages calls a history endpoint and decodes {"messages":[…]}.
func (g *globals) messages(cmd *cobra.Command, user, path string, q url.Values) ([]storedMessage, error) {
	b, err := g.get(cmd, user, path+"?"+q.Encode())
	if err != nil { // not_found included: no such room, or a private one you may not see
		return nil, err
	}
	var body struct {
		Messages []storedMessage `json:"messages"`
	}
	if err := json.Unmarshal(b, &body); err != nil {
		return nil, err
	}
	return body.Messages, nil
}

func printMessages(w io.Writer, msgs []storedMessage, withRoom bool) {
	for _, m := range msgs {
		where := ""
		if withRoom {
			where = "#" + m.Room + " "
			if m.Type == "private" {
				where = "@" + m.Target + " "
			}
		}
		if m.Deleted {
			fmt.Fprintf(w, "%s %s %s(deleted)\n", m.Timestamp, m.ID, where)
			continue
		}
		edited := ""
		if m.EditedAt != "" {
			edited = " (edited)"
		}
		fmt.Fprintf(w, "%s %s %s<%s> %s%s\n", m.Timestamp, m.ID, where, m.Username, m.Content, edited)
	}
}

func historyCmd(g *globals) *cobra.Command {
	var limit int
	var before, user string
	c := &cobra.Command{
		Use:   "history ROOM [--limit N] [--before ID]",
		Short: "Print a room's messages, oldest first (the newest page, or the page before ID)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			q := url.Values{"limit": {strconv.Itoa(limit)}}
			if before != "" {
				q.Set("before", before)
			}
			msgs, err := g.messages(cmd, user, "/v1/rooms/"+url.PathEscape(args[0])+"/messages", q)
			if err != nil {
				return err
			}
			for i, j := 0, len(msgs)-1; i < j; i, j = i+1, j-1 { // oldest first reads naturally
				msgs[i], msgs[j] = msgs[j], msgs[i]
			}
			printMessages(cmd.OutOrStdout(), msgs, false)
			return nil
		},
	}
	c.Flags().IntVar(&limit, "limit", 50, "messages (1..200)")
	c.Flags().StringVar(&before, "before", "", "message id: print the page older than it")
	c.Flags().StringVar(&user, "user", "chatctl", "username when minting a token")
	return c
}

func searchCmd(g *globals) *cobra.Command {
	var limit int
	var room, user string
	c := &cobra.Command{
		Use:   "search QUERY [--room R] [--limit N]",
		Short: "Full-text search (web search syntax: \"phrase\", -word, or), best match first",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			q := url.Values{"q": {args[0]}, "limit": {strconv.Itoa(limit)}}
			if room != "" {
				q.Set("room", room)
			}
			msgs, err := g.messages(cmd, user, "/v1/search", q)
			if err != nil {
				return err
			}
			printMessages(cmd.OutOrStdout(), msgs, true)
			return nil
		},
	}
	c.Flags().IntVar(&limit, "limit", 20, "results (1..200)")
	c.Flags().StringVar(&room, "room", "", "only this room")
	c.Flags().StringVar(&user, "user", "chatctl", "username when minting a token (its private messages are searched too)")
	return c
}
