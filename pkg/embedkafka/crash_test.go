package embedkafka_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/chatsys/chat/pkg/embedkafka"
	"github.com/chatsys/chat/pkg/kafkaio"
)

// childBrokerEnv switches the test binary into a broker process: it runs an
// embedded broker (group commit on) on the data directory the variable
// names, prints "ADDR <host:port>" and serves until its standard input
// closes (so it never outlives the test) or it is killed.
const childBrokerEnv = "EMBEDKAFKA_TEST_CHILD_BROKER_DIR"

func TestMain(m *testing.M) {
	if dir := os.Getenv(childBrokerEnv); dir != "" {
		os.Exit(runChildBroker(dir))
	}
	os.Exit(m.Run())
}

func runChildBroker(dir string) int {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	b := embedkafka.New(embedkafka.Config{Addr: "127.0.0.1:0", DataDir: dir, SyncWrites: true}, log)
	if err := b.Start(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("ADDR %s\n", b.Addr())
	io.Copy(io.Discard, os.Stdin)
	b.Stop(context.Background())
	return 0
}

// childBroker is a broker in another process.
type childBroker struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	addr   string
	exit   chan error
	killed sync.Once
}

func startChildBroker(t *testing.T, dir string) *childBroker {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childBrokerEnv+"="+dir)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	cb := &childBroker{cmd: cmd, stdin: stdin, exit: make(chan error, 1)}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "ADDR "); ok {
				addr <- a
			}
		}
		cb.exit <- cmd.Wait()
	}()
	t.Cleanup(func() { cb.kill() })
	select {
	case cb.addr = <-addr:
	case err := <-cb.exit:
		t.Fatalf("broker process exited before listening: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("broker process did not report its address within 30s")
	}
	return cb
}

// kill SIGKILLs the broker process and waits until it is gone.
func (cb *childBroker) kill() {
	cb.killed.Do(func() {
		cb.cmd.Process.Signal(syscall.SIGKILL)
		<-cb.exit
		cb.stdin.Close()
	})
}

type tpo struct {
	topic     string
	partition int
	offset    int64
}

