package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"

	"github.com/chatsys/chat/pkg/auth"
)

// storm: a reconnect storm after a SIGTERM drain. A broker and two edge
// processes (A and B). N clients on edge A in R rooms, a control group and
// the publishers on edge B; the publishers write a per-room sequence number
// and a send time into every message. Edge A gets SIGTERM and spreads
// close 1001 over its drain window (the default 10 s); every client
// reconnects to edge B and joins with since = the newest pos it received.
// At the end every client's sequence numbers must be contiguous from its
// first to the last one published, with no duplicate, across the
// reconnect. Reported: how long the storm took, resume latencies, edge B's
// memory and CPU before, during and after, and the control group's
// delivery latency before and during.
func stormBench(args []string) error {
	fs := flag.NewFlagSet("storm", flag.ExitOnError)
	chatBin := fs.String("chat", "bin/chat", "path of the chat binary (make build)")
	verbose := fs.Bool("v", false, "servers write their logs to stderr (default: to files in their temporary directory)")
	n := fs.Int("n", 5000, "clients on edge A (each its own user and connection), moved to edge B by the drain")
	nRooms := fs.Int("rooms", 100, "rooms the clients on edge A are spread over (one room each)")
	nCtl := fs.Int("control", 200, "control clients on edge B (never moved), in their own rooms")
	nCtlRooms := fs.Int("control-rooms", 20, "rooms of the control group")
	nPubs := fs.Int("publishers", 10, "publisher connections on edge B; each owns every publishers-th room")
	rate := fs.Float64("rate", 500, "aggregate publish rate over all rooms (storm and control), messages/s")
	size := fs.Int("size", 64, "message content bytes")
	warmup := fs.Duration("warmup", 3*time.Second, "publishing before the 'before' window (not reported)")
	before := fs.Duration("before", 10*time.Second, "publishing before the SIGTERM (the 'before' window)")
	timeline := fs.Duration("timeline", 2*time.Second, "interval of the timeline table (0: none)")
	after := fs.Duration("after", 5*time.Second, "publishing after the last client resumed")
	resumeTimeout := fs.Duration("resume-timeout", 180*time.Second, "longest wait after the SIGTERM for every client to resume")
	drain := fs.Duration("drain", 15*time.Second, "longest wait after publishing stopped for the last acks and deliveries")
	backoff := fs.Duration("backoff", 250*time.Millisecond, "a client waits a random 0..backoff before it reconnects")
	conc := fs.Int("dialers", 50, "concurrent dialers for the initial connections")
	edgeFlags := fs.String("edge-flags", "", "extra flags for both edges, space-separated (e.g. -edge.max-replays=128); default: none, as a user runs them")
	profile := fs.String("profile", "", "directory: both edges run with -http.pprof; saved there: edge B's goroutines and a 5 s CPU profile from 3 s after the SIGTERM, heap profiles (after a GC) of edge A before its SIGTERM and of edge B at the end")
	fs.Parse(args)
	if *n < 1 || *nRooms < 1 || *nCtl < 0 || *nCtlRooms < 1 || *nPubs < 1 || *rate <= 0 || *conc < 1 {
		return errors.New("storm: -n, -rooms, -control-rooms, -publishers, -rate and -dialers must be positive")
	}

	st := &storm{nStorm: *n, nRooms: *nRooms, backoff: *backoff, dialSem: make(chan struct{}, *conc)}
	extra := strings.Fields(*edgeFlags)
	if *profile != "" {
		if err := os.MkdirAll(*profile, 0o755); err != nil {
			return err
		}
		extra = append(extra, "-http.pprof=true")
	}
	if err := st.start(*chatBin, *verbose, extra); err != nil {
		return err
	}
	defer st.sys.stop()
	total := *nRooms + *nCtlRooms
	st.rooms = make([]stormRoom, total)
	for i := range st.rooms {
		r := &st.rooms[i]
		if i < *nRooms {
			r.name = "storm" + itoa(i)
		} else {
			r.name = "ctl" + itoa(i-*nRooms)
		}
		r.key = []byte(`"room":"` + r.name + `"`)
	}
	fmt.Printf("storm: N=%d clients on edge A over %d rooms; %d control clients on edge B in %d rooms; %d publishers on edge B at %.0f msg/s over all %d rooms (%.1f msg/s per room), %d-byte contents\n",
		*n, *nRooms, *nCtl, *nCtlRooms, *nPubs, *rate, total, *rate/float64(total), *size)
	fmt.Printf("system: %s (edge A pid %d, edge B pid %d); edge A drains with the default -edge.drain-duration (10s); machine: %s\n",
		st.sys.label, st.pidA, st.pidB, cores())
	settle(st.sys, 10*time.Second)
	rss0B := procRSS(st.pidB)

	// Clients: the storm group on A, the control group on B.
	m := st.sys.minter
	st.clients = make([]*stormClient, *n+*nCtl)
	for i := range st.clients {
		c := &stormClient{st: st, idx: i, part: -1}
		if i < *n {
			c.room, c.user, c.target = i%*nRooms, "st"+itoa(i), st.edgeA
		} else {
			j := i - *n
			c.control, c.room, c.user, c.target = true, *nRooms+j%*nCtlRooms, "ct"+itoa(j), st.edgeB
		}
		tok, err := m.Mint(c.user, false, 6*time.Hour)
		if err != nil {
			return err
		}
		c.tok = tok
		st.clients[i] = c
	}
	t0 := time.Now()
	st.initJoined.Add(len(st.clients))
	for _, c := range st.clients {
		st.wg.Add(1)
		go c.run()
	}
	joined := make(chan struct{})
	go func() { st.initJoined.Wait(); close(joined) }()
	select {
	case <-joined:
	case <-time.After(120 * time.Second):
		st.stopClients()
		return errors.New("not every client joined its room within 120s")
	}
	if f := st.initFailed.Load(); f > 0 {
		st.stopClients()
		return fmt.Errorf("%d clients could not connect: %v", f, st.firstErr.Load())
	}
	fmt.Printf("connected and joined: %d clients on edge A, %d on edge B in %.1fs\n", *n, *nCtl, time.Since(t0).Seconds())

	// Publishers on B, each owning every nPubs-th room.
	pubs := make([]*stormPub, *nPubs)
	for p := range pubs {
		ws, err := dialWS(st.edgeB, st.sys.token("pub"+itoa(p)))
		if err != nil {
			st.stopClients()
			return fmt.Errorf("publisher %d: %w", p, err)
		}
		pub := &stormPub{st: st, ws: ws}
		for r := p; r < total; r += *nPubs {
			pub.rooms = append(pub.rooms, r)
		}
		pubs[p] = pub
		go pub.readAcks()
	}
	settle(st.sys, 5*time.Second)
	rss1B := procRSS(st.pidB)

	// The samplers: edge B's RSS and CPU every 100 ms, its /metrics every
	// 500 ms, edge A's exit.
	smp := &stormSampler{st: st, done: make(chan struct{})}
	smp.wg.Add(2)
	go smp.procLoop()
	go smp.metricsLoop()

	// Warm-up, then the 'before' window: publishing, no storm.
	var pubWG sync.WaitGroup
	for _, p := range pubs {
		pubWG.Add(1)
		go func() { defer pubWG.Done(); p.publish(*rate/float64(*nPubs), *size) }()
	}
	var marks [5]stormMark // publishing, before, SIGTERM, last resume, publishing stopped
	marks[0] = st.mark()
	time.Sleep(*warmup)
	marks[1] = st.mark()
	time.Sleep(*before)
	// Every client on A needs a pos to resume from.
	for wait := time.Now(); time.Since(wait) < 10*time.Second && st.withPos() < *n; {
		time.Sleep(100 * time.Millisecond)
	}
	noPos := *n - st.withPos()

	// The storm.
	if *profile != "" {
		// A garbage collection first (gc=1), so the heap figures below are live memory.
		if err := saveURL("http://"+st.edgeA.addr+"/debug/pprof/heap?gc=1", filepath.Join(*profile, "edge-a-heap-before-sigterm.pprof")); err != nil {
			fmt.Fprintf(os.Stderr, "chatbench storm: profile: %v\n", err)
		}
	}
	metA, rssA := scrapeMetrics(st.edgeA.addr), procRSS(st.pidA)
	marks[2] = st.mark()
	tSig := marks[2].t
	st.tSig.Store(tSig.UnixNano())
	if err := syscall.Kill(st.pidA, syscall.SIGTERM); err != nil {
		st.stopClients()
		return fmt.Errorf("SIGTERM edge A: %w", err)
	}
	var profWG sync.WaitGroup
	if *profile != "" {
		profWG.Add(1)
		go func() {
			defer profWG.Done()
			time.Sleep(3 * time.Second)
			for _, f := range []struct{ path, file string }{
				{"/debug/pprof/goroutine?debug=1", "edge-b-goroutines.txt"},
				{"/debug/pprof/profile?seconds=5", "edge-b-cpu.pprof"},
				{"/debug/pprof/goroutine?debug=1", "edge-b-goroutines-8s.txt"},
			} {
				if err := saveURL("http://"+st.edgeB.addr+f.path, filepath.Join(*profile, f.file)); err != nil {
					fmt.Fprintf(os.Stderr, "chatbench storm: profile: %v\n", err)
				}
			}
		}()
	}
	fmt.Printf("warm-up %v, before %v of publishing; SIGTERM to edge A (%d clients without a pos to resume from)\n",
		*warmup, marks[2].t.Sub(marks[1].t).Round(time.Millisecond), noPos)
	lastProgress, lastCount := time.Now(), int64(-1)
	for st.settled.Load() < int64(*n) && time.Since(tSig) < *resumeTimeout {
		time.Sleep(20 * time.Millisecond)
		if time.Since(lastProgress) >= 5*time.Second {
			if c := st.settled.Load(); c != lastCount {
				fmt.Printf("  +%4.1fs: %d of %d resumed on edge B\n", time.Since(tSig).Seconds(), c, *n)
				lastCount = c
			}
			lastProgress = time.Now()
		}
	}
	unresumed := int64(*n) - st.settled.Load()

	// After the last resume: publishing goes on for a while.
	marks[3] = st.mark()
	time.Sleep(*after)
	st.pubStop.Store(true)
	pubWG.Wait()
	marks[4] = st.mark()
	// Drain: every ack, then every client has the last acknowledged
	// message of its room.
	tStop := marks[4].t
	for time.Since(tStop) < *drain && (st.acks.Load()+st.errs.Load() < st.sent.Load() || !st.allCaughtUp()) {
		time.Sleep(20 * time.Millisecond)
	}
	drained := time.Since(tStop)
	time.Sleep(200 * time.Millisecond)
	close(smp.done)
	smp.wg.Wait()
	profWG.Wait()
	if *profile != "" {
		if err := saveURL("http://"+st.edgeB.addr+"/debug/pprof/heap?gc=1", filepath.Join(*profile, "edge-b-heap-end.pprof")); err != nil {
			fmt.Fprintf(os.Stderr, "chatbench storm: profile: %v\n", err)
		}
	}
	rssEndB := procRSS(st.pidB)
	endMetrics := scrapeMetrics(st.edgeB.addr)
	st.stopClients()
	for _, p := range pubs {
		closeAll([]*websocket.Conn{p.ws})
	}

	// Verification.
	v := st.verify()
	logNotes := st.logNotes()

	// Report.
	fmt.Println()
	last, firstClose, lastClose := st.resumeSpan()
	sec := func(ns int64) string {
		if ns == 0 {
			return "-"
		}
		return fmt.Sprintf("%.2fs", time.Duration(ns-tSig.UnixNano()).Seconds())
	}
	stormDur := time.Duration(last - tSig.UnixNano())
	fmt.Printf("storm: SIGTERM → last client resumed %s (edge A's closes 1001 from %s to %s; edge A exited at %s)\n",
		sec(last), sec(firstClose), sec(lastClose), sec(smp.aExit.Load()))
	if last > 0 {
		fmt.Printf("resumes: %d of %d, %.0f resumes/s (SIGTERM → last resume); recovered:true %d, recovered:false %d, joined without since %d, not resumed within %v: %d\n",
			st.settled.Load(), *n, float64(st.settled.Load())/stormDur.Seconds(), st.recTrue.Load(), st.recFalse.Load(), st.noSince.Load(), *resumeTimeout, unresumed)
	}
	fmt.Printf("per resume (p50 / p99 / max): close → resumed %s; reconnect (handshake, backoff excluded) %s; join → joined %s; joined → caught up %s\n",
		st.closeToResume.summary(), st.dialLat.summary(), st.joinLat.summary(), st.catchUp.summary())
	fmt.Printf("edge A delivered %d messages after the SIGTERM; the first message a moved client got on edge B had waited %s since it was sent (p50 / p99 / max)\n",
		st.onAAfterSig.Load(), st.firstOnBDelay.summary())
	fmt.Printf("join retries after an error frame: %d; failed dials: %d; closes: %s\n", st.joinRetries.Load(), st.dialErrors.Load(), st.closeSummary())
	if e, _ := st.firstErr.Load().(string); e != "" {
		fmt.Printf("first error: %s\n", e)
	}
	fmt.Printf("published: %d messages (%d acknowledged, %d error frames, %d unanswered); last deliveries drained in %v\n",
		st.sent.Load(), st.acks.Load(), st.errs.Load(), st.sent.Load()-st.acks.Load()-st.errs.Load(), drained.Round(time.Millisecond))
	if e, _ := st.firstPubErr.Load().(string); e != "" {
		fmt.Printf("first publisher error: %s\n", e)
	}
	fmt.Printf("verification of every client (%d: %d moved + %d control), its room's sequence numbers from the first it received to the last published:\n", len(st.clients), *n, *nCtl)
	fmt.Printf("  gaps: %d missing messages at %d clients; duplicates: %d at %d clients; out of log order: %d; first received > 1: %d clients; other rooms' messages: %d; unacknowledged and not received: %d\n",
		v.missing, v.gapClients, v.dups, v.dupClients, v.posBack, v.lateFirst, v.foreign, v.unackedMissing)
	for _, ex := range v.examples {
		fmt.Println("  " + ex)
	}
	ok := v.missing == 0 && v.dups == 0 && v.posBack == 0 && v.foreign == 0 && st.recFalse.Load() == 0 && unresumed == 0
	if ok {
		fmt.Println("  OK: every client got every message of its room exactly once, in order, across the reconnect")
	} else {
		fmt.Println("  FAILED: see above")
	}

	// Windows: before = [marks[1], SIGTERM), storm = [SIGTERM, last
	// resume], after = (last resume, publishing stopped]. Latencies are
	// counted in the window their message was sent in.
	fmt.Println()
	type window struct{ a, b stormMark }
	wins := []window{{marks[1], marks[2]}, {marks[2], marks[3]}, {marks[3], marks[4]}}
	fmt.Printf("%-38s %12s %12s %12s\n", "window (latency: by send time)", "before", "storm", "after")
	row := func(label string, f func(w window) string) {
		fmt.Printf("%-38s %12s %12s %12s\n", label, f(wins[0]), f(wins[1]), f(wins[2]))
	}
	cores := func(a, b time.Duration, w window) string {
		return fmt.Sprintf("%.2f", (b-a).Seconds()/w.b.t.Sub(w.a.t).Seconds())
	}
	row("duration", func(w window) string { return fmtDur(w.b.t.Sub(w.a.t)) })
	row("edge B cores", func(w window) string { return cores(w.a.cpuB, w.b.cpuB, w) })
	row("edge B peak RSS MiB (100 ms samples)", func(w window) string { return mib(smp.peakRSS(w.a.t, w.b.t)) })
	row("edge B RSS MiB at the end", func(w window) string { return mib(w.b.rssB) })
	row("edge B peak heap in use MiB (/metrics)", func(w window) string {
		return mib(int64(smp.peakMetric("go_memstats_heap_inuse_bytes", w.a.t, w.b.t)))
	})
	row("edge B peak goroutines", func(w window) string { return fmt.Sprintf("%.0f", smp.peakMetric("go_goroutines", w.a.t, w.b.t)) })
	row("edge B peak resumes waiting", func(w window) string {
		return fmt.Sprintf("%.0f", smp.peakMetric("chat_edge_replays_waiting", w.a.t, w.b.t))
	})
	row("edge A cores (exits in the storm)", func(w window) string { return cores(w.a.cpuA, w.b.cpuA, w) })
	row("broker cores", func(w window) string { return cores(w.a.cpuBroker, w.b.cpuBroker, w) })
	row("load generator cores", func(w window) string { return cores(w.a.lg, w.b.lg, w) })
	row("machine busy cores (all processes)", func(w window) string { return cores(w.a.machine, w.b.machine, w) })
	row("others' cores (machine − the above)", func(w window) string {
		ours := (w.b.cpuA - w.a.cpuA) + (w.b.cpuB - w.a.cpuB) + (w.b.cpuBroker - w.a.cpuBroker) + (w.b.lg - w.a.lg)
		return fmt.Sprintf("%.2f", max(0, (w.b.machine-w.a.machine-ours).Seconds()/w.b.t.Sub(w.a.t).Seconds()))
	})
	ctl := func(w window) *hist { return st.latencies(true, w.a.t, w.b.t) }
	moved := func(w window) *hist { return st.latencies(false, w.a.t, w.b.t) }
	row("control delivery p50", func(w window) string { return fmtDur(ctl(w).q(.5)) })
	row("control delivery p99", func(w window) string { return fmtDur(ctl(w).q(.99)) })
	row("control delivery max", func(w window) string { return fmtDur(ctl(w).q(1)) })
	row("control deliveries", func(w window) string { return strconv.FormatInt(ctl(w).n.Load(), 10) })
	row("moved clients' delivery p50", func(w window) string { return fmtDur(moved(w).q(.5)) })
	row("moved clients' delivery p99", func(w window) string { return fmtDur(moved(w).q(.99)) })
	row("moved clients' delivery max", func(w window) string { return fmtDur(moved(w).q(1)) })
	fmt.Printf("edge B RSS: %s MiB idle, %s MiB with the control group and publishers, %s MiB before the SIGTERM, peak %s MiB during the storm, %s MiB at the end\n",
		mib(rss0B), mib(rss1B), mib(marks[2].rssB), mib(smp.peakRSS(marks[2].t, marks[3].t)), mib(rssEndB))

	if metA != nil {
		endB := endMetrics
		if endB == nil {
			endB = map[string]float64{}
		}
		if *profile != "" {
			fmt.Print("(after a garbage collection) ")
		} else {
			fmt.Print("(heap in use includes garbage not yet collected; -profile collects first) ")
		}
		fmt.Printf("for comparison, joined without since: edge A just before its SIGTERM had %.0f connections, RSS %s MiB, heap in use %s MiB, %.0f goroutines; edge B at the end %.0f connections, RSS %s MiB, heap in use %s MiB, %.0f goroutines\n",
			metA["chat_edge_connections"], mib(rssA), mib(int64(metA["go_memstats_heap_inuse_bytes"])), metA["go_goroutines"],
			endB["chat_edge_connections"], mib(rssEndB), mib(int64(endB["go_memstats_heap_inuse_bytes"])), endB["go_goroutines"])
	}

	// The timeline, by seconds since the SIGTERM (latency: messages sent
	// in the interval).
	if *timeline > 0 {
		fmt.Printf("\ntimeline (every %v from the SIGTERM; latency of the messages sent in the interval):\n", *timeline)
		fmt.Printf("%8s %8s %8s %7s %8s %8s %6s %9s %9s %9s %9s %8s\n", "t", "resumed", "waiting", "B cores", "B RSS", "B heap", "gorout", "ctl p50", "ctl p99", "mvd p50", "mvd p99", "machine")
		for a := marks[1].t.Sub(tSig).Truncate(*timeline); tSig.Add(a).Before(marks[4].t); a += *timeline {
			ta, tb := tSig.Add(a), tSig.Add(a+*timeline)
			resumed := 0
			for _, c := range st.clients[:*n] {
				if c.resumedAt != 0 && c.resumedAt < tb.UnixNano() {
					resumed++
				}
			}
			ch, mh := st.latencies(true, ta, tb), st.latencies(false, ta, tb)
			fmt.Printf("%7.0fs %8d %8.0f %7.2f %8s %8s %6.0f %9s %9s %9s %9s %8.2f\n", a.Seconds(), resumed,
				smp.peakMetric("chat_edge_replays_waiting", ta, tb), smp.cores(ta, tb), mib(smp.peakRSS(ta, tb)),
				mib(int64(smp.peakMetric("go_memstats_heap_inuse_bytes", ta, tb))), smp.peakMetric("go_goroutines", ta, tb),
				fmtDur(ch.q(.5)), fmtDur(ch.q(.99)), fmtDur(mh.q(.5)), fmtDur(mh.q(.99)), smp.machineCores(ta, tb))
		}
		fmt.Println("(resumed: by the interval's end; waiting, B RSS, B heap, gorout: peaks of edge B's samples in the interval; mvd: the moved clients; machine: busy cores of the whole machine)")
	}
	if len(endMetrics) > 0 {
		var ks []string
		for k, val := range endMetrics {
			for _, p := range []string{"chat_edge_closes_total", "chat_edge_errors_total", "chat_edge_handshakes_total", "chat_edge_slow_clients_dropped_total", "chat_edge_duplicate_records_total", "chat_edge_bad_records_total"} {
				if strings.HasPrefix(k, p) && val != 0 {
					ks = append(ks, fmt.Sprintf("%s %.0f", k, val))
				}
			}
		}
		sort.Strings(ks)
		fmt.Printf("edge B counters at the end: %s\n", strings.Join(ks, ", "))
	}
	for _, l := range logNotes {
		fmt.Println(l)
	}
	st.sys.stop()
	if ps := st.cmdA.ProcessState; ps != nil {
		fmt.Printf("edge A exit status: %d\n", ps.ExitCode())
	}
	if !ok {
		return errors.New("storm: the resume guarantee did not hold (see above)")
	}
	return nil
}

