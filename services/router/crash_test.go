package router

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/chatsys/chat/pkg/chatevent"
	"github.com/chatsys/chat/pkg/kafkaio"
)

// childEnv, when set to a JSON Config, makes the test binary run one router
// until it is killed (see TestMain); it prints "ready" once caught up.
const childEnv = "CHAT_ROUTER_TEST_CHILD"

func runChild(cfgJSON string) int {
	var cfg Config
	if err := json.Unmarshal([]byte(cfgJSON), &cfg); err != nil {
		fmt.Fprintln(os.Stderr, "child config:", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	r, err := New(cfg, log, prometheus.NewRegistry())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ctx := context.Background()
	if err := r.Start(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "start:", err)
		return 1
	}
	errc := make(chan error, 1)
	go func() { errc <- r.Run(ctx) }()
	select {
	case <-r.caughtUpCh:
		fmt.Println("ready")
	case err := <-errc:
		fmt.Fprintln(os.Stderr, "run:", err)
		return 1
	}
	err = <-errc // until killed
	fmt.Fprintln(os.Stderr, "run:", err)
	return 1
}

// startChild starts a router in a process of its own and waits until it is
// caught up.
func startChild(t testing.TB, cfg Config) *exec.Cmd {
	t.Helper()
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+string(b))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if sc.Text() == "ready" {
				ready <- true
				break
			}
		}
		io.Copy(io.Discard, out)
		ready <- false
	}()
	select {
	case ok := <-ready:
		if !ok {
			t.Fatal("router process exited before it was ready")
		}
	case <-time.After(60 * time.Second):
		t.Fatal("router process not ready within 60s")
	}
	return cmd
}

// deliveryLog records when each event id first arrived on chat.deliveries.
type deliveryLog struct {
	mu  sync.Mutex
	got map[string]time.Time
}

func watchDeliveries(t testing.TB, k kafkaio.Config) *deliveryLog {
	t.Helper()
	d := &deliveryLog{got: map[string]time.Time{}}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for p := 0; p < k.SmallPartitions; p++ {
		rd := kafka.NewReader(kafka.ReaderConfig{Brokers: k.BrokerList(), Topic: k.DeliveriesTopic, Partition: p, MaxWait: 50 * time.Millisecond, MaxAttempts: 1 << 30})
		if err := rd.SetOffset(kafka.FirstOffset); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer rd.Close()
			for {
				m, err := rd.ReadMessage(ctx)
				if err != nil {
					return
				}
				if ev, err := chatevent.Decode(m.Value); err == nil {
					d.mu.Lock()
					if _, ok := d.got[ev.ID]; !ok {
						d.got[ev.ID] = time.Now()
					}
					d.mu.Unlock()
				}
			}
		}()
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
	return d
}

func (d *deliveryLog) at(id string) (time.Time, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	at, ok := d.got[id]
	return at, ok
}

// sendDM appends a private message as an edge does and returns its id.
func sendDM(t testing.TB, w *kafka.Writer, from, to, content string) string {
	t.Helper()
	ev := chatevent.Event{ID: chatevent.NewID(), Type: chatevent.TypePrivate, Username: from, Target: to, Content: content,
		Timestamp: chatevent.FormatTime(time.Now()), ClientID: content}
	b, err := ev.Encode()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := w.WriteMessages(ctx, kafka.Message{Key: []byte(chatevent.DMKey(from, to)), Value: b}); err != nil {
		t.Fatal(err)
	}
	return ev.ID
}

// TestDMsRoutedSoonAfterRouterCrash kills a router process (SIGKILL: it
// never leaves the group), sends private messages while no router runs and
// right after a new one started, and checks that the new router routes them
// all within seconds. Some go to chat.direct partitions the killed router
// never committed an offset for.
func TestDMsRoutedSoonAfterRouterCrash(t *testing.T) {
	b := startBroker(t)
	k := testKafka(t, b.Addr())
	cfg := testConfig(k)
	ensureTopics(t, k)

	users := map[string]string{"alice": "e1", "carol": "e1", "bob": "e2", "dave": "e2"}
	edges := map[string]*fakeEdge{"e1": newFakeEdge(t, k, "e1"), "e2": newFakeEdge(t, k, "e2")}
	for u, e := range users {
		edges[e].publish(chatevent.PresenceConnect, u, "", 1)
	}
	for _, e := range edges {
		e.beat(500 * time.Millisecond)
	}
	deliveries := watchDeliveries(t, k)
	w := k.NewWriter(k.DirectTopic)
	defer w.Close()

	first := startChild(t, cfg)
	warm := sendDM(t, w, "alice", "bob", "warm-up")
	eventually(t, 30*time.Second, "the first router to route a message", func() bool { _, ok := deliveries.at(warm); return ok })
	warmPart := kafkaio.PartitionFor(chatevent.DMKey("alice", "bob"), k.DirectPartitions)

	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	first.Wait()
	killed := time.Now()

	// While no router runs: one message per conversation, covering
	// partitions the killed router never committed.
	pairs := [][2]string{{"alice", "bob"}, {"carol", "dave"}, {"alice", "dave"}, {"carol", "bob"}, {"bob", "alice"}, {"dave", "carol"}}
	parts := map[int]bool{}
	var down []string
	for i, p := range pairs {
		down = append(down, sendDM(t, w, p[0], p[1], fmt.Sprint("down-", i)))
		parts[kafkaio.PartitionFor(chatevent.DMKey(p[0], p[1]), k.DirectPartitions)] = true
	}
	delete(parts, warmPart)
	if len(parts) == 0 {
		t.Fatalf("test setup: every conversation hashes to partition %d; pick other users", warmPart)
	}

	restart := time.Now()
	startRouter(t, cfg)
	started := time.Now()
	var after []string
	sentAfter := map[string]time.Time{}
	for i, p := range pairs {
		id := sendDM(t, w, p[0], p[1], fmt.Sprint("after-", i))
		after = append(after, id)
		sentAfter[id] = time.Now()
	}

	const deadline = 15 * time.Second
	eventually(t, deadline+5*time.Second, "every message sent around the restart to be routed", func() bool {
		for _, id := range append(append([]string(nil), down...), after...) {
			if _, ok := deliveries.at(id); !ok {
				return false
			}
		}
		return true
	})
	var delays []time.Duration
	for _, id := range down {
		at, _ := deliveries.at(id)
		delays = append(delays, at.Sub(restart))
	}
	for _, id := range after {
		at, _ := deliveries.at(id)
		delays = append(delays, at.Sub(sentAfter[id]))
	}
	sort.Slice(delays, func(i, j int) bool { return delays[i] < delays[j] })
	var s []string
	for _, d := range delays {
		s = append(s, d.Round(10*time.Millisecond).String())
	}
	t.Logf("router killed %v before the restart; Start took %v; delivery delays (sent while down: from the restart; sent after: from the send): %s",
		restart.Sub(killed).Round(time.Millisecond), started.Sub(restart).Round(time.Millisecond), strings.Join(s, " "))
	if worst := delays[len(delays)-1]; worst > deadline {
		t.Fatalf("worst delivery delay after the restart = %v, want under %v", worst, deadline)
	}
}