// TestCrashKeepsEveryAcknowledgedRecord produces concurrently to two topics
// (several partitions each) through kafka-go async writers with acks=all,
// SIGKILLs the broker process while produces are in flight, restarts it on
// the same data directory and reads everything back: every record whose
// produce was acknowledged must be there, at the offset the acknowledgement
// reported, and each partition's offsets must be contiguous from 0.
//
// What this proves: an acknowledgement is sent only for records kfake has
// written to its segment files, the acknowledged offsets are the ones the
// reloaded log assigns, and a crash at any moment leaves a log that loads
// without holes. What it cannot prove: a SIGKILL does not lose the page
// cache, so records written but never fsynced survive it too; that the
// acknowledged bytes were fdatasynced before the acknowledgement is shown by
// TestGroupCommitCoversEveryAcknowledgement from the committer's record of
// its rounds (a real power cut cannot be staged in a test).
func TestCrashKeepsEveryAcknowledgedRecord(t *testing.T) {
	if testing.Short() {
		t.Skip("starts broker processes")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	dir := t.TempDir()
	cb := startChildBroker(t, dir)
	cfg := kafkaio.Config{Brokers: cb.addr, ReplicationFactor: 1}
	topics := map[string]int{"crash.a": 4, "crash.b": 3}
	if _, err := cfg.EnsureTopics(ctx, kafkaio.TopicSpec{Name: "crash.a", Partitions: 4}, kafkaio.TopicSpec{Name: "crash.b", Partitions: 3}); err != nil {
		t.Fatal(err)
	}

	var (
		mu        sync.Mutex
		acked     = make(map[tpo]string)
		failed    int
		submitted atomic.Int64
		ackedN    atomic.Int64
		reached   = make(chan struct{})
		reachedMu sync.Once
		// credits bounds the records queued in the writer but not yet
		// answered, so the producers do not run far ahead of the broker.
		credits = make(chan struct{}, 2000)
	)
	const (
		producers   = 8
		perProducer = 5000 // bound; the kill comes long before
		killAfter   = 4000 // acknowledged records
	)
	completion := func(msgs []kafka.Message, err error) {
		for range msgs {
			<-credits
		}
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			failed += len(msgs)
			return
		}
		for _, m := range msgs {
			k := tpo{m.Topic, m.Partition, m.Offset}
			if prev, dup := acked[k]; dup {
				t.Errorf("offset %v acknowledged twice: %q and %q", k, prev, m.Value)
			}
			acked[k] = string(m.Value)
		}
		if ackedN.Add(int64(len(msgs))) >= killAfter {
			reachedMu.Do(func() { close(reached) })
		}
	}
	w := &kafka.Writer{
		Addr: kafka.TCP(cb.addr), Balancer: &kafka.RoundRobin{}, RequiredAcks: kafka.RequireAll,
		Async: true, Completion: completion, BatchSize: 20, BatchTimeout: time.Millisecond,
		MaxAttempts: 1, WriteTimeout: 5 * time.Second,
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for p := range producers {
		wg.Go(func() {
			for i := range perProducer {
				select {
				case <-stop:
					return
				case credits <- struct{}{}:
				}
				topic := "crash.a"
				if i%2 == 1 {
					topic = "crash.b"
				}
				submitted.Add(1)
				if err := w.WriteMessages(ctx, kafka.Message{Topic: topic, Value: fmt.Appendf(nil, "p%d-%d", p, i)}); err != nil {
					<-credits
					t.Errorf("queue message: %v", err)
					return
				}
			}
		})
	}
	select {
	case <-reached:
	case <-time.After(60 * time.Second):
		t.Fatalf("only %d records acknowledged within 60s", ackedN.Load())
	}
	cb.kill()
	inFlight := submitted.Load() - ackedN.Load()
	close(stop)
	wg.Wait()
	w.Close() // fails what the dead broker never answered
	mu.Lock()
	t.Logf("killed the broker with %d records acknowledged and %d submitted but unacknowledged; %d failed in the end",
		len(acked), inFlight, failed)
	if inFlight == 0 {
		t.Error("no produce was in flight at the kill; the test did not crash mid-write")
	}
	mu.Unlock()

	cb2 := startChildBroker(t, dir)
	cfg.Brokers = cb2.addr
	present := 0
	mu.Lock()
	defer mu.Unlock()
	for topic, n := range topics {
		for part := range n {
			first, next, err := cfg.Offsets(ctx, topic, part)
			if err != nil {
				t.Fatal(err)
			}
			if first != 0 {
				t.Errorf("%s/%d starts at offset %d, want 0", topic, part, first)
			}
			got := readAll(ctx, t, cb2.addr, topic, part, next)
			for i, m := range got {
				if m.Offset != first+int64(i) {
					t.Fatalf("%s/%d: record %d has offset %d, want %d (offsets not contiguous)", topic, part, i, m.Offset, first+int64(i))
				}
			}
			present += len(got)
			for k, v := range acked {
				if k.topic != topic || k.partition != part {
					continue
				}
				i := k.offset - first
				if i < 0 || i >= int64(len(got)) {
					t.Errorf("acknowledged %q at %s/%d offset %d is missing after the crash (log ends at %d)", v, topic, part, k.offset, next)
					continue
				}
				if string(got[i].Value) != v {
					t.Errorf("%s/%d offset %d = %q after the crash, acknowledged as %q", topic, part, k.offset, got[i].Value, v)
				}
			}
		}
	}
	t.Logf("after restart: %d records in the log, all %d acknowledged ones at their acknowledged offsets", present, len(acked))
	if present < len(acked) {
		t.Fatalf("%d records in the log, fewer than the %d acknowledged", present, len(acked))
	}
}

// readAll reads offsets [0, next) of one partition.
func readAll(ctx context.Context, t *testing.T, addr, topic string, part int, next int64) []kafka.Message {
	t.Helper()
	if next == 0 {
		return nil
	}
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: []string{addr}, Topic: topic, Partition: part, MaxWait: 100 * time.Millisecond, MaxBytes: 1 << 20})
	defer r.Close()
	var out []kafka.Message
	for int64(len(out)) < next {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			t.Fatalf("read %s/%d after %d records: %v", topic, part, len(out), err)
		}
		out = append(out, m)
		if m.Offset == next-1 {
			break
		}
	}
	return out
}
