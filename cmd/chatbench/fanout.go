package main

import (
	"flag"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// fanout: K subscribers in one room, one publisher stepping its rate until
// p99 ≥ 1 s or loss ≥ 1 %, for gorilla's chat example and for the chat in
// the same run.
func fanout(args []string) error {
	fs := flag.NewFlagSet("fanout", flag.ExitOnError)
	var sf sysFlags
	sf.register(fs, "all", true)
	k := fs.Int("k", 1000, "subscribers (separate connections, one room)")
	rates := fs.String("rates", "50,100,200,400,800,1000,1500,2000,3000", "publisher rates to step through, messages/s")
	dur := fs.Duration("step", 10*time.Second, "duration of each step")
	drain := fs.Duration("drain", 2*time.Second, "longest wait after a step for its last deliveries (they count toward it)")
	size := fs.Int("size", 100, "message content bytes")
	conc := fs.Int("dialers", 50, "concurrent dialers while connecting the subscribers")
	fs.Parse(args)
	systems, err := sf.systems()
	if err != nil {
		return err
	}
	rs, err := parseInts(*rates)
	if err != nil {
		return err
	}
	if n := len(chatFrame("bench", time.Now(), len(rs), *size)); *size < 30 || n > 512 {
		return fmt.Errorf("-size %d: want at least 30 (the stamp), and frames of at most 512 bytes (the example's read limit; this one is %d)", *size, n)
	}
	fmt.Printf("fanout: K=%d subscribers in one room, one publisher, %d-byte contents, steps of %v (+ up to %v drain)\n", *k, *size, *dur, *drain)
	fmt.Printf("CPU and memory: the whole process tree of each system; lg = the load generator's own CPU (machine: %s)\n", cores())
	res := map[string]*fanoutRun{}
	for _, name := range systems {
		s, err := sf.start(name)
		if err != nil {
			return err
		}
		fmt.Printf("\n%s: %s\n", name, s.label)
		r, err := runFanout(s, *k, *conc, *size, rs, *dur, *drain)
		s.stop()
		if err != nil {
			return err
		}
		res[name] = r
	}
	ex, ch := res["example"], res["chat"]
	if ex == nil || ch == nil {
		return nil
	}
	fmt.Println()
	fmt.Println("ratios chat/example (same run):")
	eb, er := ex.best(*k)
	cb, cr := ch.best(*k)
	fmt.Printf("  highest sustained deliveries/s (p99 < 1 s, loss < 1 %%): example %.0f (at %d msg/s), chat %.0f (at %d msg/s), ratio %s\n", eb, er, cb, cr, ratio(cb, eb))
	fmt.Printf("  memory with K connected: RSS example %s MiB, chat %s MiB, ratio %s; PSS ratio %s\n",
		mib(ex.connected.rss), mib(ch.connected.rss), ratio(float64(ch.connected.rss), float64(ex.connected.rss)), ratio(float64(ch.connected.pss), float64(ex.connected.pss)))
	fmt.Printf("  %6s %10s %10s %7s %8s %8s %10s %10s %7s\n", "rate", "p99 ex", "p99 chat", "ratio", "loss ex", "loss ch", "µs/dlv ex", "µs/dlv ch", "ratio")
	for _, rate := range rs {
		a, b := ex.at(rate), ch.at(rate)
		if a == nil || b == nil {
			continue
		}
		fmt.Printf("  %6d %10s %10s %7s %7.2f%% %7.2f%% %10.2f %10.2f %7s\n", rate, fmtDur(a.lat.q(.99)), fmtDur(b.lat.q(.99)),
			ratio(float64(b.lat.q(.99)), float64(a.lat.q(.99))), 100*a.loss(*k), 100*b.loss(*k),
			a.cpuPerDelivery(), b.cpuPerDelivery(), ratio(b.cpuPerDelivery(), a.cpuPerDelivery()))
	}
	return nil
}

// fanStep is one rate step. Deliveries are attributed to the step whose
// message they carry, whenever they arrive before the step is reported.
type fanStep struct {
	rate      int
	sent      int
	got       atomic.Int64
	lat       hist
	wall      time.Duration // sending
	window    time.Duration // sending + drain: the CPU window
	cpu, lg   time.Duration
	end       usage
	dropped   int64
	delivered int64 // got, frozen when the step is reported
}

func (st *fanStep) loss(k int) float64 {
	want := float64(st.sent) * float64(k)
	if want == 0 {
		return 0
	}
	return max(0, 1-float64(st.delivered)/want)
}

func (st *fanStep) ok(k int) bool { return st.loss(k) < 0.01 && st.lat.q(.99) < time.Second }

func (st *fanStep) cpuPerDelivery() float64 {
	if st.delivered == 0 {
		return 0
	}
	return float64(st.cpu.Microseconds()) / float64(st.delivered)
}

type fanoutRun struct {
	steps     []*fanStep
	connected usage
}

func (r *fanoutRun) at(rate int) *fanStep {
	for _, st := range r.steps {
		if st.rate == rate && st.sent > 0 {
			return st
		}
	}
	return nil
}

func (r *fanoutRun) best(k int) (float64, int) {
	var b float64
	at := 0
	for _, st := range r.steps {
		if d := float64(st.delivered) / st.wall.Seconds(); st.ok(k) && d > b {
			b, at = d, st.rate
		}
	}
	return b, at
}

func runFanout(s *server, k, conc, size int, rates []int, dur, drain time.Duration) (*fanoutRun, error) {
	settle(s, 10*time.Second)
	idle := s.usage(true)
	steps := make([]*fanStep, len(rates))
	for i, r := range rates {
		steps[i] = &fanStep{rate: r}
	}
	var cur atomic.Int32 // deliveries of older steps are late: not counted
	cur.Store(-1)
	subs, err := subscribe(s, k, conc, func(i int) string { return "sub" + itoa(i) }, func(int) string { return "bench" },
		func(line []byte, now time.Time) {
			if ns, st, ok := parseStamp(line, contentKey); ok && st == int(cur.Load()) {
				steps[st].got.Add(1)
				steps[st].lat.add(now.Sub(time.Unix(0, ns)))
			}
		})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.name, err)
	}
	defer subs.close()
	pub, err := dialWS(s, s.token("publisher"))
	if err != nil {
		return nil, err
	}
	defer closeAll([]*websocket.Conn{pub})
	go readLoop(pub, func([]byte, time.Time) {}) // acks (chat) or its own copies (example)
	settle(s, 10*time.Second)
	run := &fanoutRun{connected: s.usage(true)}
	fmt.Printf("idle %s procs, RSS %s MiB, PSS %s MiB; with %d subscribers: RSS %s MiB, PSS %s MiB\n",
		itoa(idle.procs), mib(idle.rss), mib(idle.pss), k, mib(run.connected.rss), mib(run.connected.pss))
	fmt.Printf("%6s %8s %12s %9s %9s %7s %6s %8s %8s %8s %5s %5s\n", "rate", "sent/s", "deliveries/s", "p50", "p99", "loss", "cores", "µs/dlv", "RSS MiB", "PSS MiB", "lg", "drops")
	for i, st := range steps {
		cur.Store(int32(i))
		u0, lg0, drop0 := s.usage(false), selfCPU(), subs.dropped.Load()
		t0 := time.Now()
		n, err := pace(float64(st.rate), dur, 0, func() error {
			pub.SetWriteDeadline(time.Now().Add(10 * time.Second))
			return pub.WriteMessage(websocket.TextMessage, chatFrame("bench", time.Now(), i, size))
		})
		st.sent, st.wall = n, time.Since(t0)
		want := int64(n) * int64(k)
		for time.Since(t0) < st.wall+drain && st.got.Load() < want {
			time.Sleep(20 * time.Millisecond)
		}
		st.window = time.Since(t0)
		cur.Store(-1)
		st.delivered = st.got.Load()
		u1 := s.usage(true)
		st.cpu, st.lg, st.end, st.dropped = u1.cpu-u0.cpu, selfCPU()-lg0, u1, subs.dropped.Load()-drop0
		run.steps = append(run.steps, st)
		fmt.Printf("%6d %8.0f %12.0f %9s %9s %6.2f%% %6.2f %8.2f %8s %8s %5.2f %5d\n", st.rate, float64(n)/st.wall.Seconds(),
			float64(st.delivered)/st.wall.Seconds(), fmtDur(st.lat.q(.5)), fmtDur(st.lat.q(.99)), 100*st.loss(k),
			st.cpu.Seconds()/st.window.Seconds(), st.cpuPerDelivery(), mib(st.end.rss), mib(st.end.pss), st.lg.Seconds()/st.window.Seconds(), st.dropped)
		if err != nil {
			fmt.Printf("stopping: the publisher failed: %v\n", err)
			break
		}
		if !st.ok(k) {
			fmt.Println("stopping: p99 ≥ 1 s or loss ≥ 1 %")
			break
		}
	}
	return run, nil
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return nil, fmt.Errorf("%q: %w", s, err)
		}
		if n <= 0 {
			return nil, fmt.Errorf("%q: %d is not a positive number", s, n)
		}
		out = append(out, n)
	}
	return out, nil
}