// storm is the scenario's shared state.
type storm struct {
	sys          *server
	edgeA, edgeB *server // for dialing only
	pidA, pidB   int
	pidBroker    int
	cmdA         *exec.Cmd
	nStorm       int
	nRooms       int
	backoff      time.Duration
	dialSem      chan struct{}
	rooms        []stormRoom
	clients      []*stormClient

	wg         sync.WaitGroup
	initJoined sync.WaitGroup
	initFailed atomic.Int64
	stopping   atomic.Bool
	tSig       atomic.Int64 // Unix ns of the SIGTERM; 0 before
	cpuA       atomic.Int64 // edge A's CPU time when last read (it exits)

	// resumes
	settled, recTrue, recFalse, noSince atomic.Int64
	joinRetries, dialErrors             atomic.Int64
	closeToResume, dialLat              durs
	firstOnBDelay                       durs
	onAAfterSig                         atomic.Int64
	joinLat, catchUp                    durs
	closeMu                             sync.Mutex
	closes                              map[string]int
	firstErr                            atomic.Value

	// publishing
	pubStop          atomic.Bool
	sent, acks, errs atomic.Int64
	firstPubErr      atomic.Value
}

// stormRoom is one room's publishing state: seq is written by its owning
// publisher only; acked by that publisher's ack reader.
type stormRoom struct {
	name   string
	key    []byte // `"room":"<name>"`
	seq    atomic.Int64
	mu     sync.Mutex
	acked  []bool // by seq
	ackMax atomic.Int64
}

