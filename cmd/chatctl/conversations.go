package main

// Conversation management (docs/conversations.md): rooms, memberships,
// blocks, unread counts, edits and deletes, through history's HTTP API.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"

	"github.com/spf13/cobra"

	"github.com/chatsys/chat/pkg/chatevent"
)

// asUser is the identity flags of a command calling the API: --user (the
// username of a minted token) and, when admin is not nil, --admin.
type asUser struct {
	user  string
	admin bool
}

func (a *asUser) flags(c *cobra.Command, withAdmin bool) {
	c.Flags().StringVar(&a.user, "user", "chatctl", "username when minting a token")
	if withAdmin {
		c.Flags().BoolVar(&a.admin, "admin", false, "mint an admin token (admins manage every room)")
	}
}

// call sends method path with body (JSON, when not nil) as a, and decodes
// a 2xx answer into out (when not nil).
func (g *globals) call(cmd *cobra.Command, a *asUser, method, path string, body, out any) error {
	tok, err := g.tokenFor(a.user, a.admin)
	if err != nil {
		return err
	}
	b, err := g.request(cmd.Context(), method, path, tok, body)
	if err != nil {
		return err
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s %s: the answer is not what was expected: %v", method, path, err)
	}
	return nil
}

func checkRoom(room string) error {
	if !chatevent.ValidRoom(room) {
		return fmt.Errorf("%q is not a valid room name", room)
	}
	return nil
}

func checkUser(user string) error {
	if !chatevent.ValidUsername(user) {
		return fmt.Errorf("%q is not a valid username", user)
	}
	return nil
}

func roomPath(room string) string { return "/v1/rooms/" + url.PathEscape(room) }

type roomInfo struct {
	Room    string       `json:"room"`
	Private bool         `json:"private"`
	Owner   string       `json:"owner"`
	Role    string       `json:"role"`
	Members []memberInfo `json:"members"`
}

type memberInfo struct {
	Username string `json:"username"`
	Role     string `json:"role"`
	Muted    bool   `json:"muted"`
	Banned   bool   `json:"banned"`
}

// standing describes a membership: "owner", "member, muted", "banned", …
func standing(role string, muted, banned bool) string {
	var parts []string
	if role != "" {
		parts = append(parts, role)
	} else if !banned {
		parts = append(parts, "not a member")
	}
	if muted {
		parts = append(parts, "muted")
	}
	if banned {
		parts = append(parts, "banned")
	}
	return strings.Join(parts, ", ")
}

func visibility(private bool) string {
	if private {
		return "private"
	}
	return "public"
}

func printRoom(w io.Writer, r roomInfo) {
	fmt.Fprintf(w, "#%s %s, owner %s", r.Room, visibility(r.Private), r.Owner)
	if r.Role != "" {
		fmt.Fprintf(w, ", your role %s", r.Role)
	}
	fmt.Fprintln(w)
}

func roomCmd(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "room create|show|list|invite|remove|mod|unmod|mute|unmute|ban|unban …",
		Short: "Create rooms (public or private), list them and manage their members",
		Long: `Create rooms (public or private), list them and manage their members.

A private room can be joined, read, searched and listed only by its members
(and admins). Its owner and moderators invite, remove, mute and ban users;
only the owner makes moderators. Admins (--admin) manage every room, also
public rooms without an owner.`,
		// An unknown action is an error (cobra only says so for the root
		// command; here it would print the help and exit 0).
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	c.AddCommand(roomCreateCmd(g), roomShowCmd(g), roomListCmd(g))
	for _, action := range chatevent.MemberActions {
		c.AddCommand(roomActionCmd(g, action))
	}
	return c
}

func roomCreateCmd(g *globals) *cobra.Command {
	var a asUser
	var private bool
	c := &cobra.Command{
		Use:   "create NAME [--private]",
		Short: "Create a room owned by you (public unless --private)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkRoom(args[0]); err != nil {
				return err
			}
			var r roomInfo
			if err := g.call(cmd, &a, "POST", roomPath(args[0]), map[string]bool{"private": private}, &r); err != nil {
				return err
			}
			fmt.Fprint(cmd.OutOrStdout(), "created ")
			printRoom(cmd.OutOrStdout(), r)
			return nil
		},
	}
	c.Flags().BoolVar(&private, "private", false, "only members may join, read, search or list it")
	a.flags(c, false)
	return c
}

func roomShowCmd(g *globals) *cobra.Command {
	var a asUser
	c := &cobra.Command{
		Use:   "show NAME",
		Short: "Print a room's owner, visibility, your role and its members",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkRoom(args[0]); err != nil {
				return err
			}
			var r roomInfo
			if err := g.call(cmd, &a, "GET", roomPath(args[0]), nil, &r); err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			printRoom(w, r)
			for _, m := range r.Members {
				fmt.Fprintf(w, "  %s: %s\n", m.Username, standing(m.Role, m.Muted, m.Banned))
			}
			return nil
		},
	}
	a.flags(c, true)
	return c
}

func roomListCmd(g *globals) *cobra.Command {
	var a asUser
	c := &cobra.Command{
		Use:   "list",
		Short: "List the rooms with an owner that you may read (private ones only as a member)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var res struct {
				Rooms []roomInfo `json:"rooms"`
			}
			if err := g.call(cmd, &a, "GET", "/v1/rooms", nil, &res); err != nil {
				return err
			}
			for _, r := range res.Rooms {
				printRoom(cmd.OutOrStdout(), r)
			}
			return nil
		},
	}
	a.flags(c, true)
	return c
}

