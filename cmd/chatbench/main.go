// Command chatbench measures the edge against a bare gorilla/websocket
// broadcast hub in the same run, on loopback only.
//
//	chatbench fanout   K subscribers in one room, one publisher stepping its rate
//	chatbench idle     resident memory per idle connection at N connections
//	chatbench ingest   history writer (log → PostgreSQL) vs a bare COPY; API latency
//	chatbench analytics  the analytics job from JSON lines and from the log vs an encoding/json baseline
//	chatbench dm       private-message latency (two log hops) vs room-message latency; router DMs/s per core
//
// Both servers run as child processes so their CPU and memory are measured
// apart from the load generator: the edge is bin/chat -target=all (build it
// first: make build), the hub is this binary's serve-hub subcommand.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/chatsys/chat/pkg/auth"
)

const secret = "bench-secret-0123456789abcdef"

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: chatbench fanout|idle|serve-hub [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "serve-hub":
		err = serveHub(os.Args[2])
	case "fanout":
		err = fanout(os.Args[2:])
	case "idle":
		err = idle(os.Args[2:])
	case "ingest":
		err = ingest(os.Args[2:])
	case "analytics":
		err = analyticsBench(os.Args[2:])
	case "dm":
		err = dmBench(os.Args[2:])
	case "analytics-baseline":
		err = analyticsBaseline(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "chatbench:", err)
		os.Exit(1)
	}
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// target is a server under test, running as a child process.
type target struct {
	name   string
	addr   string
	cmd    *exec.Cmd
	edge   bool
	broker *exec.Cmd // the edge's broker process
	token  func(user string) string
}

func startHub() (*target, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	addr := freeAddr()
	cmd := exec.Command(self, "serve-hub", addr)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	t := &target{name: "bare-hub", addr: addr, cmd: cmd, token: func(string) string { return "" }}
	return t, waitHTTP(addr, "/ws", 10*time.Second)
}

// startEdge runs an embedded broker and an edge as two processes (chat
// -target=broker, chat -target=edge), so the edge's CPU and memory are its
// own; history, router and PostgreSQL are not in this path.
func startEdge(chatBin string, extra ...string) (*target, error) {
	addr, broker := freeAddr(), freeAddr()
	dir, err := os.MkdirTemp("", "chatbench-")
	if err != nil {
		return nil, err
	}
	env := append(os.Environ(), "CHAT_JWT_SECRET="+secret, "CHAT_KAFKA_BROKERS="+broker, "CHAT_DATA_DIR="+dir, "CHAT_LOG_LEVEL=warn")
	b := exec.Command(chatBin, "-target=broker", "-broker.addr="+broker, "-http.addr="+freeAddr())
	b.Env, b.Stderr = env, os.Stderr
	if err := b.Start(); err != nil {
		return nil, fmt.Errorf("start %s (run make build first): %w", chatBin, err)
	}
	args := append([]string{"-target=edge", "-http.addr=" + addr, "-edge.rate=1e9", "-edge.rate-burst=1000000000", "-http.pprof"}, extra...)
	cmd := exec.Command(chatBin, args...)
	cmd.Env, cmd.Stderr = env, os.Stderr
	if err := cmd.Start(); err != nil {
		b.Process.Kill()
		return nil, err
	}
	m := auth.NewHS256Minter(secret, "")
	t := &target{name: "edge", addr: addr, cmd: cmd, edge: true, broker: b, token: func(u string) string {
		tok, _ := m.Mint(u, false, time.Hour)
		return tok
	}}
	return t, waitHTTP(addr, "/readyz", 30*time.Second)
}

// startTarget starts the bare hub or the edge (with its broker).
func startTarget(name, chatBin string) (*target, error) {
	if name == "hub" {
		return startHub()
	}
	bin, err := filepath.Abs(chatBin)
	if err != nil {
		return nil, err
	}
	return startEdge(bin)
}