func (r *stormRoom) ack(seq int) {
	r.mu.Lock()
	for len(r.acked) <= seq {
		r.acked = append(r.acked, false)
	}
	r.acked[seq] = true
	r.mu.Unlock()
	for {
		old := r.ackMax.Load()
		if int64(seq) <= old || r.ackMax.CompareAndSwap(old, int64(seq)) {
			return
		}
	}
}

func (r *stormRoom) isAcked(seq int) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return seq < len(r.acked) && r.acked[seq]
}

// start runs a broker, edge B, then edge A (so that stop, last started
// first, stops A before B before the broker), each its own process with
// the harness's clean environment; only edge ids and addresses differ.
func (st *storm) start(chatBin string, verbose bool, extra []string) error {
	bin, err := filepath.Abs(chatBin)
	if err != nil {
		return err
	}
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("%s: %w (run make build first)", chatBin, err)
	}
	dir, err := os.MkdirTemp("", "chatbench-storm-")
	if err != nil {
		return err
	}
	m := auth.NewHS256Minter(secret, "")
	sys := &server{name: "chat", label: "bin/chat -target=broker + 2 × -target=edge", broker: freeAddr(), chat: true, dir: dir, minter: m}
	runningMu.Lock()
	running[sys] = true
	runningMu.Unlock()
	st.sys = sys
	env := chatEnv()
	baddr := freeAddr()
	if err := sys.launch("chat-broker", dir, env, verbose, bin, "-target=broker", "-http.addr="+baddr, "-data.dir="+filepath.Join(dir, "data"), "-broker.addr="+sys.broker); err != nil {
		return sys.failed(err)
	}
	if err := waitHTTP(baddr, "/readyz", 60*time.Second); err != nil {
		return sys.failed(err)
	}
	edge := func(name, id string) (*server, int, error) {
		addr := freeAddr()
		args := append([]string{"-target=edge", "-http.addr=" + addr, "-kafka.brokers=" + sys.broker, "-edge.id=" + id}, extra...)
		if err := sys.launch(name, dir, env, verbose, bin, args...); err != nil {
			return nil, 0, sys.failed(err)
		}
		pid := sys.cmds[len(sys.cmds)-1].Process.Pid
		if err := waitHTTP(addr, "/readyz", 60*time.Second); err != nil {
			return nil, 0, sys.failed(err)
		}
		return &server{name: name, addr: addr, chat: true, minter: m}, pid, nil
	}
	st.pidBroker = sys.cmds[0].Process.Pid
	if st.edgeB, st.pidB, err = edge("chat-edge-b", "storm-edge-b"); err != nil {
		return err
	}
	if st.edgeA, st.pidA, err = edge("chat-edge-a", "storm-edge-a"); err != nil {
		return err
	}
	st.cmdA = sys.cmds[len(sys.cmds)-1]
	sys.addr = st.edgeB.addr
	return nil
}

