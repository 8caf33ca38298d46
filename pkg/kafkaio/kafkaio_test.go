package kafkaio_test

import (
	"context"
	"errors"
	"flag"
	"github.com/chatsys/chat/pkg/testutil"
	"testing"
	"time"

	"github.com/chatsys/chat/pkg/embedkafka"
	"github.com/chatsys/chat/pkg/kafkaio"
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
