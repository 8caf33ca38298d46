// Command chatbench benchmarks the chat on loopback, each system under test
// running as child processes measured as whole process trees (CPU time and
// memory of every descendant: bin/chat -target=all includes its
// PostgreSQL). Where there is a peer to compare with, the baseline is
// gorilla/websocket's chat example as it ships (go install
// github.com/gorilla/websocket/examples/chat@v1.5.3 into bin/tools), run in
// the same invocation, and ratios chat/example are printed.
//
//	chatbench fanout     K subscribers in one room, one publisher stepping its rate (vs the example)
//	chatbench setup      connection setup rate, JWT verification included (vs the example)
//	chatbench idle       resident memory per idle connection (vs the example)
//	chatbench rooms      1 000 rooms × 10 subscribers, stepped aggregate rates: ack and delivery p99
//	chatbench unserved   edge CPU per log record of a room it does not serve
//	chatbench dm         private-message latency (two log hops) vs room-message latency; router DMs/s per core
//	chatbench ingest     history writer (log → PostgreSQL) vs a bare COPY; API latency
//	chatbench analytics  the analytics job from JSON lines and from the log vs an encoding/json baseline
//	chatbench storm      reconnect storm: SIGTERM drains edge A, N clients resume on edge B with since; gaps, duplicates, edge B's memory and CPU
//
// Build the chat first (make build). See bench/README.md.
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"
)

// secret signs the benchmark's tokens; the chat gets it as CHAT_JWT_SECRET.
const secret = "bench-secret-0123456789abcdef"

var commands = map[string]func([]string) error{
	"fanout":             fanout,
	"setup":              setupBench,
	"idle":               idle,
	"rooms":              roomsBench,
	"unserved":           unserved,
	"dm":                 dmBench,
	"ingest":             ingest,
	"analytics":          analyticsBench,
	"analytics-baseline": analyticsBaseline,
	"storm":              stormBench,
}

func printUsage() {
	fmt.Fprintln(os.Stderr, "usage: chatbench [-timeout d] fanout|setup|idle|rooms|unserved|dm|ingest|analytics|storm [flags]   (chatbench <command> -h for its flags)")
}

func main() {
	fs := flag.NewFlagSet("chatbench", flag.ExitOnError)
	fs.Usage = printUsage
	timeout := fs.Duration("timeout", 45*time.Minute, "stop everything (servers included) and fail after this long")
	fs.Parse(os.Args[1:])
	if fs.NArg() < 1 || commands[fs.Arg(0)] == nil {
		printUsage()
		os.Exit(2)
	}
	// Whatever happens, the servers we started do not outlive us.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		select {
		case s := <-sig:
			fmt.Fprintf(os.Stderr, "chatbench: %v: stopping the servers\n", s)
		case <-time.After(*timeout):
			fmt.Fprintf(os.Stderr, "chatbench: -timeout %v reached: stopping the servers\n", *timeout)
		}
		stopAll()
		os.Exit(1)
	}()
	err := commands[fs.Arg(0)](fs.Args()[1:])
	stopAll()
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

func cores() string { return fmt.Sprintf("%d cores", runtime.NumCPU()) }