// stormMark is the counters at a window boundary.
type stormMark struct {
	t                         time.Time
	cpuA, cpuB, cpuBroker, lg time.Duration
	machine                   time.Duration // busy CPU time of the whole machine
	rssB                      int64
	sent, acked, settled      int64
}

func (st *storm) mark() stormMark {
	if a, ok := readProc(st.pidA); ok {
		st.cpuA.Store(int64(a.cpu))
	}
	b, _ := readProc(st.pidB)
	k, _ := readProc(st.pidBroker)
	return stormMark{t: time.Now(), cpuA: time.Duration(st.cpuA.Load()), cpuB: b.cpu, cpuBroker: k.cpu, lg: selfCPU(), machine: machineBusy(), rssB: b.rss,
		sent: st.sent.Load(), acked: st.acks.Load(), settled: st.settled.Load()}
}

// machineBusy is the machine's busy CPU time (all cores) from /proc/stat:
// user, nice, system, irq, softirq and steal.
func machineBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0
	}
	var ticks int64
	for _, i := range []int{1, 2, 3, 6, 7, 8} {
		v, _ := strconv.ParseInt(f[i], 10, 64)
		ticks += v
	}
	return time.Duration(ticks) * clockTick
}

func procRSS(pid int) int64 {
	p, _ := readProc(pid)
	return p.rss
}

