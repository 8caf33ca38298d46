// Command chatctl is the chat's command-line tool: mint development tokens,
// announce as admin, chat from a terminal, manage rooms, members and
// blocks, see unread counts, edit and delete messages.
//
// Flags fall back to the same environment variables as the server
// (CHAT_DATA_DIR, CHAT_JWT_SECRET, CHAT_HTTP_ADDR) and to CHAT_SERVER and
// CHAT_TOKEN.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
	"github.com/spf13/cobra"

	"github.com/cenkalti/backoff/v5"
	"github.com/chatsys/chat/pkg/auth"
	"github.com/chatsys/chat/pkg/chatevent"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := newRoot().ExecuteContext(ctx); err != nil {
		os.Exit(1)
	}
}

func env(key, def string) string {
	if v, ok := os.LookupEnv(key); ok && v != "" {
		return v
	}
	return def
}

type globals struct {
	server     string
	token      string
	dataDir    string
	secret     string
	privateKey string
}

func newRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:           "chatctl",
		Short:         "Command-line tool for the chat",
		SilenceUsage:  true,
		SilenceErrors: false,
	}
	pf := root.PersistentFlags()
	pf.StringVar(&g.server, "server", env("CHAT_SERVER", "http://"+env("CHAT_HTTP_ADDR", "127.0.0.1:8080")), "server base URL (env CHAT_SERVER)")
	// The secrets' environment fallbacks are applied after parsing, not
	// as flag defaults: help prints defaults.
	pf.StringVar(&g.token, "token", "", "JWT to authenticate with (env CHAT_TOKEN); default: mint one with the local secret")
	pf.StringVar(&g.dataDir, "data-dir", env("CHAT_DATA_DIR", "./data"), "server data directory holding the generated jwt.secret (env CHAT_DATA_DIR)")
	pf.StringVar(&g.secret, "jwt-secret", "", "HS256 secret (env CHAT_JWT_SECRET); default: the data directory's")
	pf.StringVar(&g.privateKey, "jwt-private-key", "", "PEM RSA private key: mint RS256 tokens instead of HS256")
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		if !cmd.Flags().Changed("token") {
			g.token = env("CHAT_TOKEN", "")
		}
		if !cmd.Flags().Changed("jwt-secret") {
			g.secret = env("CHAT_JWT_SECRET", "")
		} else if g.secret == "" {
			// --jwt-secret "$CHAT_JWT_SECRET" with the variable unset (not
			// exported): signing with another secret would only give 401s.
			return errors.New("--jwt-secret is empty (an unset variable?): give the servers' secret, or leave the flag out to use the data directory's")
		}
		return nil
	}
	root.AddCommand(tokenCmd(g), announceCmd(g), chatCmd(g), historyCmd(g), searchCmd(g), analyticsCmd(g), presenceCmd(g), dmCmd(g),
		roomCmd(g), blockCmd(g, true), blockCmd(g, false), blocksCmd(g), unreadCmd(g), editCmd(g), deleteCmd(g))
	return root
}

// minter returns the token minter the server's configuration implies.
func (g *globals) minter() (*auth.Minter, error) {
	if g.privateKey != "" {
		b, err := os.ReadFile(g.privateKey)
		if err != nil {
			return nil, err
		}
		k, err := jwt.ParseRSAPrivateKeyFromPEM(b)
		if err != nil {
			return nil, fmt.Errorf("parse %s: %w", g.privateKey, err)
		}
		return auth.NewRS256Minter(k, ""), nil
	}
	secret := g.secret
	if secret == "" {
		b, err := os.ReadFile(g.dataDir + "/" + auth.SecretFile)
		if err != nil {
			return nil, fmt.Errorf("no secret: set --jwt-secret or CHAT_JWT_SECRET, or point --data-dir at the server's data directory (%w)", err)
		}
		secret = strings.TrimSpace(string(b))
	}
	return auth.NewHS256Minter(secret, ""), nil
}

