package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gorilla/websocket"
	"github.com/spf13/cobra"
)

func presenceCmd(g *globals) *cobra.Command {
	var user string
	c := &cobra.Command{
		Use:   "presence USER... | presence --room ROOM",
		Short: "Who is online (and since when), or who is in a room",
		RunE: func(cmd *cobra.Command, args []string) error {
			room, _ := cmd.Flags().GetString("room")
			path := "/v1/presence?" + url.Values{"user": args}.Encode()
			if room != "" {
				path = "/v1/rooms/" + url.PathEscape(room) + "/members"
			} else if len(args) == 0 {
				return errors.New("give one or more users, or --room")
			}
			b, err := g.get(cmd, user, path)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if room != "" {
				var m struct{ Members []string }
				json.Unmarshal(b, &m)
				fmt.Fprintf(out, "#%s: %s\n", room, strings.Join(m.Members, " "))
				return nil
			}
			var p struct {
				Users []struct {
					User        string
					Online      bool
					Connections int
					LastSeen    string `json:"last_seen"`
				}
			}
			json.Unmarshal(b, &p)
			for _, u := range p.Users {
				state := "offline"
				if u.Online {
					state = fmt.Sprintf("online (%d connections)", u.Connections)
				} else if u.LastSeen != "" {
					state = "offline, last seen " + u.LastSeen
				}
				fmt.Fprintf(out, "%s: %s\n", u.User, state)
			}
			return nil
		},
	}
	c.Flags().String("room", "", "list the members of this room instead")
	c.Flags().StringVar(&user, "user", "chatctl", "username when minting a token")
	return c
}

func dmCmd(g *globals) *cobra.Command {
	var user string
	c := &cobra.Command{
		Use:   "dm USER TEXT --user NAME",
		Short: "Send a private message and wait for the server's acknowledgement",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			tok, err := g.tokenFor(user, false)
			if err != nil {
				return err
			}
			endpoint, err := wsURL(g.server)
			if err != nil {
				return err
			}
			ws, _, err := websocket.DefaultDialer.DialContext(cmd.Context(), endpoint, http.Header{"Authorization": {"Bearer " + tok}})
			if err != nil {
				return err
			}
			defer ws.Close()
			cid := fmt.Sprintf("dm-%d", time.Now().UnixNano())
			if err := ws.WriteJSON(map[string]string{"type": "private", "target": args[0], "content": args[1], "client_id": cid}); err != nil {
				return err
			}
			ws.SetReadDeadline(time.Now().Add(30 * time.Second))
			for {
				var m map[string]any
				if err := ws.ReadJSON(&m); err != nil {
					return err
				}
				if m["client_id"] != cid {
					continue
				}
				switch m["type"] {
				case "ack":
					fmt.Fprintln(cmd.OutOrStdout(), "sent", m["id"])
					return nil
				case "error":
					return fmt.Errorf("%v: %v", m["code"], m["message"])
				}
			}
		},
	}
	c.Flags().StringVar(&user, "user", "chatctl", "sender's username when minting a token")
	return c
}