// withPos counts the moved clients that have a pos to resume from.
func (st *storm) withPos() int {
	k := 0
	for _, c := range st.clients[:st.nStorm] {
		if c.hasPos.Load() {
			k++
		}
	}
	return k
}

// allCaughtUp reports whether every client has the last acknowledged
// message of its room.
func (st *storm) allCaughtUp() bool {
	for _, c := range st.clients {
		if c.maxSeq.Load() < st.rooms[c.room].ackMax.Load() {
			return false
		}
	}
	return true
}

// stopClients ends every client: no more reconnects, connections reset.
func (st *storm) stopClients() {
	st.stopping.Store(true)
	for _, c := range st.clients {
		if c == nil {
			continue
		}
		if ws := c.conn.Load(); ws != nil {
			closeAll([]*websocket.Conn{ws})
		}
	}
	done := make(chan struct{})
	go func() { st.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		fmt.Fprintln(os.Stderr, "chatbench storm: some clients did not stop within 30s")
	}
}

func (st *storm) recordClose(edge string, err error) {
	code := "no close frame"
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		code = strconv.Itoa(ce.Code)
	}
	phase := "before SIGTERM"
	if st.tSig.Load() != 0 {
		phase = "after SIGTERM"
	}
	st.closeMu.Lock()
	if st.closes == nil {
		st.closes = map[string]int{}
	}
	st.closes["edge "+edge+" "+code+" "+phase]++
	st.closeMu.Unlock()
}

func (st *storm) closeSummary() string {
	st.closeMu.Lock()
	defer st.closeMu.Unlock()
	var out []string
	for k, v := range st.closes {
		out = append(out, fmt.Sprintf("%s ×%d", k, v))
	}
	sort.Strings(out)
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, ", ")
}

// resumeSpan returns (Unix ns) the last resume and the first and last
// close of a moved client's connection to edge A.
func (st *storm) resumeSpan() (last, firstClose, lastClose int64) {
	for _, c := range st.clients[:st.nStorm] {
		last = max(last, c.resumedAt)
		if c.closedAt != 0 {
			if firstClose == 0 || c.closedAt < firstClose {
				firstClose = c.closedAt
			}
			lastClose = max(lastClose, c.closedAt)
		}
	}
	return
}

// stormClient is one user on one connection in one room. Everything but
// the atomics is owned by its goroutine (read by the scenario after the
// goroutine ended).
type stormClient struct {
	st      *storm
	idx     int
	control bool
	room    int
	user    string
	tok     string
	target  *server
	conn    atomic.Pointer[websocket.Conn]
	hasPos  atomic.Bool
	maxSeq  atomic.Int64

	conns     int
	initDone  bool
	part, off int64 // newest pos received
	seqs      []uint32
	lats      []stormLat
	posBack   int
	foreign   int
	joining   bool
	joinSince bool
	joinSent  time.Time
	joinedAt  time.Time
	catchSeq  int64
	catching  bool
	closedAt  int64 // Unix ns: its connection to A ended
	resumedAt int64 // Unix ns: its first joined on B after that
	moved     bool
	resumed   bool
	lastOnA   int64 // newest seq received on A
	firstOnB  int64 // first seq received on B (0: none)
	since     string
	recFalse  bool
}