// tokenFor returns --token, or mints one for user.
func (g *globals) tokenFor(user string, admin bool) (string, error) {
	if g.token != "" {
		return g.token, nil
	}
	m, err := g.minter()
	if err != nil {
		return "", err
	}
	return m.Mint(user, admin, time.Hour)
}

// request calls the server with a bearer token, body (if not nil) as
// JSON, and returns the body of a 2xx answer. An error answer becomes an
// error "code: message" when the server sent {"error":{code,message}}.
func (g *globals) request(ctx context.Context, method, path, tok string, body any) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		j, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(g.server, "/")+path, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error struct{ Code, Message string }
		}
		if json.Unmarshal(b, &e) == nil && e.Error.Code != "" {
			return nil, &apiError{Code: e.Error.Code, Message: e.Error.Message}
		}
		return nil, fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	return b, nil
}

// apiError is an error answer of the server: {"error":{"code","message"}}.
type apiError struct{ Code, Message string }

func (e *apiError) Error() string { return e.Code + ": " + e.Message }

// get calls GET path as user (a token is minted unless --token is given).
func (g *globals) get(cmd *cobra.Command, user, path string) ([]byte, error) {
	tok, err := g.tokenFor(user, false)
	if err != nil {
		return nil, err
	}
	return g.request(cmd.Context(), "GET", path, tok, nil)
}

// adminPost POSTs body with an admin token.
func (g *globals) adminPost(cmd *cobra.Command, as, path string, body any) ([]byte, error) {
	tok, err := g.tokenFor(as, true)
	if err != nil {
		return nil, err
	}
	return g.request(cmd.Context(), "POST", path, tok, body)
}

// wsURL is the WebSocket endpoint of server.
func wsURL(server string) (string, error) {
	u, err := url.Parse(server)
	if err != nil {
		return "", err
	}
	u.Scheme = map[string]string{"https": "wss"}[u.Scheme]
	if u.Scheme == "" {
		u.Scheme = "ws"
	}
	u.Path = "/ws"
	return u.String(), nil
}

func tokenCmd(g *globals) *cobra.Command {
	var user string
	var admin, asURL bool
	var ttl time.Duration
	c := &cobra.Command{
		Use:   "token --user NAME [--admin] [--ttl D] [--url]",
		Short: "Print a token the running server accepts (--url: the web client's sign-in link)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m, err := g.minter()
			if err != nil {
				return err
			}
			tok, err := m.Mint(user, admin, ttl)
			if err != nil {
				return err
			}
			if asURL {
				// The token travels in the fragment, which browsers never send to a server.
				fmt.Fprintf(cmd.OutOrStdout(), "%s/#token=%s\n", strings.TrimRight(g.server, "/"), tok)
				return nil
			}
			fmt.Fprintln(cmd.OutOrStdout(), tok)
			return nil
		},
	}
	c.Flags().StringVar(&user, "user", "", "username (the token's sub)")
	c.Flags().BoolVar(&asURL, "url", false, "print the web client's sign-in link (--server plus #token=…) instead of the bare token")
	c.Flags().BoolVar(&admin, "admin", false, "grant the admin role")
	c.Flags().DurationVar(&ttl, "ttl", 24*time.Hour, "validity")
	c.MarkFlagRequired("user")
	return c
}

func announceCmd(g *globals) *cobra.Command {
	var room, as string
	c := &cobra.Command{
		Use:   "announce TEXT [--room R]",
		Short: "Announce as admin to one room or to everyone connected",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			b, err := g.adminPost(cmd, as, "/v1/admin/announce", map[string]string{"content": args[0], "room": room})
			if err != nil {
				return fmt.Errorf("announce: %w", err)
			}
			var ev struct{ ID string }
			json.Unmarshal(b, &ev)
			fmt.Fprintln(cmd.OutOrStdout(), "announced", ev.ID)
			return nil
		},
	}
	c.Flags().StringVar(&room, "room", "", "room to announce to (default: everyone connected)")
	c.Flags().StringVar(&as, "as", "admin", "admin username when minting a token")
	return c
}

