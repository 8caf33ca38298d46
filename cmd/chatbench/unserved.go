package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/segmentio/kafka-go"

	"github.com/chatsys/chat/pkg/chatevent"
	"github.com/chatsys/chat/pkg/kafkaio"
)

// unserved: the CPU an edge spends per room record it does not serve. A
// broker and one edge process (-target=broker, -target=edge); the edge's
// only subscriber is one probe connection in one room per partition. N
// records for other rooms are produced straight to the broker with kafka-go,
// then one record to each probe room: when the probe has all of them, the
// edge has read every partition past the N records. The edge process's CPU
// delta over that span (summed over its threads from schedstat, in ns),
// minus its idle rate, divided by N.
var probeContent = []byte(`"content":"probe-record"`)

func unserved(args []string) error {
	fs := flag.NewFlagSet("unserved", flag.ExitOnError)
	chatBin := fs.String("chat", "bin/chat", "path of the chat binary (make build)")
	n := fs.Int("n", 200000, "records to produce")
	nRooms := fs.Int("rooms", 1000, "rooms the records are spread over (none has a subscriber)")
	size := fs.Int("size", 100, "message content bytes")
	verbose := fs.Bool("v", false, "servers write their logs to stderr")
	fs.Parse(args)
	ctx := context.Background()

	fmt.Printf("unserved: %d records over %d rooms without subscribers, produced straight to the broker; edge CPU per record\n", *n, *nRooms)
	vals := make([]kafka.Message, *n)
	pad := strings.Repeat("x", *size)
	ts := chatevent.FormatTime(time.Now())
	for i := range vals {
		room := "r" + itoa(i%*nRooms)
		v, err := json.Marshal(chatevent.Event{ID: chatevent.NewID(), Type: chatevent.TypeChat, Room: room, Username: "u" + itoa(i%100),
			Content: pad, Timestamp: ts, ClientID: itoa(i)})
		if err != nil {
			return err
		}
		vals[i] = kafka.Message{Key: []byte(chatevent.RoomKey(room)), Value: v}
	}

	s, err := startChat(*chatBin, "split", *verbose)
	if err != nil {
		return err
	}
	defer s.stop()
	k := kafkaio.Config{Brokers: s.broker}
	parts, err := k.EnsureTopics(ctx, kafkaio.TopicSpec{Name: chatevent.TopicRooms, Partitions: 12})
	if err != nil {
		return err
	}
	nParts := parts[chatevent.TopicRooms]
	// One probe room per partition, named so that its key lands there.
	probeRooms := make([]string, nParts)
	for c, left := 0, nParts; left > 0; c++ {
		room := "probe-" + itoa(c)
		if p := kafkaio.PartitionFor(chatevent.RoomKey(room), nParts); probeRooms[p] == "" {
			probeRooms[p] = room
			left--
		}
	}
	probe, err := dialWS(s, s.token("probe"))
	if err != nil {
		return err
	}
	defer closeAll([]*websocket.Conn{probe})
	for _, room := range probeRooms {
		if err := probe.WriteMessage(websocket.TextMessage, []byte(`{"type":"join","room":"`+room+`"}`)); err != nil {
			return err
		}
	}
	var joined, probes atomic.Int64
	allJoined, done := make(chan struct{}), make(chan struct{})
	go readLoop(probe, func(line []byte, _ time.Time) {
		switch {
		case bytes.Contains(line, joinedType):
			if joined.Add(1) == int64(nParts) {
				close(allJoined)
			}
		case bytes.Contains(line, probeContent):
			if probes.Add(1) == int64(nParts) {
				close(done)
			}
		}
	})
	select {
	case <-allJoined:
	case <-time.After(30 * time.Second):
		return fmt.Errorf("the probe joined %d of %d rooms within 30s", joined.Load(), nParts)
	}

	w := &kafka.Writer{
		Addr:         kafka.TCP(s.broker),
		Topic:        chatevent.TopicRooms,
		Balancer:     kafkaio.Balancer(),
		RequiredAcks: kafka.RequireAll,
		BatchSize:    1000,
		BatchTimeout: 5 * time.Millisecond,
		WriteTimeout: 30 * time.Second,
	}
	defer w.Close()

	settle(s, 10*time.Second)
	const idleFor = 3 * time.Second
	edge := s.cmds[len(s.cmds)-1].Process.Pid
	i0 := threadCPU(edge)
	time.Sleep(idleFor)
	idleRate := float64(threadCPU(edge)-i0) / float64(idleFor) // CPU seconds per second

	e0, b0, lg0 := threadCPU(edge), treeUsage(false, s.cmds[0].Process.Pid), selfCPU()
	t0 := time.Now()
	for off := 0; off < len(vals); off += 10000 {
		if err := w.WriteMessages(ctx, vals[off:min(off+10000, len(vals))]...); err != nil {
			return fmt.Errorf("produce: %w", err)
		}
	}
	produced := time.Since(t0)
	var probeMsgs []kafka.Message
	for _, room := range probeRooms {
		v, _ := json.Marshal(chatevent.Event{ID: chatevent.NewID(), Type: chatevent.TypeChat, Room: room, Username: "probe",
			Content: "probe-record", Timestamp: chatevent.FormatTime(time.Now())})
		probeMsgs = append(probeMsgs, kafka.Message{Key: []byte(chatevent.RoomKey(room)), Value: v})
	}
	if err := w.WriteMessages(ctx, probeMsgs...); err != nil {
		return fmt.Errorf("produce the probes: %w", err)
	}
	select {
	case <-done:
	case <-time.After(120 * time.Second):
		return fmt.Errorf("the probe got %d of its %d rooms' records within 120s", probes.Load(), nParts)
	}
	span := time.Since(t0)
	e1, b1, lg := threadCPU(edge), treeUsage(false, s.cmds[0].Process.Pid), selfCPU()-lg0
	_, rss := procStat(edge)
	raw := e1 - e0
	net := raw - time.Duration(idleRate*float64(span))
	per := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 / float64(*n) }
	fmt.Printf("produced in %.2fs; the edge was past them %.2fs after the first (%.0f records/s)\n", produced.Seconds(), span.Seconds(), float64(*n)/span.Seconds())
	fmt.Printf("edge CPU %.3fs (idle rate %.3f cores subtracted: %.3fs): %.2f µs per record raw, %.2f µs net; RSS %s MiB\n",
		raw.Seconds(), idleRate, net.Seconds(), per(raw), per(net), mib(rss))
	fmt.Printf("broker CPU %.3fs, load generator %.3fs (for information)\n", (b1.cpu - b0.cpu).Seconds(), lg.Seconds())
	verdict := "met"
	if per(net) > 2 {
		verdict = "NOT met"
	}
	fmt.Printf("target ≤ 2 µs per unserved record: %s (%.2f µs)\n", verdict, per(net))
	return nil
}
