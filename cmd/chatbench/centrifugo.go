package main

import (
	"bytes"
	"debug/buildinfo"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/chatsys/chat/pkg/auth"
)

// The peer of the rooms scenario: Centrifugo as it ships, installed with go
// install at this version (never vendored or copied), run with its memory
// engine and otherwise its defaults; the config only binds it to a loopback
// port, gives it the benchmark's HMAC secret and lets authenticated clients
// subscribe and publish in channels without a namespace.
const (
	centrifugoModule  = "github.com/centrifugal/centrifugo/v6"
	centrifugoVersion = "v6.9.1"
	centrifugoPkg     = centrifugoModule + "@" + centrifugoVersion
	centrifugoWSPath  = "/connection/websocket"
)

// ensureCentrifugo installs Centrifugo at path (its directory is the GOBIN)
// when it is not there yet, and checks that the binary at path is the
// pinned module and version (go install records them in the binary).
func ensureCentrifugo(path string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(abs); err != nil {
		if filepath.Base(abs) != "centrifugo" {
			return "", fmt.Errorf("%s: go install names Centrifugo's binary centrifugo; give a path ending in /centrifugo", path)
		}
		if err := goInstall(centrifugoPkg, filepath.Dir(abs)); err != nil {
			return "", err
		}
	}
	bi, err := buildinfo.ReadFile(abs)
	if err != nil {
		return "", fmt.Errorf("%s: %w (want a go install of %s)", path, err, centrifugoPkg)
	}
	if bi.Main.Path != centrifugoModule || bi.Main.Version != centrifugoVersion {
		return "", fmt.Errorf("%s is %s %s, want %s (remove it to have it installed)", path, bi.Main.Path, bi.Main.Version, centrifugoPkg)
	}
	return abs, nil
}

// centrifugoConfig is the whole configuration file (every key checked
// against v6.9.1's config structs; `centrifugo checkconfig --strict` and
// the start-up log are checked for unknown keys too).
func centrifugoConfig(addr string) ([]byte, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return nil, err
	}
	type m = map[string]any
	return json.MarshalIndent(m{
		"http_server": m{"address": host, "port": p},
		"engine":      m{"type": "memory"},
		"client":      m{"token": m{"hmac_secret_key": secret}},
		"channel": m{"without_namespace": m{
			"allow_subscribe_for_client": true,
			"allow_publish_for_client":   true,
		}},
	}, "", "  ")
}

// centrifugoEnv is cleanEnv without the caller's CENTRIFUGO_* variables
// (Centrifugo reads its options from them too).
func centrifugoEnv() []string {
	var env []string
	for _, kv := range cleanEnv() {
		if !strings.HasPrefix(kv, "CENTRIFUGO_") {
			env = append(env, kv)
		}
	}
	return env
}

// startCentrifugo runs Centrifugo (installed by ensureCentrifugo) on a free
// loopback port with the config above in a temporary directory.
func startCentrifugo(bin string, verbose bool) (*server, error) {
	dir, err := os.MkdirTemp("", "chatbench-centrifugo-")
	if err != nil {
		return nil, err
	}
	s := &server{name: "centrifugo", label: "Centrifugo " + centrifugoVersion + " (memory engine)", addr: freeAddr(), dir: dir,
		minter: auth.NewHS256Minter(secret, "")}
	runningMu.Lock()
	running[s] = true
	runningMu.Unlock()
	cfg, err := centrifugoConfig(s.addr)
	if err != nil {
		return nil, s.failed(err)
	}
	conf := filepath.Join(dir, "config.json")
	if err := os.WriteFile(conf, cfg, 0o600); err != nil {
		return nil, s.failed(err)
	}
	check := exec.Command(bin, "checkconfig", "--strict", "-c", conf)
	check.Dir, check.Env = dir, centrifugoEnv()
	if out, err := check.CombinedOutput(); err != nil {
		return nil, s.failed(fmt.Errorf("centrifugo checkconfig --strict: %w: %s", err, bytes.TrimSpace(out)))
	}
	if err := s.launch("centrifugo", dir, centrifugoEnv(), verbose, bin, "-c", conf); err != nil {
		return nil, s.failed(err)
	}
	// Without an upgrade the WebSocket endpoint answers 400: it is serving.
	if err := waitHTTP(s.addr, centrifugoWSPath, 30*time.Second); err != nil {
		return nil, s.failed(err)
	}
	if w := s.centrifugoWarnings(); len(w) > 0 {
		for _, l := range w {
			if bytes.Contains(l, []byte("unknown key")) || bytes.Contains(l, []byte("unknown var")) {
				return nil, s.failed(fmt.Errorf("centrifugo does not know an option: %s", l))
			}
		}
	}
	return s, nil
}

// centrifugoWarnings returns the warn, error and fatal lines of
// Centrifugo's log (none with -v: the log goes to stderr).
func (s *server) centrifugoWarnings() [][]byte {
	var out [][]byte
	for _, p := range s.logs {
		b, _ := os.ReadFile(p)
		for _, l := range bytes.Split(b, []byte("\n")) {
			if bytes.Contains(l, []byte(`"level":"warn"`)) || bytes.Contains(l, []byte(`"level":"error"`)) || bytes.Contains(l, []byte(`"level":"fatal"`)) {
				out = append(out, l)
			}
		}
	}
	return out
}

