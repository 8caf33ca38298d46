package main

import (
	"bytes"
	"flag"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// rooms: many small rooms. R rooms of M subscribers each (separate
// connections, each its own user), P publishers on their own connections
// (not members of the rooms they write to), aggregate rates stepped. Per
// step: ack p99 (send → ack), delivery p99 (send → a subscriber's copy),
// loss, CPU of the tree. The chat runs with its broker at its defaults
// (fsync on); then, with the same load generator, its peer: Centrifugo
// (memory engine, its defaults; centrifugo.go), where a room is a channel
// and the ack is the publish reply. One system at a time, never both.
func roomsBench(args []string) error {
	fs := flag.NewFlagSet("rooms", flag.ExitOnError)
	var sf sysFlags
	sf.register(fs, "all", false)
	cfPath := fs.String("centrifugo", "bin/tools/centrifugo", "path of Centrifugo "+centrifugoVersion+", the peer; installed there with go install "+centrifugoPkg+" when missing; '' skips the peer")
	var o roomsOpts
	fs.IntVar(&o.rooms, "rooms", 1000, "rooms")
	fs.IntVar(&o.perRoom, "per-room", 10, "subscribers per room")
	fs.IntVar(&o.pubs, "publishers", 100, "publisher connections (users); each gets rate/publishers msg/s")
	rates := fs.String("rates", "2000,5000,10000,20000", "aggregate rates to step through, messages/s")
	fs.DurationVar(&o.dur, "step", 10*time.Second, "duration of each step")
	fs.DurationVar(&o.drain, "drain", 2*time.Second, "longest wait after a step for its last acks and deliveries")
	fs.IntVar(&o.size, "size", 100, "message content bytes")
	fs.IntVar(&o.conc, "dialers", 50, "concurrent dialers")
	fs.BoolVar(&o.keepGoing, "keep-going", false, "run every step even after one missed p99 < 1 s or loss < 1 % (each system on its own)")
	fs.Parse(args)
	if o.rooms < 1 || o.perRoom < 1 || o.pubs < 1 || o.conc < 1 || o.dur <= 0 {
		return fmt.Errorf("-rooms, -per-room, -publishers, -dialers and -step must be positive")
	}
	var err error
	if o.rates, err = parseInts(*rates); err != nil {
		return err
	}
	cfBin := ""
	if *cfPath != "" {
		// Installed now, so that go install's output precedes the tables.
		if cfBin, err = ensureCentrifugo(*cfPath); err != nil {
			return err
		}
	}
	fmt.Printf("rooms: %d rooms × %d subscribers, %d publishers, %d-byte contents, steps of %v\n",
		o.rooms, o.perRoom, o.pubs, o.size, o.dur)
	fmt.Printf("CPU: the whole process tree; lg = the load generator's own CPU (machine: %s)\n", cores())

	s, err := startChat(sf.chat, sf.mode, sf.verbose)
	if err != nil {
		return err
	}
	fmt.Printf("\n%s (broker defaults: fsync on; ack = the chat's ack frame)\n", s.label)
	chat, err := runRooms(s, chatRooms{s}, o)
	s.stop()
	if err != nil {
		return err
	}
	for _, st := range chat {
		if st.rate == 10000 && st.sent > 0 {
			met := st.ack.q(.99) <= 50*time.Millisecond && st.dlv.q(.99) <= 100*time.Millisecond && st.loss(o.perRoom) < 0.01
			fmt.Printf("target at 10 000 msg/s (ack p99 ≤ 50 ms, delivery p99 ≤ 100 ms, loss < 1 %%): %s (ack p99 %s, delivery p99 %s)\n",
				map[bool]string{true: "met", false: "NOT met"}[met], fmtDur(st.ack.q(.99)), fmtDur(st.dlv.q(.99)))
		}
	}
	if cfBin == "" {
		return nil
	}

	c, err := startCentrifugo(cfBin, sf.verbose)
	if err != nil {
		return err
	}
	fmt.Printf("\nCentrifugo %s, memory engine, otherwise its defaults (ack = the publish reply, sent once the node has the message in memory: no durability)\n", centrifugoVersion)
	cf := &centrifugoRooms{s: c}
	peer, err := runRooms(c, cf, o)
	warns := c.centrifugoWarnings()
	c.stop()
	if err != nil {
		return err
	}
	if d, _ := cf.disc.Load().(string); d != "" {
		fmt.Printf("first disconnect: %s\n", d)
	}
	fmt.Printf("server pings ({} every 25 s per connection) answered: %d\n", cf.pongs.Load())
	// A development-build notice is expected from go install (no release
	// version stamped in); anything else Centrifugo warned about is shown.
	for _, l := range warns {
		if !bytes.Contains(l, []byte("development build")) {
			fmt.Printf("centrifugo log: %s\n", l)
		}
	}

	fmt.Printf("\nsummary: p99 of both systems and ratios chat/centrifugo (< 1: the chat is lower); loss, cores of each system's tree and of the lg (ch = chat, cf = centrifugo)\n")
	const row = "%6s %9s %9s %6s %9s %9s %6s %7s %7s %8s %8s %6s %6s\n"
	fmt.Printf(row, "rate", "ack chat", "ack cfgo", "ratio", "dlv chat", "dlv cfgo", "ratio", "loss ch", "loss cf", "cores ch", "cores cf", "lg ch", "lg cf")
	for i, a := range chat {
		b := peer[i]
		fmt.Printf(row, itoa(a.rate),
			a.p99ack(), b.p99ack(), a.ratio(b, (*roomStep).ackP99), a.p99dlv(), b.p99dlv(), a.ratio(b, (*roomStep).dlvP99),
			a.lossPct(o.perRoom), b.lossPct(o.perRoom), a.coresStr(), b.coresStr(), a.lgStr(), b.lgStr())
	}
	return nil
}

// roomsOpts are the scenario's parameters, the same for both systems.
type roomsOpts struct {
	rooms, perRoom, pubs, size, conc int
	rates                            []int
	dur, drain                       time.Duration
	keepGoing                        bool
}

// roomsDriver speaks one system's protocol: subscribers into rooms, and
// publishers whose acks and refusals are reported by step.
type roomsDriver interface {
	// subscribe connects n subscribers (users s0…), subscriber i in
	// room(i); handle gets every later line.
	subscribe(n, conc int, room func(int) string, handle func(line []byte, now time.Time)) (*subscribers, error)
	// publishers connects n publishers (users p0…); ack and fail are
	// called with the step of the acknowledged or refused message (fail
	// with -1 when unknown); probe is a room to publish a test message to.
	publishers(n, conc int, probe string, ack func(step int, sent int64, now time.Time), fail func(step int, line []byte)) (roomsPubs, error)
}

type roomsPubs interface {
	send(pub int, room string, step, size int) error // a stamped message, now
	close()
}

// runRooms measures one system: connects, steps through the rates, prints
// the table; it returns every step (those not run have sent == 0).
func runRooms(s *server, d roomsDriver, o roomsOpts) ([]*roomStep, error) {
	settle(s, 10*time.Second)
	steps := make([]*roomStep, len(o.rates))
	for i, r := range o.rates {
		steps[i] = &roomStep{rate: r}
	}
	var cur atomic.Int32
	cur.Store(-1)
	step := func(st int) *roomStep {
		if st >= 0 && st == int(cur.Load()) {
			return steps[st]
		}
		return nil
	}
	nSubs := o.rooms * o.perRoom
	t0 := time.Now()
	subs, err := d.subscribe(nSubs, o.conc, func(i int) string { return "r" + itoa(i%o.rooms) },
		func(line []byte, now time.Time) {
			if ns, st, ok := parseStamp(line, contentKey); ok {
				if x := step(st); x != nil {
					x.got.Add(1)
					x.dlv.add(now.Sub(time.Unix(0, ns)))
				}
			}
		})
	if err != nil {
		return nil, s.failed(err)
	}
	defer subs.close()
	fmt.Printf("%d subscribers connected and joined in %.1fs\n", nSubs, time.Since(t0).Seconds())
	var firstErr atomic.Value
	pubs, err := d.publishers(o.pubs, o.conc, "r0",
		func(st int, sent int64, now time.Time) {
			if x := step(st); x != nil {
				x.acks.Add(1)
				x.ack.add(now.Sub(time.Unix(0, sent)))
			}
		},
		func(st int, line []byte) {
			if x := step(st); x != nil {
				x.errs.Add(1)
			}
			firstErr.CompareAndSwap(nil, string(line))
		})
	if err != nil {
		return nil, s.failed(err)
	}
	defer pubs.close()
	settle(s, 10*time.Second)
	u := s.usage(true)
	fmt.Printf("connected: %d processes, RSS %s MiB, PSS %s MiB\n", u.procs, mib(u.rss), mib(u.pss))
	fmt.Printf("%6s %8s %9s %9s %9s %9s %7s %7s %6s %6s %8s %5s %5s\n", "rate", "sent/s", "ack p50", "ack p99", "dlv p50", "dlv p99", "loss", "noack", "errors", "cores", "RSS MiB", "lg", "drops")
	for i, st := range steps {
		cur.Store(int32(i))
		u0, lg0, drop0 := s.usage(false), selfCPU(), subs.dropped.Load()
		t0 := time.Now()
		var wg sync.WaitGroup
		var sent atomic.Int64
		var pubErr atomic.Value
		for p := range o.pubs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				j := 0
				n, err := pace(float64(st.rate)/float64(o.pubs), o.dur, float64(p)/float64(o.pubs), func() error {
					room := "r" + itoa((p+j*o.pubs)%o.rooms)
					j++
					return pubs.send(p, room, i, o.size)
				})
				sent.Add(int64(n))
				if err != nil {
					pubErr.CompareAndSwap(nil, err)
				}
			}()
		}
		wg.Wait()
		st.wall = time.Since(t0)
		st.sent = sent.Load()
		want := st.sent * int64(o.perRoom)
		for time.Since(t0) < st.wall+o.drain && (st.got.Load() < want || st.acks.Load()+st.errs.Load() < st.sent) {
			time.Sleep(20 * time.Millisecond)
		}
		window := time.Since(t0)
		cur.Store(-1)
		st.delivered, st.acked = st.got.Load(), st.acks.Load()
		u1 := s.usage(true)
		cpu, lg, drops := u1.cpu-u0.cpu, selfCPU()-lg0, subs.dropped.Load()-drop0
		st.cores, st.lg = cpu.Seconds()/window.Seconds(), lg.Seconds()/window.Seconds()
		fmt.Printf("%6d %8.0f %9s %9s %9s %9s %6.2f%% %6.2f%% %6d %6.2f %8s %5.2f %5d\n", st.rate, float64(st.sent)/st.wall.Seconds(),
			fmtDur(st.ack.q(.5)), fmtDur(st.ack.q(.99)), fmtDur(st.dlv.q(.5)), fmtDur(st.dlv.q(.99)),
			100*st.loss(o.perRoom), 100*st.noAck(), st.errs.Load(), st.cores, mib(u1.rss), st.lg, drops)
		if err, _ := pubErr.Load().(error); err != nil {
			fmt.Printf("stopping: a publisher failed: %v\n", err)
			break
		}
		if !o.keepGoing && (st.loss(o.perRoom) >= 0.01 || st.dlv.q(.99) >= time.Second) {
			fmt.Println("stopping: delivery p99 ≥ 1 s or loss ≥ 1 % (-keep-going runs every step)")
			break
		}
	}
	if e, _ := firstErr.Load().(string); e != "" {
		fmt.Printf("first error frame: %s\n", e)
	}
	return steps, nil
}

