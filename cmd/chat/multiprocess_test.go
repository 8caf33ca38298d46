package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/segmentio/kafka-go"

	"github.com/chatsys/chat/pkg/auth"
	"github.com/chatsys/chat/pkg/kafkaio"
	"github.com/chatsys/chat/pkg/pgutil/pgtest"
	"github.com/chatsys/chat/pkg/testutil"
)

// TestMain runs the tests in an environment without the caller's CHAT_*
// and OTEL_* variables: run reads them (flag fallbacks, tracing), and so
// does every process the tests start.
func TestMain(m *testing.M) {
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); isChatEnv(k) {
			os.Unsetenv(k)
		}
	}
	pgtest.Main(m)
}

func isChatEnv(key string) bool {
	return strings.HasPrefix(key, "CHAT_") || strings.HasPrefix(key, "OTEL_")
}

// processEnv is the environment of a process a test starts: this one's
// without CHAT_* and OTEL_* (a test's t.Setenv included), plus extra.
func processEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); !isChatEnv(k) {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// chatBinary builds this command once for the multi-process tests.
func chatBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "chatbin")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "chat")
		out, err := exec.Command("go", "build", "-race", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("%v: %s", err, out)
		}
	})
	if binErr != nil {
		t.Fatalf("build chat: %v", binErr)
	}
	return binPath
}

type proc struct {
	name string
	addr string
	cmd  *exec.Cmd
}

// startProc starts the built binary as its own OS process and waits for
// its /readyz.
func startProc(t *testing.T, env []string, name string, args ...string) *proc {
	t.Helper()
	addr := freeAddr(t)
	cmd := exec.Command(chatBinary(t), append([]string{"-http.addr=" + addr, "-log.level=warn"}, args...)...)
	cmd.Env = processEnv(env...)
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		s := bufio.NewScanner(stderr)
		for s.Scan() {
			if testing.Verbose() {
				t.Logf("%s: %s", name, s.Text())
			}
		}
	}()
	p := &proc{name: name, addr: addr, cmd: cmd}
	t.Cleanup(func() { p.cmd.Process.Signal(syscall.SIGTERM); p.cmd.Wait() })
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready after 60s", name)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

const mpSecret = "multi-process-secret-0123456789"