func (c *stormClient) run() {
	st := c.st
	defer st.wg.Done()
	fails := 0
	for !st.stopping.Load() {
		initial := !c.initDone
		if initial {
			st.dialSem <- struct{}{}
		}
		t0 := time.Now()
		ws, err := dialWS(c.target, c.tok)
		if initial {
			<-st.dialSem
		}
		if err != nil {
			st.dialErrors.Add(1)
			st.firstErr.CompareAndSwap(nil, fmt.Sprintf("%s: dial %s: %v", c.user, c.target.name, err))
			fails++
			if initial && fails >= 3 {
				st.initFailed.Add(1)
				c.initDone = true
				st.initJoined.Done()
				return
			}
			c.sleepBackoff()
			continue
		}
		c.conn.Store(ws)
		if st.stopping.Load() {
			closeAll([]*websocket.Conn{ws})
			return
		}
		if c.moved && !c.resumed {
			st.dialLat.add(time.Since(t0))
		}
		c.conns++
		if err := c.join(ws); err == nil {
			err = readLoop(ws, func(line []byte, now time.Time) { c.handle(ws, line, now) })
			if !st.stopping.Load() {
				st.recordClose(c.target.name[len(c.target.name)-1:], err)
			}
		}
		ws.Close()
		if st.stopping.Load() {
			return
		}
		if c.target == st.edgeA && !c.control {
			c.closedAt = time.Now().UnixNano()
			c.moved = true
			c.lastOnA = c.maxSeq.Load()
		}
		// Whatever closed the connection, the client goes to edge B and
		// resumes from its newest pos.
		c.target = st.edgeB
		c.sleepBackoff()
	}
}

func (c *stormClient) sleepBackoff() {
	if c.st.backoff > 0 {
		time.Sleep(rand.N(c.st.backoff))
	}
}

// join sends the join frame of the client's room, with since when it has
// received a message before.
func (c *stormClient) join(ws *websocket.Conn) error {
	room := c.st.rooms[c.room].name
	var f string
	c.joinSince = c.part >= 0
	if c.joinSince {
		c.since = strconv.FormatInt(c.part, 10) + ":" + strconv.FormatInt(c.off, 10)
		f = `{"type":"join","room":"` + room + `","since":"` + c.since + `"}`
	} else {
		f = `{"type":"join","room":"` + room + `"}`
	}
	c.joining = true
	c.joinSent = time.Now()
	ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
	return ws.WriteMessage(websocket.TextMessage, []byte(f))
}

var (
	stormChatType   = []byte(`"type":"chat"`)
	stormErrorType  = []byte(`"type":"error"`)
	stormRecTrue    = []byte(`"recovered":true`)
	stormRecFalse   = []byte(`"recovered":false`)
	stormPosKey     = []byte(`"pos":"`)
	stormUnavailErr = []byte(`"code":"unavailable"`)
)

func (c *stormClient) handle(ws *websocket.Conn, line []byte, now time.Time) {
	st := c.st
	switch {
	case bytes.Contains(line, stormChatType):
		ns, seq, ok := parseStamp(line, contentKey)
		if !ok {
			return
		}
		if !bytes.Contains(line, st.rooms[c.room].key) {
			c.foreign++
			return
		}
		if p, o, ok := parsePosIn(line); ok {
			if c.part >= 0 && (p != c.part || o <= c.off) {
				c.posBack++
			}
			c.part, c.off = p, o
			if !c.hasPos.Load() {
				c.hasPos.Store(true)
			}
		}
		c.seqs = append(c.seqs, uint32(seq))
		if int64(seq) > c.maxSeq.Load() {
			c.maxSeq.Store(int64(seq))
		}
		d := now.Sub(time.Unix(0, ns))
		if c.moved && c.firstOnB == 0 {
			c.firstOnB = int64(seq)
			st.firstOnBDelay.add(d)
		}
		if !c.moved && !c.control && st.tSig.Load() != 0 {
			st.onAAfterSig.Add(1)
		}
		c.lats = append(c.lats, stormLat{sent: ns, us: uint32(min(d.Microseconds(), 1<<32-1))})
		if c.catching && int64(seq) >= c.catchSeq {
			c.catching = false
			st.catchUp.add(now.Sub(c.joinedAt))
		}
	case bytes.Contains(line, joinedType):
		if !c.joining {
			return
		}
		c.joining = false
		if !c.initDone {
			c.initDone = true
			st.initJoined.Done()
		}
		if !c.moved {
			return
		}
		if c.joinSince {
			st.joinLat.add(now.Sub(c.joinSent))
		}
		if c.resumed {
			return // a later reconnect on B
		}
		c.resumed = true
		c.resumedAt = now.UnixNano()
		st.closeToResume.add(time.Duration(c.resumedAt - c.closedAt))
		switch {
		case !c.joinSince:
			st.noSince.Add(1)
		case bytes.Contains(line, stormRecTrue):
			st.recTrue.Add(1)
		case bytes.Contains(line, stormRecFalse):
			c.recFalse = true
			st.recFalse.Add(1)
			st.firstErr.CompareAndSwap(nil, fmt.Sprintf("%s: %s after join since %s", c.user, line, c.since))
		}
		c.joinedAt = now
		c.catchSeq = st.rooms[c.room].seq.Load()
		c.catching = c.catchSeq > 0
		st.settled.Add(1)
	case bytes.Contains(line, stormErrorType):
		st.firstErr.CompareAndSwap(nil, fmt.Sprintf("%s: %s", c.user, line))
		if c.joining && bytes.Contains(line, stormUnavailErr) {
			// The edge could not read the log to resume: join again.
			st.joinRetries.Add(1)
			time.Sleep(50*time.Millisecond + rand.N(100*time.Millisecond))
			c.join(ws)
		}
	}
}

// parsePosIn finds "pos":"<partition>:<offset>" in a frame.
func parsePosIn(line []byte) (part, off int64, ok bool) {
	i := bytes.Index(line, stormPosKey)
	if i < 0 {
		return 0, 0, false
	}
	b := line[i+len(stormPosKey):]
	j := 0
	for ; j < len(b) && b[j] >= '0' && b[j] <= '9'; j++ {
		part = part*10 + int64(b[j]-'0')
	}
	if j == 0 || j >= len(b) || b[j] != ':' {
		return 0, 0, false
	}
	k := j + 1
	for ; k < len(b) && b[k] >= '0' && b[k] <= '9'; k++ {
		off = off*10 + int64(b[k]-'0')
	}
	return part, off, k > j+1
}

// stormPub is one publisher connection on edge B; it owns rooms (assigns
// their sequence numbers) and reads its acks.
type stormPub struct {
	st    *storm
	ws    *websocket.Conn
	rooms []int
}

var errStopped = errors.New("stopped")