var actionHelp = map[string]string{
	chatevent.ActionInvite: "Make USER a member of room NAME (lifts a ban)",
	chatevent.ActionRemove: "Take USER's membership of room NAME (yourself: leave it for good)",
	chatevent.ActionMod:    "Make USER a moderator of room NAME (owner only)",
	chatevent.ActionUnmod:  "Make moderator USER a plain member of room NAME (owner only)",
	chatevent.ActionMute:   "Let USER read room NAME but not write to it",
	chatevent.ActionUnmute: "Let muted USER write to room NAME again",
	chatevent.ActionBan:    "Remove USER from room NAME and keep them out (public rooms too)",
	chatevent.ActionUnban:  "Let banned USER join room NAME again",
}

func roomActionCmd(g *globals, action string) *cobra.Command {
	var a asUser
	c := &cobra.Command{
		Use:   action + " NAME USER",
		Short: actionHelp[action],
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			room, user := args[0], args[1]
			if err := checkRoom(room); err != nil {
				return err
			}
			if err := checkUser(user); err != nil {
				return err
			}
			var res struct {
				Room     string `json:"room"`
				Username string `json:"username"`
				Action   string `json:"action"`
				Role     string `json:"role"`
				Muted    bool   `json:"muted"`
				Banned   bool   `json:"banned"`
			}
			if err := g.call(cmd, &a, "POST", roomPath(room)+"/"+action, map[string]string{"username": user}, &res); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "#%s %s: %s (%s)\n", res.Room, res.Username, res.Action, standing(res.Role, res.Muted, res.Banned))
			return nil
		},
	}
	a.flags(c, true)
	return c
}

func blockCmd(g *globals, block bool) *cobra.Command {
	var a asUser
	use, short, method := "block USER", "Refuse USER's private messages and typing notices to you", "PUT"
	if !block {
		use, short, method = "unblock USER", "Accept USER's private messages again", "DELETE"
	}
	c := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkUser(args[0]); err != nil {
				return err
			}
			var res struct {
				Username string `json:"username"`
				Blocked  bool   `json:"blocked"`
			}
			if err := g.call(cmd, &a, method, "/v1/blocks/"+url.PathEscape(args[0]), nil, &res); err != nil {
				return err
			}
			state := "unblocked"
			if res.Blocked {
				state = "blocked"
			}
			fmt.Fprintln(cmd.OutOrStdout(), state, res.Username)
			return nil
		},
	}
	a.flags(c, false)
	return c
}

func blocksCmd(g *globals) *cobra.Command {
	var a asUser
	c := &cobra.Command{
		Use:   "blocks",
		Short: "List the users you blocked",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var res struct {
				Blocked []string `json:"blocked"`
			}
			if err := g.call(cmd, &a, "GET", "/v1/blocks", nil, &res); err != nil {
				return err
			}
			for _, u := range res.Blocked {
				fmt.Fprintln(cmd.OutOrStdout(), u)
			}
			return nil
		},
	}
	a.flags(c, false)
	return c
}

func unreadCmd(g *globals) *cobra.Command {
	var a asUser
	c := &cobra.Command{
		Use:   "unread",
		Short: "Unread counts per room and private conversation (#room, @peer)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var res struct {
				Conversations []struct {
					Room     string `json:"room"`
					Peer     string `json:"peer"`
					Unread   int64  `json:"unread"`
					LastRead any    `json:"last_read"`
				} `json:"conversations"`
			}
			if err := g.call(cmd, &a, "GET", "/v1/unread", nil, &res); err != nil {
				return err
			}
			for _, c := range res.Conversations {
				name := "#" + c.Room
				if c.Peer != "" {
					name = "@" + c.Peer
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s: %d unread", name, c.Unread)
				if c.LastRead != nil && c.LastRead != "" {
					fmt.Fprintf(cmd.OutOrStdout(), " (last read %v)", c.LastRead)
				}
				fmt.Fprintln(cmd.OutOrStdout())
			}
			return nil
		},
	}
	a.flags(c, false)
	return c
}

// changed is the edit or delete event the server answers with.
type changed struct {
	ID       string `json:"id"`
	Room     string `json:"room"`
	Target   string `json:"target"`
	Username string `json:"username"`
	Content  string `json:"content"`
	EditedAt string `json:"edited_at"`
	Pos      string `json:"pos"`
}

func (c changed) where() string {
	if c.Target != "" {
		return "@" + c.Target
	}
	return "#" + c.Room
}

func editCmd(g *globals) *cobra.Command {
	var a asUser
	c := &cobra.Command{
		Use:   "edit ID TEXT",
		Short: "Replace the text of your message ID",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := needID(args[0]); err != nil {
				return err
			}
			if args[1] == "" {
				return fmt.Errorf("give the new text (to remove a message: chatctl delete %s)", args[0])
			}
			var res changed
			if err := g.call(cmd, &a, "PATCH", "/v1/messages/"+url.PathEscape(args[0]), map[string]string{"content": args[1]}, &res); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "edited %s in %s at %s\n", res.ID, res.where(), res.EditedAt)
			return nil
		},
	}
	a.flags(c, false)
	return c
}

// needID refuses an empty message id (an unset variable) before any request.
func needID(id string) error {
	if strings.TrimSpace(id) == "" {
		return errors.New("give the message's id (chatctl history and search print it)")
	}
	return nil
}

func deleteCmd(g *globals) *cobra.Command {
	var a asUser
	c := &cobra.Command{
		Use:   "delete ID",
		Short: "Delete message ID (yours; a room's moderators and admins: anyone's in it)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := needID(args[0]); err != nil {
				return err
			}
			var res changed
			if err := g.call(cmd, &a, "DELETE", "/v1/messages/"+url.PathEscape(args[0]), nil, &res); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "deleted %s in %s\n", res.ID, res.where())
			return nil
		},
	}
	a.flags(c, true)
	return c
}