// chatRooms drives the chat: join frames, chat frames, ack frames whose
// client_id is the message's stamp.
type chatRooms struct{ s *server }

func (c chatRooms) subscribe(n, conc int, room func(int) string, handle func(line []byte, now time.Time)) (*subscribers, error) {
	return subscribe(c.s, n, conc, func(i int) string { return "s" + itoa(i) }, room, handle)
}

func (c chatRooms) publishers(n, conc int, _ string, ack func(int, int64, time.Time), fail func(int, []byte)) (roomsPubs, error) {
	ackType, errType := []byte(`"type":"ack"`), []byte(`"type":"error"`)
	conns, err := dialMany(c.s, n, conc, func(i int) string { return "p" + itoa(i) }, nil, func(_ int, ws *websocket.Conn) error {
		go readLoop(ws, func(line []byte, now time.Time) {
			switch {
			case bytes.Contains(line, ackType):
				if ns, st, ok := parseStamp(line, clientIDKey); ok {
					ack(st, ns, now)
				}
			case bytes.Contains(line, errType):
				st := -1
				if _, s, ok := parseStamp(line, clientIDKey); ok {
					st = s
				}
				fail(st, line)
			}
		})
		return nil
	})
	if err != nil {
		return nil, err
	}
	return chatPubs(conns), nil
}