// publish sends rate msg/s round-robin over its rooms until pubStop. The
// content is "<send time ns>:<seq>:" padded; the client_id "<room>.<seq>".
func (p *stormPub) publish(rate float64, size int) {
	st := p.st
	j := 0
	_, err := pace(rate, 24*time.Hour, 0, func() error {
		if st.pubStop.Load() {
			return errStopped
		}
		ri := p.rooms[j%len(p.rooms)]
		j++
		r := &st.rooms[ri]
		seq := int(r.seq.Load()) + 1
		b := make([]byte, 0, 96+size)
		b = append(b, `{"type":"chat","room":"`...)
		b = append(b, r.name...)
		b = append(b, `","content":"`...)
		n := len(b)
		b = appendStamp(b, time.Now(), seq)
		for len(b)-n < size {
			b = append(b, 'x')
		}
		b = append(b, `","client_id":"`...)
		b = strconv.AppendInt(b, int64(ri), 10)
		b = append(b, '.')
		b = strconv.AppendInt(b, int64(seq), 10)
		b = append(b, `"}`...)
		p.ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if err := p.ws.WriteMessage(websocket.TextMessage, b); err != nil {
			return err
		}
		r.seq.Store(int64(seq))
		st.sent.Add(1)
		return nil
	})
	if err != nil && err != errStopped {
		st.firstPubErr.CompareAndSwap(nil, err.Error())
	}
}

var stormAckType = []byte(`"type":"ack"`)

func (p *stormPub) readAcks() {
	st := p.st
	err := readLoop(p.ws, func(line []byte, _ time.Time) {
		ack := bytes.Contains(line, stormAckType)
		isErr := !ack && bytes.Contains(line, stormErrorType)
		if !ack && !isErr {
			return
		}
		if isErr {
			st.errs.Add(1)
			st.firstPubErr.CompareAndSwap(nil, string(line))
			return
		}
		i := bytes.Index(line, clientIDKey)
		if i < 0 {
			return
		}
		b := line[i+len(clientIDKey):]
		ri, seq, j := 0, 0, 0
		for ; j < len(b) && b[j] >= '0' && b[j] <= '9'; j++ {
			ri = ri*10 + int(b[j]-'0')
		}
		if j >= len(b) || b[j] != '.' || ri >= len(st.rooms) {
			return
		}
		for j++; j < len(b) && b[j] >= '0' && b[j] <= '9'; j++ {
			seq = seq*10 + int(b[j]-'0')
		}
		st.rooms[ri].ack(seq)
		st.acks.Add(1)
	})
	if !st.pubStop.Load() {
		st.firstPubErr.CompareAndSwap(nil, fmt.Sprintf("publisher connection ended: %v", err))
	}
}

// stormVerdict is the end-to-end check of every client.
type stormVerdict struct {
	missing, gapClients, dups, dupClients int
	posBack, lateFirst, foreign           int
	unackedMissing                        int
	examples                              []string
}

// verify checks, for every client, that it received every acknowledged
// message of its room from the first it received to the last published,
// exactly once, in log order.
func (st *storm) verify() stormVerdict {
	var v stormVerdict
	for _, c := range st.clients {
		v.posBack += c.posBack
		v.foreign += c.foreign
		r := &st.rooms[c.room]
		last := int(r.seq.Load())
		if len(c.seqs) == 0 {
			if last > 0 {
				v.missing += last
				v.gapClients++
				v.example(fmt.Sprintf("%s (room %s) received nothing of %d messages", c.user, r.name, last))
			}
			continue
		}
		s := slices.Clone(c.seqs)
		slices.Sort(s)
		first := int(s[0])
		if first > 1 {
			v.lateFirst++
		}
		dups := 0
		for i := 1; i < len(s); i++ {
			if s[i] == s[i-1] {
				dups++
			}
		}
		s = slices.Compact(s)
		var miss []int
		k := 0
		for q := first; q <= last; q++ {
			for k < len(s) && int(s[k]) < q {
				k++
			}
			if k < len(s) && int(s[k]) == q {
				continue
			}
			if r.isAcked(q) {
				miss = append(miss, q)
			} else {
				v.unackedMissing++
			}
		}
		if dups > 0 {
			v.dups += dups
			v.dupClients++
			v.example(fmt.Sprintf("%s (room %s): %d duplicates; %s", c.user, r.name, dups, c.story()))
		}
		if len(miss) > 0 {
			v.missing += len(miss)
			v.gapClients++
			v.example(fmt.Sprintf("%s (room %s): missing %s; %s", c.user, r.name, ranges(miss), c.story()))
		}
		if c.recFalse {
			v.example(fmt.Sprintf("%s (room %s): recovered:false; %s", c.user, r.name, c.story()))
		}
	}
	return v
}

func (v *stormVerdict) example(s string) {
	if len(v.examples) < 8 {
		v.examples = append(v.examples, s)
	}
}

// story is what a client went through, for the examples of a failure.
func (c *stormClient) story() string {
	if !c.moved {
		return fmt.Sprintf("%d connections, never moved", c.conns)
	}
	return fmt.Sprintf("newest seq on edge A %d, resumed with since %s, first seq on edge B %d, %d connections", c.lastOnA, c.since, c.firstOnB, c.conns)
}

// ranges prints sorted integers as a-b runs, at most 10 of them.
func ranges(xs []int) string {
	var out []string
	for i := 0; i < len(xs); {
		j := i
		for j+1 < len(xs) && xs[j+1] == xs[j]+1 {
			j++
		}
		if j == i {
			out = append(out, itoa(xs[i]))
		} else {
			out = append(out, itoa(xs[i])+"-"+itoa(xs[j]))
		}
		i = j + 1
		if len(out) == 10 && i < len(xs) {
			out = append(out, "…")
			break
		}
	}
	return strings.Join(out, ",")
}