func (t *target) stop() {
	if t.broker != nil {
		defer func() { t.broker.Process.Signal(os.Interrupt); t.broker.Wait() }()
	}
	t.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { t.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.cmd.Process.Kill()
		<-done
	}
}

func waitHTTP(addr, path string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + addr + path)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode < 500 {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s%s not ready after %v", addr, path, d)
}

// procStat returns a process's CPU time and resident set size.
func procStat(pid int) (cpu time.Duration, rss int64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	pages, _ := strconv.ParseInt(f[21], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond, pages * int64(os.Getpagesize())
}

func dial(t *target, user string) (*websocket.Conn, error) {
	h := http.Header{}
	if tok := t.token(user); tok != "" {
		h.Set("Authorization", "Bearer "+tok)
	}
	d := websocket.Dialer{HandshakeTimeout: 30 * time.Second, ReadBufferSize: 1024, WriteBufferSize: 1024}
	ws, _, err := d.Dial("ws://"+t.addr+"/ws", h)
	return ws, err
}

type step struct {
	rate         int
	sent         int64
	delivered    int64
	lat          []time.Duration
	cpu          time.Duration
	wall         time.Duration
	disconnected int64
}

type recorder struct {
	mu   sync.Mutex
	cur  *step
	got  atomic.Int64
	dead atomic.Int64
}

func (r *recorder) record(d time.Duration) {
	r.got.Add(1)
	r.mu.Lock()
	if r.cur != nil {
		r.cur.lat = append(r.cur.lat, d)
	}
	r.mu.Unlock()
}

// sentAt extracts the publish time (Unix ns) that a benchmark message
// carries as its content.
func sentAt(b []byte) (int64, bool) {
	i := bytes.Index(b, []byte(`"content":"`))
	if i < 0 {
		return 0, false
	}
	b = b[i+len(`"content":"`):]
	j := bytes.IndexByte(b, '"')
	if j < 0 {
		return 0, false
	}
	n, err := strconv.ParseInt(string(b[:j]), 10, 64)
	return n, err == nil
}

func fanout(args []string) error {
	fs := flag.NewFlagSet("fanout", flag.ExitOnError)
	k := fs.Int("k", 1000, "subscribers")
	rates := fs.String("rates", "20,50,100,200,500,1000,2000", "publisher rates to step through, messages/s")
	dur := fs.Duration("step", 5*time.Second, "duration of each step")
	chatBin := fs.String("chat", "bin/chat", "path of the chat binary")
	only := fs.String("only", "", "run only this target: hub or edge")
	fs.Parse(args)
	var rs []int
	for _, s := range strings.Split(*rates, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			return err
		}
		rs = append(rs, n)
	}
	fmt.Printf("fan-out: K=%d subscribers, one room, steps of %v; CPU is the server process only (cores)\n", *k, *dur)
	fmt.Printf("%-9s %6s %12s %9s %9s %8s %6s %s\n", "target", "rate", "deliveries/s", "p50", "p99", "loss", "cpu", "dropped")
	results := map[string][]*step{}
	for _, name := range []string{"hub", "edge"} {
		if *only != "" && *only != name {
			continue
		}
		t, err := startTarget(name, *chatBin)
		if err != nil {
			return err
		}
		steps, err := runFanout(t, *k, rs, *dur)
		t.stop()
		if err != nil {
			return err
		}
		results[name] = steps
	}
	summarize(results)
	return nil
}

