package main

import (
	"strings"
	"testing"
	"time"
)

// TestConversationCommandsLive drives the conversation commands against a
// real server (broker, edge, history, router): a private room hidden from
// a non-member until invited, moderation, blocks, unread counts, and the
// edit and delete of a private message.
func TestConversationCommandsLive(t *testing.T) {
	dataDir := t.TempDir()
	addr := startServer(t, dataDir)
	// The flags follow the subcommand (--user is each command's flag).
	run := func(user string, args ...string) (string, error) {
		t.Helper()
		return ctl(t, "", append(args, "--server", "http://"+addr, "--data-dir", dataDir, "--user", user)...)
	}
	must := func(user string, args ...string) string {
		t.Helper()
		out, err := run(user, args...)
		if err != nil {
			t.Fatalf("chatctl %v as %s: %v", args, user, err)
		}
		return out
	}
	fails := func(user, want string, args ...string) {
		t.Helper()
		if _, err := run(user, args...); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("chatctl %v as %s: error %v, want one saying %q", args, user, err, want)
		}
	}

	if out := must("alice", "room", "create", "design", "--private"); out != "created #design private, owner alice, your role owner\n" {
		t.Errorf("room create printed %q", out)
	}
	fails("alice", "conflict", "room", "create", "design")
	fails("bob", "not_found", "room", "show", "design")
	fails("bob", "not_found", "room", "show", "nosuchroom")
	fails("bob", "not_found", "history", "design")
	fails("bob", "forbidden", "chat", "design")
	fails("bob", "not_found", "history", "nosuchroom")
	if out := must("bob", "room", "list"); strings.Contains(out, "design") {
		t.Errorf("room list as a non-member shows the private room:\n%s", out)
	}
	// The router's member list hides it too.
	fails("bob", "not_found", "presence", "--room", "design")
	if out := must("alice", "room", "invite", "design", "bob"); out != "#design bob: invite (member)\n" {
		t.Errorf("room invite printed %q", out)
	}
	if out := must("bob", "presence", "--room", "design"); out != "#design: \n" {
		t.Errorf("presence --room design as the invited member printed %q, want an empty list", out)
	}
	if out := must("bob", "room", "show", "design"); !strings.HasPrefix(out, "#design private, owner alice, your role member\n") ||
		!strings.Contains(out, "  bob: member\n") || !strings.Contains(out, "  alice: owner\n") {
		t.Errorf("room show as the invited member printed\n%s", out)
	}
	if out := must("bob", "room", "list"); !strings.Contains(out, "#design private, owner alice, your role member\n") {
		t.Errorf("room list as a member printed\n%s", out)
	}
	if out := must("alice", "room", "mute", "design", "bob"); out != "#design bob: mute (member, muted)\n" {
		t.Errorf("room mute printed %q", out)
	}
	fails("bob", "forbidden", "room", "invite", "design", "carol")
	if out := must("alice", "room", "unmute", "design", "bob"); out != "#design bob: unmute (member)\n" {
		t.Errorf("room unmute printed %q", out)
	}
	must("alice", "room", "ban", "design", "bob")
	fails("bob", "not_found", "room", "show", "design")

	if out := must("alice", "block", "bob"); out != "blocked bob\n" {
		t.Errorf("block printed %q", out)
	}
	if out := must("alice", "blocks"); out != "bob\n" {
		t.Errorf("blocks printed %q", out)
	}
	if out := must("alice", "unblock", "bob"); out != "unblocked bob\n" {
		t.Errorf("unblock printed %q", out)
	}
	if out := must("alice", "blocks"); out != "" {
		t.Errorf("blocks after unblock printed %q", out)
	}

	// A private message, seen unread by its receiver, edited and deleted
	// by its author; others get not_found.
	sent := must("alice", "dm", "bob", "helo")
	id := strings.TrimSpace(strings.TrimPrefix(sent, "sent "))
	if id == "" || !strings.HasPrefix(sent, "sent ") {
		t.Fatalf("dm printed %q", sent)
	}
	var out string
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, _ = run("bob", "unread")
		if strings.Contains(out, "@alice: 1 unread") || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(out, "@alice: 1 unread") {
		t.Errorf("unread as bob printed %q, want @alice: 1 unread", out)
	}
	fails("bob", "not_found", "edit", id, "not mine")
	if out := must("alice", "edit", id, "hello"); !strings.HasPrefix(out, "edited "+id+" in @bob at ") {
		t.Errorf("edit printed %q", out)
	}
	fails("bob", "not_found", "delete", id)
	if out := must("alice", "delete", id); out != "deleted "+id+" in @bob\n" {
		t.Errorf("delete printed %q", out)
	}
	// Once history has applied the delete, the message no longer counts
	// as unread, and it can no longer be edited.
	deadline = time.Now().Add(20 * time.Second)
	for {
		out, _ = run("bob", "unread")
		if !strings.Contains(out, "@alice: 1 unread") || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if strings.Contains(out, "@alice: 1 unread") {
		t.Errorf("unread as bob after the delete printed %q, want no unread message from alice", out)
	}
	fails("alice", "not_found", "edit", id, "too late")

	// chatctl history marks an edited message and prints a deleted one as
	// a tombstone (no author, no text).
	if _, err := ctl(t, "keep me\ndrop me\n", "chat", "general", "--server", "http://"+addr, "--data-dir", dataDir, "--user", "alice"); err != nil {
		t.Fatal(err)
	}
	ids := map[string]string{}
	deadline = time.Now().Add(20 * time.Second)
	for len(ids) < 2 && time.Now().Before(deadline) {
		out, _ = run("alice", "history", "general")
		for _, line := range strings.Split(out, "\n") {
			if f := strings.Fields(line); len(f) == 5 && f[2] == "<alice>" && f[4] == "me" {
				ids[f[3]] = f[1]
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	must("alice", "edit", ids["keep"], "kept")
	must("alice", "delete", ids["drop"])
	deadline = time.Now().Add(20 * time.Second)
	for {
		out, _ = run("alice", "history", "general")
		if strings.Contains(out, " "+ids["keep"]+" <alice> kept (edited)\n") && strings.Contains(out, " "+ids["drop"]+" (deleted)\n") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("chatctl history after an edit and a delete:\n%s\nwant %s as \"<alice> kept (edited)\" and %s as \"(deleted)\"", out, ids["keep"], ids["drop"])
		}
		time.Sleep(50 * time.Millisecond)
	}
}