// logNotes returns the warnings and errors the edges and the broker logged
// (they log at warn), at most a few distinct messages each.
func (st *storm) logNotes() []string {
	var out []string
	for _, p := range st.sys.logs {
		f, err := os.Open(p)
		if err != nil {
			continue
		}
		counts, example := map[string]int{}, map[string]string{}
		var order []string
		total := 0
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			l := sc.Text()
			if !strings.Contains(l, "level=WARN") && !strings.Contains(l, "level=ERROR") && !strings.Contains(l, "panic") {
				continue
			}
			total++
			key := logMsg(l)
			if counts[key] == 0 {
				order = append(order, key)
				if len(l) > 300 {
					l = l[:300] + "…"
				}
				example[key] = l
			}
			counts[key]++
		}
		f.Close()
		if total == 0 {
			continue
		}
		out = append(out, fmt.Sprintf("%s: %d warning/error lines", filepath.Base(p), total))
		for i, k := range order {
			if i == 5 {
				out = append(out, fmt.Sprintf("  … %d more distinct", len(order)-5))
				break
			}
			out = append(out, fmt.Sprintf("  ×%d %s, e.g. %s", counts[k], k, example[k]))
		}
	}
	return out
}

// logMsg is a log line's message: the msg="…" value of slog's text format
// (the whole line if it has none).
func logMsg(l string) string {
	i := strings.Index(l, "msg=")
	if i < 0 {
		return l
	}
	m := l[i+4:]
	if strings.HasPrefix(m, `"`) {
		if j := strings.Index(m[1:], `"`); j >= 0 {
			return m[:j+2]
		}
		return m
	}
	m, _, _ = strings.Cut(m, " ")
	return m
}

// stormSampler samples edge B's RSS and CPU every 100 ms and its
// /metrics every 500 ms, and notes when edge A exits.
type stormSampler struct {
	st    *storm
	done  chan struct{}
	aExit atomic.Int64 // Unix ns
	wg    sync.WaitGroup
	procs []stormProcSample
	mets  []stormMetSample
}

type stormProcSample struct {
	t       time.Time
	rss     int64
	cpu     time.Duration
	machine time.Duration
}

type stormMetSample struct {
	t time.Time
	m map[string]float64
}

func (s *stormSampler) procLoop() {
	defer s.wg.Done()
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
		}
		if p, ok := readProc(s.st.pidB); ok {
			s.procs = append(s.procs, stormProcSample{t: time.Now(), rss: p.rss, cpu: p.cpu, machine: machineBusy()})
		}
		if s.aExit.Load() == 0 {
			if a, ok := readProc(s.st.pidA); ok {
				s.st.cpuA.Store(int64(a.cpu))
			}
			if s.st.tSig.Load() != 0 && procGone(s.st.pidA) {
				s.aExit.Store(time.Now().UnixNano())
			}
		}
	}
}

func (s *stormSampler) metricsLoop() {
	defer s.wg.Done()
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
		}
		if m := scrapeMetrics(s.st.edgeB.addr); m != nil {
			s.mets = append(s.mets, stormMetSample{t: time.Now(), m: m})
		}
	}
}

// peakRSS is the largest RSS sampled in [a, b) (read after wg.Wait).
func (s *stormSampler) peakRSS(a, b time.Time) int64 {
	var peak int64
	for _, p := range s.procs {
		if !p.t.Before(a) && p.t.Before(b) {
			peak = max(peak, p.rss)
		}
	}
	return peak
}

// peakMetric is the largest value of a /metrics sample in [a, b).
func (s *stormSampler) peakMetric(name string, a, b time.Time) float64 {
	var peak float64
	for _, m := range s.mets {
		if !m.t.Before(a) && m.t.Before(b) {
			peak = max(peak, m.m[name])
		}
	}
	return peak
}

// cores is edge B's CPU over [a, b) from the samples nearest its ends.
func (s *stormSampler) cores(a, b time.Time) float64 {
	return s.coresOf(a, b, func(p *stormProcSample) time.Duration { return p.cpu })
}

// machineCores is the machine's busy cores over [a, b).
func (s *stormSampler) machineCores(a, b time.Time) float64 {
	return s.coresOf(a, b, func(p *stormProcSample) time.Duration { return p.machine })
}

func (s *stormSampler) coresOf(a, b time.Time, cpu func(*stormProcSample) time.Duration) float64 {
	var first, last *stormProcSample
	for i := range s.procs {
		p := &s.procs[i]
		if p.t.Before(a) || !p.t.Before(b) {
			continue
		}
		if first == nil {
			first = p
		}
		last = p
	}
	if first == nil || last == first {
		return 0
	}
	return (cpu(last) - cpu(first)).Seconds() / last.t.Sub(first.t).Seconds()
}

// procGone reports whether pid has exited (a zombie not yet reaped counts).
func procGone(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || i+2 >= len(b) || b[i+2] == 'Z' || b[i+2] == 'X'
}

var metricsClient = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
	DialContext:       (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
	DisableKeepAlives: false,
}}

// scrapeMetrics reads a chat process's /metrics: every sample, keyed by
// name{labels}.
func scrapeMetrics(addr string) map[string]float64 {
	resp, err := metricsClient.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	out := map[string]float64{}
	for _, l := range strings.Split(string(b), "\n") {
		if l == "" || l[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(l[i+1:], 64); err == nil {
			out[l[:i]] = v
		}
	}
	return out
}

// stormLat is one delivery: its send time and send → receive latency.
type stormLat struct {
	sent int64 // Unix ns
	us   uint32
}

// latencies is the histogram of the control group's (or the moved
// clients') deliveries of the messages sent in [a, b).
func (st *storm) latencies(control bool, a, b time.Time) *hist {
	h := new(hist)
	an, bn := a.UnixNano(), b.UnixNano()
	for _, c := range st.clients {
		if c.control != control {
			continue
		}
		for _, l := range c.lats {
			if l.sent >= an && l.sent < bn {
				h.add(time.Duration(l.us) * time.Microsecond)
			}
		}
	}
	return h
}

// saveURL writes the body of a GET to file.
func saveURL(url, file string) error {
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// durs collects durations for p50/p99/max.
type durs struct {
	h hist
	m maxDur
}

func (d *durs) add(x time.Duration) {
	d.h.add(x)
	d.m.update(x)
}

func (d *durs) summary() string {
	if d.h.n.Load() == 0 {
		return "-"
	}
	return fmtDur(d.h.q(.5)) + " / " + fmtDur(d.h.q(.99)) + " / " + fmtDur(d.m.get())
}

// maxDur is a lock-free maximum.
type maxDur struct{ v atomic.Int64 }

func (m *maxDur) update(d time.Duration) {
	for {
		old := m.v.Load()
		if int64(d) <= old || m.v.CompareAndSwap(old, int64(d)) {
			return
		}
	}
}

func (m *maxDur) get() time.Duration { return time.Duration(m.v.Load()) }
