package main

import (
	"flag"
	"fmt"
	"time"
)

// setup: connection setup rate. N connections opened by C concurrent
// dialers, each kept open; a connection counts when its handshake answered
// 101 (for the chat that includes verifying its JWT: every connection is a
// different user with its own token, minted before the clock starts).
func setupBench(args []string) error {
	fs := flag.NewFlagSet("setup", flag.ExitOnError)
	var sf sysFlags
	sf.register(fs, "all", true)
	n := fs.Int("n", 5000, "connections")
	conc := fs.Int("dialers", 50, "concurrent dialers")
	fs.Parse(args)
	systems, err := sf.systems()
	if err != nil {
		return err
	}
	fmt.Printf("setup: %d connections opened by %d concurrent dialers (kept open); CPU of each system's process tree (machine: %s)\n", *n, *conc, cores())
	fmt.Printf("%-8s %9s %9s %9s %9s %9s %10s %9s %5s\n", "system", "conns/s", "p50", "p99", "seconds", "cpu s", "µs cpu/conn", "RSS MiB", "lg")
	type result struct{ rate, perConn float64 }
	res := map[string]result{}
	for _, name := range systems {
		s, err := sf.start(name)
		if err != nil {
			return err
		}
		settle(s, 10*time.Second)
		var lat hist
		u0, lg0 := s.usage(false), selfCPU()
		t0 := time.Now()
		conns, err := dialMany(s, *n, *conc, func(i int) string { return "u" + itoa(i) }, &lat, nil)
		wall := time.Since(t0)
		lg := selfCPU() - lg0
		// The work a connection causes after its handshake (the chat's
		// presence records through broker and router) counts too: the CPU
		// is read once the system has gone quiet again.
		settle(s, 10*time.Second)
		u1 := s.usage(true)
		if err != nil {
			s.stop()
			return fmt.Errorf("%s: %w", name, err)
		}
		closeAll(conns)
		s.stop()
		cpu := u1.cpu - u0.cpu
		r := result{float64(*n) / wall.Seconds(), float64(cpu.Microseconds()) / float64(*n)}
		res[name] = r
		fmt.Printf("%-8s %9.0f %9s %9s %9.2f %9.2f %10.0f %9s %5.2f\n", name, r.rate, fmtDur(lat.q(.5)), fmtDur(lat.q(.99)),
			wall.Seconds(), cpu.Seconds(), r.perConn, mib(u1.rss), lg.Seconds()/wall.Seconds())
	}
	if ex, ok := res["example"]; ok {
		if ch, ok := res["chat"]; ok {
			fmt.Printf("\nratios chat/example (same run): conns/s %s, CPU per connection %s\n", ratio(ch.rate, ex.rate), ratio(ch.perConn, ex.perConn))
		}
	}
	return nil
}