type chatPubs []*websocket.Conn

func (ps chatPubs) send(i int, room string, step, size int) error {
	ws := ps[i]
	ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
	return ws.WriteMessage(websocket.TextMessage, chatFrame(room, time.Now(), step, size))
}

func (ps chatPubs) close() { closeAll(ps) }

type roomStep struct {
	rate             int
	sent             int64
	got, acks, errs  atomic.Int64
	dlv, ack         hist
	wall             time.Duration
	delivered, acked int64
	cores, lg        float64 // the system's tree and the load generator, in cores
}

func (st *roomStep) loss(perRoom int) float64 {
	want := float64(st.sent) * float64(perRoom)
	if want == 0 {
		return 0
	}
	return max(0, 1-float64(st.delivered)/want)
}

func (st *roomStep) noAck() float64 {
	if st.sent == 0 {
		return 0
	}
	return max(0, 1-float64(st.acked)/float64(st.sent))
}

// For the summary: "-" for a step that did not run.
func (st *roomStep) ran() bool             { return st.sent > 0 }
func (st *roomStep) ackP99() time.Duration { return st.ack.q(.99) }
func (st *roomStep) dlvP99() time.Duration { return st.dlv.q(.99) }
func (st *roomStep) p99ack() string        { return st.orDash(fmtDur(st.ackP99())) }
func (st *roomStep) p99dlv() string        { return st.orDash(fmtDur(st.dlvP99())) }
func (st *roomStep) coresStr() string      { return st.orDash(fmt.Sprintf("%.2f", st.cores)) }
func (st *roomStep) lgStr() string         { return st.orDash(fmt.Sprintf("%.2f", st.lg)) }
func (st *roomStep) lossPct(perRoom int) string {
	return st.orDash(fmt.Sprintf("%.2f%%", 100*st.loss(perRoom)))
}

func (st *roomStep) orDash(s string) string {
	if !st.ran() {
		return "-"
	}
	return s
}

// ratio is st's f over other's, "-" unless both ran and both are non-zero.
func (st *roomStep) ratio(other *roomStep, f func(*roomStep) time.Duration) string {
	if !st.ran() || !other.ran() || f(st) == 0 {
		return "-"
	}
	return ratio(float64(f(st)), float64(f(other)))
}
