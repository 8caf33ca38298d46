package kafkaio_test

import (
	"context"
	"errors"
	"flag"
	"net"

	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/chatsys/chat/pkg/embedkafka"
	"github.com/chatsys/chat/pkg/kafkaio"
	"github.com/chatsys/chat/pkg/testutil"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	return testutil.FreePort(t)
}

func config(addr string) kafkaio.Config {
	var c kafkaio.Config
	c.RegisterFlags(flag.NewFlagSet("t", flag.ContinueOnError)) // defaults only
	c.Brokers = addr
	return c
}

// EnsureTopics waits for a broker that is still starting, and gives up
// with ctx's error (and the last failure) when ctx ends first.
func TestEnsureTopicsRetries(t *testing.T) {
	addr := freeAddr(t)
	c := config(addr)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	_, err := c.EnsureTopics(ctx, kafkaio.TopicSpec{Name: "t1", Partitions: 2})
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("EnsureTopics with no broker = %v, want an error wrapping context.DeadlineExceeded", err)
	}

	b := embedkafka.New(embedkafka.Config{Addr: addr}, nil)
	time.AfterFunc(500*time.Millisecond, func() {
		if err := b.Start(context.Background()); err != nil {
			t.Error(err)
		}
	})
	t.Cleanup(func() { b.Stop(context.Background()) })
	ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	counts, err := c.EnsureTopics(ctx, kafkaio.TopicSpec{Name: "t1", Partitions: 2}, kafkaio.TopicSpec{Name: "t2", Partitions: 3})
	if err != nil || counts["t1"] != 2 || counts["t2"] != 3 {
		t.Fatalf("EnsureTopics with a broker starting late = %v, %v; want t1:2 t2:3", counts, err)
	}
}

// GroupLag counts from the group's committed offset to each partition's
// end, from the first offset where nothing is committed, for every
// partition whoever asks.
func TestGroupLag(t *testing.T) {
	addr := freeAddr(t)
	b := embedkafka.New(embedkafka.Config{Addr: addr}, nil)
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Stop(context.Background()) })
	c := config(addr)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.EnsureTopics(ctx, kafkaio.TopicSpec{Name: "lagged", Partitions: 2}); err != nil {
		t.Fatal(err)
	}
	cl := c.Client()
	produce := func(p, n int) {
		t.Helper()
		recs := make([]kafka.Record, n)
		for i := range recs {
			recs[i] = kafka.Record{Value: kafka.NewBytes([]byte("x"))}
		}
		res, err := cl.Produce(ctx, &kafka.ProduceRequest{Topic: "lagged", Partition: p, RequiredAcks: kafka.RequireAll, Records: kafka.NewRecordReader(recs...)})
		if err != nil || res.Error != nil {
			t.Fatalf("produce: %v %v", err, res)
		}
	}
	produce(0, 5)
	produce(1, 3)
	lag, err := c.GroupLag(ctx, "g", map[string]int{"lagged": 2})
	if err != nil || lag["lagged"][0] != 5 || lag["lagged"][1] != 3 {
		t.Fatalf("lag of a group with no commits = %v, %v; want 0:5 1:3", lag, err)
	}
	res, err := cl.OffsetCommit(ctx, &kafka.OffsetCommitRequest{GroupID: "g", GenerationID: -1,
		Topics: map[string][]kafka.OffsetCommit{"lagged": {{Partition: 0, Offset: 2}, {Partition: 1, Offset: 3}}}})
	if err != nil || res.Topics["lagged"][0].Error != nil {
		t.Fatalf("commit: %v %v", err, res)
	}
	produce(1, 4)
	lag, err = c.GroupLag(ctx, "g", map[string]int{"lagged": 2})
	if err != nil || lag["lagged"][0] != 3 || lag["lagged"][1] != 4 {
		t.Fatalf("lag after commits = %v, %v; want 0:3 1:4", lag, err)
	}
}

// Reachable asks the broker: a listener that accepts connections but never
// answers (a frozen broker) is not reachable.
func TestReachableNeedsAnAnswer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		var held []net.Conn // accepted, never answered
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	t0 := time.Now()
	silent := config(ln.Addr().String())
	if err := silent.Reachable(context.Background()); err == nil || time.Since(t0) > 5*time.Second {
		t.Fatalf("Reachable of a silent listener = %v after %v, want an error within a second or so", err, time.Since(t0))
	}
	addr := freeAddr(t)
	b := embedkafka.New(embedkafka.Config{Addr: addr}, nil)
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer b.Stop(context.Background())
	running := config(addr)
	if err := running.Reachable(context.Background()); err != nil {
		t.Fatalf("Reachable of a running broker: %v", err)
	}
}