func chatCmd(g *globals) *cobra.Command {
	var user string
	c := &cobra.Command{
		Use:   "chat ROOM --user NAME",
		Short: "Chat in a room from the terminal: lines from stdin are sent, messages printed",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			tok, err := g.tokenFor(user, false)
			if err != nil {
				return err
			}
			return chat(cmd.Context(), g.server, tok, args[0], cmd.InOrStdin(), cmd.OutOrStdout())
		},
	}
	c.Flags().StringVar(&user, "user", env("USER", "guest"), "username when minting a token")
	return c
}

// chat runs a terminal session; it reconnects with backoff and resumes from
// the last position seen.
func chat(ctx context.Context, server, tok, room string, in io.Reader, out io.Writer) error {
	endpoint, err := wsURL(server)
	if err != nil {
		return err
	}
	lines := make(chan string)
	go func() {
		s := bufio.NewScanner(in)
		for s.Scan() {
			lines <- s.Text()
		}
		close(lines)
	}()
	var since string
	ob := &outbox{content: map[string]string{}}
	// Reconnects wait 500ms doubling to 15s, ±50% so that clients cut off
	// together do not come back together.
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval, bo.MaxInterval, bo.RandomizationFactor = 500*time.Millisecond, 15*time.Second, 0.5
	for {
		ws, resp, err := websocket.DefaultDialer.DialContext(ctx, endpoint, http.Header{"Authorization": {"Bearer " + tok}})
		if resp != nil && resp.StatusCode == http.StatusUnauthorized {
			return errors.New("the server refused the token (401)")
		}
		if err == nil {
			bo.Reset()
			done, e := session(ctx, ws, room, &since, ob, lines, out)
			if done {
				return e
			}
			err = e
		}
		if ctx.Err() != nil {
			return nil
		}
		wait := bo.NextBackOff()
		fmt.Fprintf(out, "* disconnected (%v); reconnecting in %v\n", err, wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// outbox holds a chat session's lines until the server answers them: a
// line not acknowledged when a connection ends is sent again (same
// client_id: the edge answers a resend with the first send's ack) on the
// next one; the first refusal is what chat returns when its input ends.
type outbox struct {
	mu      sync.Mutex
	order   []string          // client_ids of pending lines, in input order
	content map[string]string // pending: client_id → line
	failed  int
	first   *apiError
	joining bool // the join is not answered yet
}

func (o *outbox) setJoining(v bool) {
	o.mu.Lock()
	o.joining = v
	o.mu.Unlock()
}

func (o *outbox) add(cid, line string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.order = append(o.order, cid)
	o.content[cid] = line
}

// answered settles client_id cid (err nil: acknowledged); an error without
// a client_id (a refused join) counts as a failure too.
func (o *outbox) answered(cid string, err *apiError) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if cid == "" {
		o.joining = false
	}
	if _, ok := o.content[cid]; ok {
		delete(o.content, cid)
		o.order = slices.DeleteFunc(o.order, func(c string) bool { return c == cid })
	} else if cid != "" {
		return // not ours (an earlier session's duplicate answer)
	}
	if err != nil {
		o.failed++
		if o.first == nil {
			o.first = err
		}
	}
}

// pending returns the unanswered lines, in input order.
func (o *outbox) pending() (cids, lines []string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, c := range o.order {
		cids, lines = append(cids, c), append(lines, o.content[c])
	}
	return cids, lines
}

// result waits up to d for every line's answer and returns the first
// refusal (as the server answered it), or an error naming the lines left
// unanswered.
func (o *outbox) result(d time.Duration) error {
	for end := time.Now().Add(d); ; time.Sleep(20 * time.Millisecond) {
		cids, _ := o.pending()
		o.mu.Lock()
		joining := o.joining
		o.mu.Unlock()
		if (len(cids) == 0 && !joining) || time.Now().After(end) {
			o.mu.Lock()
			defer o.mu.Unlock()
			switch {
			case o.first != nil && o.failed > 1:
				return &apiError{Code: o.first.Code, Message: fmt.Sprintf("%s (%d refusals in all)", o.first.Message, o.failed)}
			case o.first != nil:
				return o.first
			case len(cids) > 0:
				return fmt.Errorf("%d lines not acknowledged within %v", len(cids), d)
			case joining:
				return fmt.Errorf("the join was not answered within %v", d)
			}
			return nil
		}
	}
}

// session runs one connection. Its reader goroutine updates *since and
// writes to out; session returns only after that goroutine has ended, so
// the caller may read *since (for the next join) and out.
func session(ctx context.Context, ws *websocket.Conn, room string, since *string, ob *outbox, lines <-chan string, out io.Writer) (done bool, err error) {
	readerDone := make(chan struct{})
	defer func() {
		ws.Close() // ends the reader's ReadJSON
		<-readerDone
	}()
	join := map[string]string{"type": "join", "room": room}
	if *since != "" {
		join["since"] = *since
	}
	ob.setJoining(true)
	if err := ws.WriteJSON(join); err != nil {
		close(readerDone)
		return false, err
	}
	// Lines the last connection did not get answered, again.
	cids, pend := ob.pending()
	for i := range cids {
		if err := ws.WriteJSON(map[string]string{"type": "chat", "room": room, "content": pend[i], "client_id": cids[i]}); err != nil {
			close(readerDone)
			return false, err
		}
	}
	errc := make(chan error, 1)
	go func() {
		defer close(readerDone)
		for {
			var ev map[string]any
			if err := ws.ReadJSON(&ev); err != nil {
				errc <- err
				return
			}
			str := func(k string) string { s, _ := ev[k].(string); return s }
			switch str("type") {
			case "chat":
				if str("room") == room {
					*since = str("pos")
				}
				ts := str("timestamp")
				if len(ts) >= 19 {
					ts = ts[11:19]
				}
				fmt.Fprintf(out, "%s <%s> %s\n", ts, str("username"), str("content"))
			case "system":
				fmt.Fprintf(out, "*** %s\n", str("content"))
			case "private":
				fmt.Fprintf(out, "[dm %s → %s] %s\n", str("username"), str("target"), str("content"))
			case "welcome":
				fmt.Fprintf(out, "* connected as %s\n", str("username"))
			case "joined":
				ob.setJoining(false)
				if ev["recovered"] == false {
					fmt.Fprintln(out, "* some messages may be missing: the log no longer holds them")
				}
			case "ack":
				ob.answered(str("client_id"), nil)
			case "error":
				fmt.Fprintf(out, "* error %s: %s\n", str("code"), str("message"))
				ob.answered(str("client_id"), &apiError{Code: str("code"), Message: str("message")})
			}
		}
	}()
	for {
		select {
		case <-ctx.Done():
			ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
			return true, nil
		case err := <-errc:
			var ce *websocket.CloseError
			if errors.As(err, &ce) && !chatevent.CloseCode(ce.Code).Reconnect() {
				return true, fmt.Errorf("closed by server: %d %s", ce.Code, ce.Text)
			}
			return false, err
		case l, ok := <-lines:
			if !ok {
				// The input ended: wait for the answers (and the echoes
				// just behind them); the first refusal is the result.
				err := ob.result(10 * time.Second)
				time.Sleep(200 * time.Millisecond)
				return true, err
			}
			if strings.TrimSpace(l) == "" {
				continue
			}
			b := make([]byte, 8)
			rand.Read(b)
			cid := hex.EncodeToString(b)
			ob.add(cid, l)
			if err := ws.WriteJSON(map[string]string{"type": "chat", "room": room, "content": l, "client_id": cid}); err != nil {
				return false, err // sent again on the next connection
			}
		}
	}
}