func runFanout(t *target, k int, rates []int, dur time.Duration) ([]*step, error) {
	rec := &recorder{}
	subs := make([]*websocket.Conn, 0, k)
	defer func() {
		for _, s := range subs {
			s.Close()
		}
	}()
	var ready sync.WaitGroup
	for i := 0; i < k; i++ {
		ws, err := dial(t, fmt.Sprintf("sub%d", i))
		if err != nil {
			return nil, fmt.Errorf("%s: subscriber %d: %w", t.name, i, err)
		}
		subs = append(subs, ws)
		if t.edge {
			ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"join","room":"bench"}`))
		}
		ready.Add(1)
		go func() {
			joined := !t.edge
			if joined {
				ready.Done()
			}
			for {
				_, b, err := ws.ReadMessage()
				now := time.Now()
				if err != nil {
					rec.dead.Add(1)
					if !joined {
						ready.Done()
					}
					return
				}
				// A cheap scan instead of JSON decoding, so the load
				// generator (sharing the machine) stays out of the way.
				if ns, ok := sentAt(b); ok {
					rec.record(now.Sub(time.Unix(0, ns)))
				} else if !joined && bytes.Contains(b, []byte(`"joined"`)) {
					joined = true
					ready.Done()
				}
			}
		}()
	}
	ready.Wait()
	pub, err := dial(t, "publisher")
	if err != nil {
		return nil, err
	}
	defer pub.Close()
	go func() { // drain acks
		for {
			if _, _, err := pub.ReadMessage(); err != nil {
				return
			}
		}
	}()
	var steps []*step
	seq := 0
	for _, rate := range rates {
		st := &step{rate: rate}
		rec.mu.Lock()
		rec.cur = st
		rec.mu.Unlock()
		got0, dead0 := rec.got.Load(), rec.dead.Load()
		cpu0, _ := procStat(t.cmd.Process.Pid)
		t0 := time.Now()
		interval := time.Second / time.Duration(rate)
		next := t0
		for time.Since(t0) < dur {
			seq++
			var frame []byte
			ts := strconv.FormatInt(time.Now().UnixNano(), 10)
			if t.edge {
				frame = []byte(`{"type":"chat","room":"bench","content":"` + ts + `","client_id":"` + strconv.Itoa(seq) + `"}`)
			} else {
				frame = []byte(`{"type":"chat","content":"` + ts + `"}`)
			}
			pub.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if err := pub.WriteMessage(websocket.TextMessage, frame); err != nil {
				fmt.Printf("%-9s publisher disconnected at %d msg/s: %v\n", t.name, rate, err)
				return steps, nil
			}
			st.sent++
			next = next.Add(interval)
			if d := time.Until(next); d > 0 {
				time.Sleep(d)
			}
		}
		st.wall = time.Since(t0)
		// Let in-flight deliveries land (they count toward this step).
		time.Sleep(1500 * time.Millisecond)
		cpu1, _ := procStat(t.cmd.Process.Pid)
		st.cpu = cpu1 - cpu0
		rec.mu.Lock()
		rec.cur = nil
		rec.mu.Unlock()
		st.delivered = rec.got.Load() - got0
		st.disconnected = rec.dead.Load() - dead0
		steps = append(steps, st)
		printStep(t.name, st, k)
		if rec.dead.Load() >= int64(k)/2 {
			fmt.Printf("%-9s stopping: %d of %d subscribers were disconnected\n", t.name, rec.dead.Load(), k)
			break
		}
	}
	return steps, nil
}

func pct(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return ds[min(len(ds)-1, int(float64(len(ds))*p))]
}

func (s *step) loss(k int) float64 {
	want := float64(s.sent) * float64(k)
	if want == 0 {
		return 0
	}
	return max(0, 1-float64(s.delivered)/want)
}

func (s *step) rateOut() float64 { return float64(s.delivered) / s.wall.Seconds() }

func (s *step) ok(k int) bool { return s.loss(k) < 0.01 && pct(s.lat, 0.99) < time.Second }

func printStep(name string, s *step, k int) {
	fmt.Printf("%-9s %6d %12.0f %9s %9s %7.2f%% %6.2f %d\n", name, s.rate, s.rateOut(),
		pct(s.lat, 0.50).Round(10*time.Microsecond), pct(s.lat, 0.99).Round(10*time.Microsecond),
		100*s.loss(k), s.cpu.Seconds()/(s.wall.Seconds()+1.5), s.disconnected)
}

func summarize(res map[string][]*step) {
	hub, edge := res["hub"], res["edge"]
	if hub == nil || edge == nil {
		return
	}
	k := 0 // recover K from the first step: delivered/sent is at most K
	for _, s := range hub {
		if s.sent > 0 {
			k = max(k, int((s.delivered+s.sent-1)/s.sent))
		}
	}
	best := func(ss []*step) (float64, int) {
		var b float64
		r := 0
		for _, s := range ss {
			if s.ok(k) && s.rateOut() > b {
				b, r = s.rateOut(), s.rate
			}
		}
		return b, r
	}
	hb, hr := best(hub)
	eb, er := best(edge)
	fmt.Println()
	fmt.Printf("highest sustained deliveries/s (p99 < 1s, loss < 1%%): hub %.0f (at %d msg/s), edge %.0f (at %d msg/s), ratio edge/hub %.2f\n", hb, hr, eb, er, eb/hb)
	for i := range min(len(hub), len(edge)) {
		if hub[i].rate == 100 {
			hp, ep := pct(hub[i].lat, 0.99), pct(edge[i].lat, 0.99)
			fmt.Printf("p99 at 100 msg/s: hub %v, edge %v, ratio edge/hub %.2f\n", hp.Round(10*time.Microsecond), ep.Round(10*time.Microsecond), float64(ep)/float64(hp))
		}
	}
}

func idle(args []string) error {
	fs := flag.NewFlagSet("idle", flag.ExitOnError)
	n := fs.Int("n", 10000, "connections")
	chatBin := fs.String("chat", "bin/chat", "path of the chat binary")
	hold := fs.Duration("hold", 3*time.Second, "how long the connections stay idle before measuring")
	fs.Parse(args)
	fmt.Printf("idle memory: %d connections, RSS growth of the server process per connection\n", *n)
	for _, name := range []string{"hub", "edge"} {
		t, err := startTarget(name, *chatBin)
		if err != nil {
			return err
		}
		time.Sleep(time.Second)
		_, rss0 := procStat(t.cmd.Process.Pid)
		m0 := goMem(t)
		conns := make([]*websocket.Conn, 0, *n)
		for i := 0; i < *n; i++ {
			ws, err := dial(t, fmt.Sprintf("u%d", i))
			if err != nil {
				t.stop()
				return fmt.Errorf("%s: connection %d: %w", name, i, err)
			}
			if t.edge {
				ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"join","room":"lobby"}`))
			}
			conns = append(conns, ws)
			go func() {
				for {
					if _, _, err := ws.ReadMessage(); err != nil {
						return
					}
				}
			}()
		}
		time.Sleep(*hold)
		_, rss1 := procStat(t.cmd.Process.Pid)
		fmt.Printf("%-9s rss before %6.1f MiB, after %6.1f MiB: %.1f KiB per connection\n", name,
			float64(rss0)/(1<<20), float64(rss1)/(1<<20), float64(rss1-rss0)/float64(*n)/1024)
		if m1 := goMem(t); m0 != nil && m1 != nil {
			for _, k := range []string{"go_memstats_stack_inuse_bytes", "go_memstats_heap_inuse_bytes", "go_goroutines"} {
				fmt.Printf("%-9s   %s: %.1f per connection\n", "", k, (m1[k]-m0[k])/float64(*n))
			}
		}
		for _, c := range conns {
			c.Close()
		}
		t.stop()
	}
	return nil
}

// goMem reads a few Go runtime gauges from the edge's /metrics (nil for the hub).
func goMem(t *target) map[string]float64 {
	if !t.edge {
		return nil
	}
	resp, err := http.Get("http://" + t.addr + "/metrics")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	out := map[string]float64{}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) == 2 && strings.HasPrefix(f[0], "go_") {
			out[f[0]], _ = strconv.ParseFloat(f[1], 64)
		}
	}
	return out
}