func mpToken(t *testing.T, user string) string {
	t.Helper()
	tok, err := auth.NewHS256Minter(mpSecret, "").Mint(user, false, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func apiGet(t *testing.T, addr, user, path string, out any) int {
	t.Helper()
	return apiGetTok(t, addr, mpToken(t, user), path, out)
}

// apiGetTok GETs path with tok and decodes the JSON answer into out.
func apiGetTok(t *testing.T, addr, tok, path string, out any) int {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+addr+path, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	json.NewDecoder(resp.Body).Decode(out)
	return resp.StatusCode
}

type presenceAnswer struct {
	Users []struct {
		User        string `json:"user"`
		Online      bool   `json:"online"`
		Connections int    `json:"connections"`
		LastSeen    string `json:"last_seen"`
	} `json:"users"`
}

func presenceOf(t *testing.T, router any, user string) (bool, int) {
	addr, ok := router.(string)
	if !ok {
		addr = router.(*proc).addr
	}
	var p presenceAnswer
	if apiGet(t, addr, "observer", "/v1/presence?user="+url.QueryEscape(user), &p) != 200 || len(p.Users) != 1 {
		return false, -1
	}
	return p.Users[0].Online, p.Users[0].Connections
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	testutil.Eventually(t, d, what, cond)
}

// collector reads every frame of a connection in the background.
type collector struct {
	mu     sync.Mutex
	frames []map[string]any
}

func collect(ws *websocket.Conn) *collector {
	c := &collector{}
	go func() {
		for {
			var m map[string]any
			if err := ws.ReadJSON(&m); err != nil {
				return
			}
			c.mu.Lock()
			c.frames = append(c.frames, m)
			c.mu.Unlock()
		}
	}()
	return c
}

func (c *collector) ofType(typ string) []map[string]any {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []map[string]any
	for _, f := range c.frames {
		if f["type"] == typ {
			out = append(out, f)
		}
	}
	return out
}

func mpDial(t *testing.T, p *proc, user string) (*websocket.Conn, *collector) {
	t.Helper()
	ws, c := wsAs(t, p, user)
	ws.WriteJSON(map[string]string{"type": "join", "room": "general"})
	waitFor(t, 10*time.Second, user+" joined", func() bool { return len(c.ofType("joined")) > 0 })
	return ws, c
}

// TestMultiProcess runs the real topology on one machine: a broker, two
// edges, a router and history, each its own OS process.
func TestMultiProcess(t *testing.T) {
	dir := dataDir(t)
	brokerAddr := freeAddr(t)
	env := []string{"CHAT_KAFKA_BROKERS=" + brokerAddr, "CHAT_JWT_SECRET=" + mpSecret, "CHAT_DATA_DIR=" + dir,
		"CHAT_EDGE_HEARTBEAT=300ms", "CHAT_EDGE_PRESENCE_GRACE=300ms", "CHAT_ROUTER_EDGE_TIMEOUT=4s",
		"CHAT_KAFKA_PRESENCE_PARTITIONS=4", "CHAT_EDGE_DRAIN_DURATION=100ms"}
	startProc(t, env, "broker", "-target=broker", "-broker.addr="+brokerAddr)
	router := startProc(t, env, "router", "-target=router")
	hist := startProc(t, append(env, "CHAT_DATABASE_URL="+pgtest.NewDatabase(t)), "history", "-target=history", "-history.batch-wait=20ms")
	edge1 := startProc(t, env, "edge1", "-target=edge", "-edge.id=edge1")
	edge2 := startProc(t, env, "edge2", "-target=edge", "-edge.id=edge2")

	alice1, aliceOn1 := mpDial(t, edge1, "alice")
	_, carolOn1 := mpDial(t, edge1, "carol")
	_, bobOn2 := mpDial(t, edge2, "bob")
	_, aliceOn2 := mpDial(t, edge2, "alice")
	waitFor(t, 10*time.Second, "presence of alice (2) and bob (1)", func() bool {
		_, a := presenceOf(t, router, "alice")
		_, b := presenceOf(t, router, "bob")
		return a == 2 && b == 1
	})

	t.Run("room message crosses edges", func(t *testing.T) {
		alice1.WriteJSON(map[string]string{"type": "chat", "room": "general", "content": "hi room", "client_id": "r1"})
		waitFor(t, 10*time.Second, "bob on edge 2 gets the room message", func() bool { return len(bobOn2.ofType("chat")) == 1 })
	})

	t.Run("members", func(t *testing.T) {
		var m struct{ Members []string }
		waitFor(t, 5*time.Second, "room members", func() bool {
			return apiGet(t, router.addr, "x", "/v1/rooms/general/members", &m) == 200 && strings.Join(m.Members, ",") == "alice,bob,carol"
		})
	})

	// Watch every partition of chat.deliveries to see which edges got records.
	k := kafkaio.Config{Brokers: brokerAddr}
	edge1Part := kafkaio.PartitionFor("edge1", 4) // CHAT_KAFKA_PRESENCE_PARTITIONS
	startOff := map[int]int64{}
	for p := 0; p < 4; p++ {
		_, next, err := k.Offsets(context.Background(), "chat.deliveries", p)
		if err != nil {
			t.Fatal(err)
		}
		startOff[p] = next
	}

	t.Run("private message reaches the target's and the sender's edges only", func(t *testing.T) {
		alice1.WriteJSON(map[string]string{"type": "private", "target": "bob", "content": "psst bob", "client_id": "d1", "username": "mallory"})
		waitFor(t, 10*time.Second, "bob and alice's second connection get the DM", func() bool {
			return len(bobOn2.ofType("private")) == 1 && len(aliceOn2.ofType("private")) == 1 && len(aliceOn1.ofType("private")) == 1
		})
		dm := bobOn2.ofType("private")[0]
		if dm["username"] != "alice" || dm["target"] != "bob" || dm["content"] != "psst bob" || dm["pos"] == nil {
			t.Fatalf("bob got %v", dm)
		}
		// carol shares edge 1 with alice, whose copy of the DM has arrived:
		// a copy for carol would be in her queue by now. A marker sent to
		// her afterwards, on the same path, arrives after it.
		alice1.WriteJSON(map[string]string{"type": "private", "target": "carol", "content": "marker for carol", "client_id": "m1"})
		waitFor(t, 10*time.Second, "carol gets the marker", func() bool {
			for _, f := range carolOn1.ofType("private") {
				if f["content"] == "marker for carol" {
					return true
				}
			}
			return false
		})
		if got := carolOn1.ofType("private"); len(got) != 1 {
			t.Fatalf("carol got %d private messages %v, want only the marker", len(got), got)
		}
	})

	t.Run("a DM between users of edge 2 never reaches edge 1's partition", func(t *testing.T) {
		bobWS, _, err := websocket.DefaultDialer.Dial("ws://"+edge2.addr+"/ws?token="+mpToken(t, "dave"), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer bobWS.Close()
		dave := collect(bobWS)
		waitFor(t, 10*time.Second, "dave online", func() bool { on, _ := presenceOf(t, router, "dave"); return on })
		bobWS.WriteJSON(map[string]string{"type": "private", "target": "bob", "content": "edge 2 only", "client_id": "d2"})
		waitFor(t, 10*time.Second, "bob gets dave's DM", func() bool { return len(bobOn2.ofType("private")) == 2 && len(dave.ofType("private")) == 1 })
		// The router has written the records of dave's DM (bob has it).
		// A marker between users of edge 1, routed after it, is written to
		// edge 1's partition after anything written there for dave's DM:
		// read the partition up to the marker.
		alice1.WriteJSON(map[string]string{"type": "private", "target": "carol", "content": "edge 1 marker", "client_id": "m2"})
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: []string{brokerAddr}, Topic: "chat.deliveries", Partition: edge1Part, MaxBytes: 1 << 20, MaxWait: 100 * time.Millisecond})
		defer r.Close()
		r.SetOffset(startOff[edge1Part])
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		for {
			m, err := r.ReadMessage(ctx)
			if err != nil {
				t.Fatalf("edge 1's marker not in its deliveries partition: %v", err)
			}
			if string(m.Key) != "edge1" {
				continue
			}
			if strings.Contains(string(m.Value), "edge 2 only") {
				t.Fatalf("edge 1's deliveries partition got the DM between dave and bob")
			}
			if strings.Contains(string(m.Value), "edge 1 marker") {
				break
			}
		}
	})

	t.Run("dm history", func(t *testing.T) {
		var res struct{ Messages []map[string]any }
		waitFor(t, 30*time.Second, "the DM in history", func() bool {
			return apiGet(t, hist.addr, "bob", "/v1/dm/alice/messages", &res) == 200 && len(res.Messages) == 1
		})
		if res.Messages[0]["content"] != "psst bob" || res.Messages[0]["pos"] != bobOn2.ofType("private")[0]["pos"] {
			t.Fatalf("history has %v, want the DM with the pos bob saw", res.Messages[0])
		}
	})

	t.Run("a stalled edge's users are online again when it resumes", func(t *testing.T) {
		// Stopped longer than the edge timeout, edge 1 is expired by the
		// router, which kept running; its connections stay open.
		if err := edge1.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		stopped := true
		defer func() {
			if stopped {
				edge1.cmd.Process.Signal(syscall.SIGCONT)
			}
		}()
		waitFor(t, 20*time.Second, "edge 1 expired: carol offline", func() bool { on, _ := presenceOf(t, router, "carol"); return !on })
		edge1.cmd.Process.Signal(syscall.SIGCONT)
		stopped = false
		t0 := time.Now()
		waitFor(t, 20*time.Second, "carol online and alice on both edges again", func() bool {
			onC, _ := presenceOf(t, router, "carol")
			_, a := presenceOf(t, router, "alice")
			return onC && a == 2
		})
		t.Logf("presence back %v after the edge resumed", time.Since(t0).Round(10*time.Millisecond))
		// And it stays so (longer than an edge timeout), and DMs reach her.
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			if on, _ := presenceOf(t, router, "carol"); !on {
				t.Fatal("carol went offline again")
			}
			time.Sleep(200 * time.Millisecond)
		}
		erin, _ := mpDial(t, edge2, "erin")
		erin.WriteJSON(map[string]string{"type": "private", "target": "carol", "content": "after the stall", "client_id": "st1"})
		waitFor(t, 10*time.Second, "carol gets the DM live", func() bool {
			for _, f := range carolOn1.ofType("private") {
				if f["content"] == "after the stall" {
					return true
				}
			}
			return false
		})
	})

	t.Run("a stopped router expires no edge when it resumes", func(t *testing.T) {
		leavesBefore := len(carolOn1.ofType("leave"))
		if err := router.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Second) // longer than the edge timeout (4s)
		if err := router.cmd.Process.Signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(4 * time.Second)
		for time.Now().Before(deadline) {
			onC, _ := presenceOf(t, router, "carol")
			_, a := presenceOf(t, router, "alice")
			if !onC || a != 2 {
				t.Fatalf("after the router's stop: carol online %v, alice on %d edges; want online, 2", onC, a)
			}
			time.Sleep(100 * time.Millisecond)
		}
		if n := len(carolOn1.ofType("leave")); n != leavesBefore {
			t.Fatalf("carol got %d leave events after the router's stop", n-leavesBefore)
		}
	})

	t.Run("SIGKILL of edge 2 makes bob offline and emits his leave", func(t *testing.T) {
		edge2.cmd.Process.Kill()
		edge2.cmd.Wait()
		t0 := time.Now()
		waitFor(t, 20*time.Second, "bob offline", func() bool { on, n := presenceOf(t, router, "bob"); return !on && n == 0 })
		if on, n := presenceOf(t, router, "alice"); !on || n != 1 {
			t.Fatalf("alice = online %v with %d connections, want online with 1 (edge 1)", on, n)
		}
		waitFor(t, 20*time.Second, "bob's leave event in general", func() bool {
			for _, f := range carolOn1.ofType("leave") {
				if f["username"] == "bob" && f["room"] == "general" {
					return true
				}
			}
			return false
		})
		// alice's second connection was in general on edge 2 too, but she
		// is still there on edge 1: no leave for her (the router writes an
		// expired edge's leaves in one batch, so bob's came with it).
		for _, f := range carolOn1.ofType("leave") {
			if f["username"] == "alice" {
				t.Fatalf("carol got %v, but alice is still in general on edge 1", f)
			}
		}
		t.Logf("bob offline and his leave delivered %v after the kill (edge timeout 4s)", time.Since(t0).Round(10*time.Millisecond))
	})

	t.Run("a restarted router answers presence correctly", func(t *testing.T) {
		router.cmd.Process.Signal(syscall.SIGTERM)
		router.cmd.Wait()
		r2 := startProc(t, env, "router2", "-target=router")
		waitFor(t, 10*time.Second, "rebuilt presence", func() bool {
			onA, a := presenceOf(t, r2.addr, "alice")
			onB, _ := presenceOf(t, r2.addr, "bob")
			onC, _ := presenceOf(t, r2.addr, "carol")
			return onA && a == 1 && !onB && onC
		})
		var m struct{ Members []string }
		if apiGet(t, r2.addr, "x", "/v1/rooms/general/members", &m); strings.Join(m.Members, ",") != "alice,carol" {
			t.Fatalf("members after restart = %v, want alice,carol", m.Members)
		}
	})
}
