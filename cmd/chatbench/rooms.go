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
// (not members of the rooms they write to), aggregate rates stepped; the
// broker at its defaults (fsync on). Per step: ack p99 (send → ack),
// delivery p99 (send → a subscriber's copy), loss, CPU of the tree. The
// example has a single room: no baseline here.
func roomsBench(args []string) error {
	fs := flag.NewFlagSet("rooms", flag.ExitOnError)
	var sf sysFlags
	sf.register(fs, "all", false)
	nRooms := fs.Int("rooms", 1000, "rooms")
	perRoom := fs.Int("per-room", 10, "subscribers per room")
	nPubs := fs.Int("publishers", 100, "publisher connections (users); each gets rate/publishers msg/s")
	rates := fs.String("rates", "2000,5000,10000,20000", "aggregate rates to step through, messages/s")
	dur := fs.Duration("step", 10*time.Second, "duration of each step")
	drain := fs.Duration("drain", 2*time.Second, "longest wait after a step for its last acks and deliveries")
	size := fs.Int("size", 100, "message content bytes")
	conc := fs.Int("dialers", 50, "concurrent dialers")
	keepGoing := fs.Bool("keep-going", false, "run every step even after one missed p99 < 1 s or loss < 1 %")
	fs.Parse(args)
	rs, err := parseInts(*rates)
	if err != nil {
		return err
	}
	s, err := startChat(sf.chat, sf.mode, sf.verbose)
	if err != nil {
		return err
	}
	defer s.stop()
	fmt.Printf("rooms: %d rooms × %d subscribers, %d publishers, %d-byte contents, steps of %v; %s (broker defaults: fsync on)\n",
		*nRooms, *perRoom, *nPubs, *size, *dur, s.label)
	fmt.Printf("CPU: the whole process tree; lg = the load generator's own CPU (machine: %s)\n", cores())
	settle(s, 10*time.Second)

	steps := make([]*roomStep, len(rs))
	for i, r := range rs {
		steps[i] = &roomStep{rate: r}
	}
	var cur atomic.Int32
	cur.Store(-1)
	step := func(st int) *roomStep {
		if st == int(cur.Load()) {
			return steps[st]
		}
		return nil
	}
	nSubs := *nRooms * *perRoom
	t0 := time.Now()
	subs, err := subscribe(s, nSubs, *conc, func(i int) string { return "s" + itoa(i) }, func(i int) string { return "r" + itoa(i%*nRooms) },
		func(line []byte, now time.Time) {
			if ns, st, ok := parseStamp(line, contentKey); ok {
				if x := step(st); x != nil {
					x.got.Add(1)
					x.dlv.add(now.Sub(time.Unix(0, ns)))
				}
			}
		})
	if err != nil {
		return err
	}
	defer subs.close()
	fmt.Printf("%d subscribers connected and joined in %.1fs\n", nSubs, time.Since(t0).Seconds())
	var firstErr atomic.Value
	ackType, errType := []byte(`"type":"ack"`), []byte(`"type":"error"`)
	pubs, err := dialMany(s, *nPubs, *conc, func(i int) string { return "p" + itoa(i) }, nil, func(_ int, ws *websocket.Conn) error {
		go readLoop(ws, func(line []byte, now time.Time) {
			switch {
			case bytes.Contains(line, ackType):
				if ns, st, ok := parseStamp(line, clientIDKey); ok {
					if x := step(st); x != nil {
						x.acks.Add(1)
						x.ack.add(now.Sub(time.Unix(0, ns)))
					}
				}
			case bytes.Contains(line, errType):
				if _, st, ok := parseStamp(line, clientIDKey); ok {
					if x := step(st); x != nil {
						x.errs.Add(1)
					}
				}
				firstErr.CompareAndSwap(nil, string(line))
			}
		})
		return nil
	})
	if err != nil {
		return err
	}
	defer closeAll(pubs)
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
		for p, ws := range pubs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				j := 0
				n, err := pace(float64(st.rate)/float64(len(pubs)), *dur, func() error {
					room := "r" + itoa((p+j*len(pubs))%*nRooms)
					j++
					ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
					return ws.WriteMessage(websocket.TextMessage, chatFrame(room, time.Now(), i, *size))
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
		want := st.sent * int64(*perRoom)
		for time.Since(t0) < st.wall+*drain && (st.got.Load() < want || st.acks.Load()+st.errs.Load() < st.sent) {
			time.Sleep(20 * time.Millisecond)
		}
		window := time.Since(t0)
		cur.Store(-1)
		st.delivered, st.acked = st.got.Load(), st.acks.Load()
		u1 := s.usage(true)
		cpu, lg, drops := u1.cpu-u0.cpu, selfCPU()-lg0, subs.dropped.Load()-drop0
		fmt.Printf("%6d %8.0f %9s %9s %9s %9s %6.2f%% %6.2f%% %6d %6.2f %8s %5.2f %5d\n", st.rate, float64(st.sent)/st.wall.Seconds(),
			fmtDur(st.ack.q(.5)), fmtDur(st.ack.q(.99)), fmtDur(st.dlv.q(.5)), fmtDur(st.dlv.q(.99)),
			100*st.loss(*perRoom), 100*st.noAck(), st.errs.Load(), cpu.Seconds()/window.Seconds(), mib(u1.rss), lg.Seconds()/window.Seconds(), drops)
		if err, _ := pubErr.Load().(error); err != nil {
			fmt.Printf("stopping: a publisher failed: %v\n", err)
			break
		}
		if !*keepGoing && (st.loss(*perRoom) >= 0.01 || st.dlv.q(.99) >= time.Second) {
			fmt.Println("stopping: delivery p99 ≥ 1 s or loss ≥ 1 % (-keep-going runs every step)")
			break
		}
	}
	if e, _ := firstErr.Load().(string); e != "" {
		fmt.Printf("first error frame: %s\n", e)
	}
	for _, st := range steps {
		if st.rate == 10000 && st.sent > 0 {
			met := st.ack.q(.99) <= 50*time.Millisecond && st.dlv.q(.99) <= 100*time.Millisecond && st.loss(*perRoom) < 0.01
			fmt.Printf("target at 10 000 msg/s (ack p99 ≤ 50 ms, delivery p99 ≤ 100 ms, loss < 1 %%): %s (ack p99 %s, delivery p99 %s)\n",
				map[bool]string{true: "met", false: "NOT met"}[met], fmtDur(st.ack.q(.99)), fmtDur(st.dlv.q(.99)))
		}
	}
	return nil
}

type roomStep struct {
	rate             int
	sent             int64
	got, acks, errs  atomic.Int64
	dlv, ack         hist
	wall             time.Duration
	delivered, acked int64
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
