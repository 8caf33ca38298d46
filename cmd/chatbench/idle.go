package main

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// idle: resident memory per idle connection: the whole process tree's RSS
// (and PSS) with N idle connections minus before any, divided by N.
func idle(args []string) error {
	fs := flag.NewFlagSet("idle", flag.ExitOnError)
	var sf sysFlags
	sf.register(fs, "all", true)
	n := fs.Int("n", 10000, "connections")
	conc := fs.Int("dialers", 50, "concurrent dialers")
	room := fs.String("room", "lobby", "room every chat connection joins (empty: none); the example has one room everyone is in")
	hold := fs.Duration("hold", 5*time.Second, "how long the connections stay idle before measuring")
	fs.Parse(args)
	systems, err := sf.systems()
	if err != nil {
		return err
	}
	fmt.Printf("idle: %d connections (each its own user), held %v; memory of each system's whole process tree, minus before connecting\n", *n, *hold)
	fmt.Printf("%-8s %5s %11s %11s %11s %11s %12s %12s\n", "system", "procs", "RSS before", "RSS after", "PSS before", "PSS after", "RSS KiB/conn", "PSS KiB/conn")
	per := map[string][2]float64{}
	for _, name := range systems {
		s, err := sf.start(name)
		if err != nil {
			return err
		}
		settle(s, 10*time.Second)
		u0 := s.usage(true)
		m0 := goMem(s)
		subs, err := subscribe(s, *n, *conc, func(i int) string { return "u" + itoa(i) }, func(int) string { return *room }, func([]byte, time.Time) {})
		if err != nil {
			s.stop()
			return fmt.Errorf("%s: %w", name, err)
		}
		time.Sleep(*hold)
		u1 := s.usage(true)
		m1 := goMem(s)
		subs.close()
		s.stop()
		r := float64(u1.rss-u0.rss) / float64(*n) / 1024
		p := float64(u1.pss-u0.pss) / float64(*n) / 1024
		per[name] = [2]float64{r, p}
		fmt.Printf("%-8s %5d %7s MiB %7s MiB %7s MiB %7s MiB %12.1f %12.1f\n", name, u1.procs, mib(u0.rss), mib(u1.rss), mib(u0.pss), mib(u1.pss), r, p)
		if m0 != nil && m1 != nil {
			for _, k := range []string{"go_memstats_stack_inuse_bytes", "go_memstats_heap_inuse_bytes", "go_goroutines"} {
				fmt.Printf("%-8s   %s: %.1f per connection (the chat process's Go runtime)\n", "", k, (m1[k]-m0[k])/float64(*n))
			}
		}
	}
	if ex, ok := per["example"]; ok {
		if ch, ok := per["chat"]; ok {
			fmt.Printf("\nratios chat/example (same run): RSS per connection %s, PSS per connection %s\n", ratio(ch[0], ex[0]), ratio(ch[1], ex[1]))
		}
	}
	return nil
}

// goMem reads the Go runtime gauges of the chat's /metrics (nil for the example).
func goMem(s *server) map[string]float64 {
	if !s.chat {
		return nil
	}
	resp, err := http.Get("http://" + s.addr + "/metrics")
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
