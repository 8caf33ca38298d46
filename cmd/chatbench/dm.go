package main

import (
	"bytes"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/chatsys/chat/pkg/auth"
)

// dmBench measures private-message latency (edge → chat.direct → router →
// chat.deliveries → edge: two log hops) against room-message latency (one
// hop) in the same run, with K users connected, and the router's
// throughput per core. Broker, router and edge are separate processes.
func dmBench(args []string) error {
	fs := flag.NewFlagSet("dm", flag.ExitOnError)
	k := fs.Int("k", 1000, "connected users")
	rates := fs.String("rates", "100,1000,2000", "messages per second")
	dur := fs.Duration("step", 5*time.Second, "duration of each step")
	chatBin := fs.String("chat", "bin/chat", "path of the chat binary")
	syncWrites := fs.Bool("sync-writes", true, "the embedded broker fsyncs every batch (-broker.sync-writes)")
	fs.Parse(args)
	bin, err := filepath.Abs(*chatBin)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "chatbench-dm-")
	if err != nil {
		return err
	}
	// Broker, router and edge are one system: stopped together (edge
	// first), whatever happens.
	sys := &server{name: "chat", label: "bin/chat broker + router + edge", dir: dir, chat: true}
	runningMu.Lock()
	running[sys] = true
	runningMu.Unlock()
	defer sys.stop()
	broker := freeAddr()
	env := cleanEnv("CHAT_KAFKA_BROKERS="+broker, "CHAT_JWT_SECRET="+secret, "CHAT_DATA_DIR="+dir, "CHAT_LOG_LEVEL=warn")
	start := func(name string, args ...string) (*exec.Cmd, string, error) {
		addr := freeAddr()
		if err := sys.launch(name, dir, env, false, bin, append([]string{"-http.addr=" + addr}, args...)...); err != nil {
			return nil, "", err
		}
		if err := waitHTTP(addr, "/readyz", 60*time.Second); err != nil {
			return nil, "", sys.failed(err)
		}
		return sys.cmds[len(sys.cmds)-1], addr, nil
	}
	_, _, err = start("broker", "-target=broker", "-broker.addr="+broker, "-broker.sync-writes="+strconv.FormatBool(*syncWrites))
	if err != nil {
		return err
	}
	rt, raddr, err := start("router", "-target=router")
	if err != nil {
		return err
	}
	_, eaddr, err := start("edge", "-target=edge", "-edge.id=bench-edge", "-edge.rate=1e9", "-edge.rate-burst=1000000000")
	if err != nil {
		return err
	}

	m := auth.NewHS256Minter(secret, "")
	type user struct {
		ws *websocket.Conn
		mu sync.Mutex
	}
	users := make([]*user, *k)
	var lmu sync.Mutex
	lat := map[string][]time.Duration{}
	var phase string
	for i := range users {
		tok, _ := m.Mint(fmt.Sprint("u", i), false, time.Hour)
		ws, _, err := websocket.DefaultDialer.Dial("ws://"+eaddr+"/ws?token="+tok, nil)
		if err != nil {
			return fmt.Errorf("user %d: %w", i, err)
		}
		defer ws.Close()
		users[i] = &user{ws: ws}
		ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"join","room":"r`+strconv.Itoa(i%100)+`"}`))
		me := fmt.Sprint("u", i)
		go func() {
			for {
				_, msg, err := ws.ReadMessage()
				now := time.Now()
				if err != nil {
					return
				}
				ns, _, ok := parseStamp(msg, contentKey)
				if !ok {
					continue
				}
				// Count the recipient's copy only: not the sender's echo.
				if bytes.Contains(msg, []byte(`"username":"`+me+`"`)) {
					continue
				}
				lmu.Lock()
				lat[phase] = append(lat[phase], now.Sub(time.Unix(0, ns)))
				lmu.Unlock()
			}
		}()
	}
	// Wait until the router sees everyone.
	tok, _ := m.Mint("bench", false, time.Hour)
	deadline := time.Now().Add(60 * time.Second)
	for {
		req, _ := http.NewRequest("GET", "http://"+raddr+"/v1/presence?user=u0&user=u"+strconv.Itoa(*k-1), nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			var body bytes.Buffer
			body.ReadFrom(resp.Body)
			resp.Body.Close()
			if strings.Count(body.String(), `"online":true`) == 2 {
				break
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("router did not see the users online")
		}
		time.Sleep(100 * time.Millisecond)
	}
	r := rand.New(rand.NewPCG(5, 6))
	fmt.Printf("K=%d users on one edge; rooms of %d members; steps of %v\n", *k, *k/100, *dur)
	fmt.Printf("%-6s %6s %9s %10s %10s %9s\n", "kind", "rate", "received", "p50", "p99", "router")
	for _, rs := range strings.Split(*rates, ",") {
		rate, _ := strconv.Atoi(rs)
		for _, kind := range []string{"room", "dm"} {
			lmu.Lock()
			phase = kind + rs
			lmu.Unlock()
			cpu0, _ := procStat(rt.Process.Pid)
			t0 := time.Now()
			sent := 0
			for next := t0; time.Since(t0) < *dur; next = next.Add(time.Second / time.Duration(rate)) {
				if d := time.Until(next); d > 0 {
					time.Sleep(d)
				}
				i := r.IntN(*k)
				ts := string(appendStamp(nil, time.Now(), 0))
				var frame string
				if kind == "room" {
					frame = `{"type":"chat","room":"r` + strconv.Itoa(i%100) + `","content":"` + ts + `","client_id":"` + strconv.Itoa(sent) + `"}`
				} else {
					frame = `{"type":"private","target":"u` + strconv.Itoa(r.IntN(*k)) + `","content":"` + ts + `","client_id":"` + strconv.Itoa(sent) + `"}`
				}
				u := users[i]
				u.mu.Lock()
				u.ws.WriteMessage(websocket.TextMessage, []byte(frame))
				u.mu.Unlock()
				sent++
			}
			time.Sleep(2 * time.Second)
			cpu1, _ := procStat(rt.Process.Pid)
			lmu.Lock()
			ls := append([]time.Duration(nil), lat[phase]...)
			lmu.Unlock()
			sort.Slice(ls, func(a, b int) bool { return ls[a] < ls[b] })
			p := func(q float64) time.Duration {
				if len(ls) == 0 {
					return 0
				}
				return ls[min(len(ls)-1, int(float64(len(ls))*q))].Round(10 * time.Microsecond)
			}
			routerNote := ""
			if kind == "dm" {
				used := (cpu1 - cpu0).Seconds()
				routerNote = fmt.Sprintf("%.2f cores, %.0f DMs/s per core", used/(dur.Seconds()+2), float64(sent)/used)
			}
			fmt.Printf("%-6s %6d %9d %10v %10v %s\n", kind, rate, len(ls), p(0.5), p(0.99), routerNote)
		}
	}
	return nil
}