// centrifugoRooms drives Centrifugo with the client protocol's JSON
// encoding over WebSocket: connect with the user's token (id 1), subscribe
// (id 2), publish (ids from 2 on publisher connections); the publish reply
// {"id":N,"publish":{}} is the ack. Server pings ({}) are answered with a
// pong ({}), as every Centrifugo SDK does.
type centrifugoRooms struct {
	s *server
	// disc is the first disconnect seen (close frame or disconnect push)
	// before closing: our own closes at the end are not noted.
	disc    atomic.Value
	closing atomic.Bool
	// pongs counts the server pings answered.
	pongs atomic.Int64
}

var (
	cfPing       = []byte(`{}`)
	cfErrorKey   = []byte(`"error":`)
	cfDisconnect = []byte(`"disconnect"`)
)

// cfReplyID returns the id of a reply ({"id":N,...}); 0 for pushes and pings.
func cfReplyID(line []byte) uint32 {
	const p = `{"id":`
	if !bytes.HasPrefix(line, []byte(p)) {
		return 0
	}
	var id uint32
	for _, c := range line[len(p):] {
		if c < '0' || c > '9' {
			break
		}
		id = id*10 + uint32(c-'0')
	}
	return id
}

func (c *centrifugoRooms) noteDisconnect(what string) {
	if !c.closing.Load() {
		c.disc.CompareAndSwap(nil, what)
	}
}

// dialMany opens n connections to Centrifugo with conc concurrent dialers,
// each sending connect with user(i)'s token; after runs on each (in its
// dialer's goroutine) once its connect frame is written.
func (c *centrifugoRooms) dialMany(n, conc int, user func(int) string, after func(int, *websocket.Conn) error) ([]*websocket.Conn, error) {
	toks := make([]string, n)
	for i := range toks {
		toks[i] = c.s.token(user(i))
	}
	url := "ws://" + c.s.addr + centrifugoWSPath
	return dialEach(n, conc, func(i int) (*websocket.Conn, error) {
		ws, resp, err := dialer.Dial(url, nil)
		if err != nil && resp != nil {
			err = fmt.Errorf("%w (HTTP %s)", err, resp.Status)
		}
		if err == nil {
			err = ws.WriteMessage(websocket.TextMessage, []byte(`{"id":1,"connect":{"token":"`+toks[i]+`"}}`))
		}
		if err == nil {
			err = after(i, ws)
		}
		return ws, err
	})
}

// subscribe connects n subscribers, subscriber i to channel room(i), and
// waits for every connect and subscribe reply; a refused one fails the run.
func (c *centrifugoRooms) subscribe(n, conc int, room func(int) string, handle func(line []byte, now time.Time)) (*subscribers, error) {
	subs := &subscribers{}
	var ready sync.WaitGroup
	ready.Add(n)
	var refused atomic.Value
	conns, err := c.dialMany(n, conc, func(i int) string { return "s" + itoa(i) }, func(i int, ws *websocket.Conn) error {
		if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"id":2,"subscribe":{"channel":"`+room(i)+`"}}`)); err != nil {
			return err
		}
		// From here only this goroutine writes to ws (pongs).
		go func() {
			waiting := 2 // connect and subscribe replies
			err := readLoop(ws, func(line []byte, now time.Time) {
				switch {
				case bytes.Equal(line, cfPing):
					ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
					if ws.WriteMessage(websocket.TextMessage, cfPing) == nil {
						c.pongs.Add(1)
					}
				case waiting > 0 && cfReplyID(line) != 0:
					if bytes.Contains(line, cfErrorKey) {
						refused.CompareAndSwap(nil, string(line))
					}
					if waiting--; waiting == 0 {
						ready.Done()
					}
				case bytes.Contains(line, cfDisconnect) && !bytes.Contains(line, contentKey):
					c.noteDisconnect("subscriber: " + string(line))
				default:
					handle(line, now)
				}
			})
			c.noteDisconnect("subscriber: " + err.Error())
			subs.dropped.Add(1)
			if waiting > 0 {
				ready.Done()
			}
		}()
		return nil
	})
	if err != nil {
		return nil, err
	}
	subs.conns = conns
	if !waitFor(&ready, 120*time.Second) {
		closeAll(conns)
		return nil, fmt.Errorf("not every subscriber got its subscribe reply within 120s")
	}
	if r, _ := refused.Load().(string); r != "" {
		closeAll(conns)
		return nil, fmt.Errorf("centrifugo refused a connect or subscribe: %s", r)
	}
	if d := subs.dropped.Load(); d > 0 {
		closeAll(conns)
		d0, _ := c.disc.Load().(string)
		return nil, fmt.Errorf("%d subscribers were disconnected while subscribing (first: %s)", d, d0)
	}
	return subs, nil
}

// cfPub is a publisher connection: its writes (publishes, pongs) under wmu,
// the send stamps of its publishes waiting for a reply by id under mu.
type cfPub struct {
	ws      *websocket.Conn
	wmu     sync.Mutex
	mu      sync.Mutex
	nextID  uint32
	pending map[uint32]cfPending
}

type cfPending struct {
	sent  int64
	step  int
	probe chan []byte // the probe publish's reply goes here
}

func (p *cfPub) write(b []byte) error {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	p.ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
	return p.ws.WriteMessage(websocket.TextMessage, b)
}

// publish sends a stamped message to channel room, its data the same
// object the chat's frame carries: {"content":"<stamp>xxx…","client_id":"<stamp>"}.
func (p *cfPub) publish(room string, t time.Time, step, size int, probe chan []byte) error {
	p.mu.Lock()
	id := p.nextID
	p.nextID++
	p.pending[id] = cfPending{sent: t.UnixNano(), step: step, probe: probe}
	p.mu.Unlock()
	b := make([]byte, 0, 96+2*size)
	b = append(b, `{"id":`...)
	b = strconv.AppendUint(b, uint64(id), 10)
	b = append(b, `,"publish":{"channel":"`...)
	b = append(b, room...)
	b = append(b, `","data":{"content":"`...)
	n := len(b)
	if probe == nil {
		b = appendStamp(b, t, step)
	}
	for len(b)-n < size {
		b = append(b, 'x')
	}
	b = append(b, `","client_id":"`...)
	if probe == nil {
		b = appendStamp(b, t, step)
	}
	b = append(b, `"}}}`...)
	return p.write(b)
}

// reply matches a reply to its publish: ack(step, sent, now) for a
// publish reply, fail(step, line) for an error reply.
func (p *cfPub) reply(line []byte, now time.Time, ack func(int, int64, time.Time), fail func(int, []byte)) {
	id := cfReplyID(line)
	p.mu.Lock()
	pd, ok := p.pending[id]
	delete(p.pending, id)
	p.mu.Unlock()
	switch {
	case !ok:
		fail(-1, line)
	case pd.probe != nil:
		pd.probe <- append([]byte(nil), line...)
	case bytes.Contains(line, cfErrorKey):
		fail(pd.step, line)
	default:
		ack(pd.step, pd.sent, now)
	}
}

type cfPubs struct {
	c     *centrifugoRooms
	pubs  []*cfPub
	conns []*websocket.Conn
}

func (ps *cfPubs) send(i int, room string, step, size int) error {
	return ps.pubs[i].publish(room, time.Now(), step, size, nil)
}

// close closes the publishers; runRooms closes the subscribers next.
func (ps *cfPubs) close() {
	ps.c.closing.Store(true)
	closeAll(ps.conns)
}

// publishers connects n publisher users (p0…), waits for their connect
// replies, then has the first publish once to channel probe and wait for
// the reply: a refused publish (a permission the config lacks) fails here.
func (c *centrifugoRooms) publishers(n, conc int, probe string, ack func(int, int64, time.Time), fail func(int, []byte)) (roomsPubs, error) {
	ps := &cfPubs{c: c, pubs: make([]*cfPub, n)}
	var ready sync.WaitGroup
	ready.Add(n)
	var refused atomic.Value
	conns, err := c.dialMany(n, conc, func(i int) string { return "p" + itoa(i) }, func(i int, ws *websocket.Conn) error {
		p := &cfPub{ws: ws, nextID: 2, pending: map[uint32]cfPending{}}
		ps.pubs[i] = p
		go func() {
			connected := false
			err := readLoop(ws, func(line []byte, now time.Time) {
				switch {
				case bytes.Equal(line, cfPing):
					if p.write(cfPing) == nil {
						c.pongs.Add(1)
					}
				case !connected && cfReplyID(line) == 1:
					if bytes.Contains(line, cfErrorKey) {
						refused.CompareAndSwap(nil, string(line))
					}
					connected = true
					ready.Done()
				case cfReplyID(line) != 0:
					p.reply(line, now, ack, fail)
				case bytes.Contains(line, cfDisconnect):
					c.noteDisconnect("publisher: " + string(line))
				}
			})
			c.noteDisconnect("publisher: " + err.Error())
			if !connected {
				ready.Done()
			}
		}()
		return nil
	})
	if err != nil {
		return nil, err
	}
	ps.conns = conns
	if !waitFor(&ready, 60*time.Second) {
		ps.close()
		return nil, errors.New("not every publisher got its connect reply within 60s")
	}
	if r, _ := refused.Load().(string); r != "" {
		ps.close()
		return nil, fmt.Errorf("centrifugo refused a connect: %s", r)
	}
	reply := make(chan []byte, 1)
	if err := ps.pubs[0].publish(probe, time.Now(), 0, 16, reply); err != nil {
		ps.close()
		return nil, err
	}
	select {
	case r := <-reply:
		if bytes.Contains(r, cfErrorKey) {
			ps.close()
			return nil, fmt.Errorf("centrifugo refused a publish: %s", r)
		}
	case <-time.After(10 * time.Second):
		ps.close()
		return nil, errors.New("no reply to a publish within 10s")
	}
	return ps, nil
}
