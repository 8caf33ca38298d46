package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode"

	"github.com/segmentio/kafka-go"

	"github.com/chatsys/chat/pkg/chatevent"
	"github.com/chatsys/chat/pkg/kafkaio"
)

// analyticsBench generates realistic logs (Zipf users, rooms and words over
// 30 days), then times the analytics job from JSON lines and from the
// embedded broker against a single-goroutine encoding/json baseline, each in
// its own process so peak RSS is its own.
func analyticsBench(args []string) error {
	fs := flag.NewFlagSet("analytics", flag.ExitOnError)
	sizes := fs.String("n", "1000000,5000000", "event counts")
	chatBin := fs.String("chat", "bin/chat", "path of the chat binary")
	withLog := fs.Bool("log", true, "also measure reading from the embedded broker")
	keep := fs.String("dir", "", "generate into this directory and keep it (default: a temporary one)")
	fs.Parse(args)
	bin, _ := filepath.Abs(*chatBin)
	self, _ := os.Executable()
	fmt.Printf("%-26s %9s %8s %12s %9s\n", "run", "events", "seconds", "events/s", "peak RSS")
	for _, s := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			return err
		}
		dir := filepath.Join(*keep, strconv.Itoa(n))
		if *keep == "" {
			if dir, err = os.MkdirTemp("", "chatbench-analytics-"); err != nil {
				return err
			}
			defer os.RemoveAll(dir)
		}
		from, to, err := generateLogs(dir, n)
		if err != nil {
			return err
		}
		rng := []string{"-analytics.from=" + from, "-analytics.to=" + to}
		base, err := timed("baseline (encoding/json, 1 goroutine)", n, self, append([]string{"analytics-baseline", dir + "/in", dir + "/base"}, rng...)...)
		if err != nil {
			return err
		}
		fast, err := timed("chat -target=analytics jsonl", n, bin, append([]string{"-target=analytics", "-log.level=warn", "-analytics.input=" + dir + "/in", "-analytics.out=" + dir + "/fast"}, rng...)...)
		if err != nil {
			return err
		}
		if err := sameFiles(dir+"/base", dir+"/fast"); err != nil {
			return err
		}
		fmt.Printf("  jsonl: %.2f× the baseline's rate; CSV files identical to the baseline's\n", base.Seconds()/fast.Seconds())
		if *withLog {
			fromLog, err := benchFromBroker(bin, dir, n, rng)
			if err != nil {
				return err
			}
			fmt.Printf("  log: %.2f× the jsonl rate; CSV files identical to the baseline's\n", fast.Seconds()/fromLog.Seconds())
		}
	}
	return nil
}

func timed(name string, n int, bin string, args ...string) (time.Duration, error) {
	cmd := exec.Command(bin, args...)
	cmd.Stderr = os.Stderr
	t0 := time.Now()
	out, err := cmd.Output()
	d := time.Since(t0)
	if err != nil {
		return 0, fmt.Errorf("%s: %w\n%s", name, err, out)
	}
	rss := cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss // KiB on Linux
	fmt.Printf("%-26s %9d %8.2f %12.0f %7.0f MiB\n", name, n, d.Seconds(), float64(n)/d.Seconds(), float64(rss)/1024)
	return d, nil
}

func sameFiles(a, b string) error {
	for _, f := range []string{"dau.csv", "words.csv"} {
		x, err1 := os.ReadFile(filepath.Join(a, f))
		y, err2 := os.ReadFile(filepath.Join(b, f))
		if err1 != nil || err2 != nil {
			return fmt.Errorf("read %s: %v %v", f, err1, err2)
		}
		if !bytes.Equal(x, y) {
			return fmt.Errorf("%s differs between the baseline and chat", f)
		}
	}
	return nil
}

// generateLogs writes n events over 30 days into dir/in/*.jsonl, 1 % of
// them duplicated (the log is at-least-once), and returns the date range.
func generateLogs(dir string, n int) (string, string, error) {
	if err := os.MkdirAll(dir+"/in", 0o755); err != nil {
		return "", "", err
	}
	r := rand.New(rand.NewPCG(7, 8))
	users := rand.NewZipf(r, 1.1, 1, 99999)
	rooms := rand.NewZipf(r, 1.3, 1, 999)
	words := rand.NewZipf(r, 1.05, 1, 49999)
	vocab := make([]string, 50000)
	for i := range vocab {
		vocab[i] = syllables(r, i)
	}
	start := time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC)
	span := 30 * 24 * time.Hour
	const files = 8
	ws := make([]*bufio.Writer, files)
	for i := range ws {
		f, err := os.Create(fmt.Sprintf("%s/in/part-%02d.jsonl", dir, i))
		if err != nil {
			return "", "", err
		}
		defer f.Close()
		ws[i] = bufio.NewWriterSize(f, 1<<20)
		defer ws[i].Flush()
	}
	var sb strings.Builder
	for i := 0; i < n; i++ {
		sb.Reset()
		for w := 0; w < 2+r.IntN(14); w++ {
			if w > 0 {
				sb.WriteByte(' ')
			}
			sb.WriteString(vocab[words.Uint64()])
			if r.IntN(8) == 0 {
				sb.WriteString([]string{",", ".", "!", "?"}[r.IntN(4)])
			}
		}
		ts := start.Add(time.Duration(float64(span) * float64(i) / float64(n)))
		ev := chatevent.Event{ID: chatevent.NewID(), Type: chatevent.TypeChat, Room: fmt.Sprint("room", rooms.Uint64()),
			Username: fmt.Sprint("user", users.Uint64()), Content: sb.String(), Timestamp: chatevent.FormatTime(ts), ClientID: strconv.Itoa(i)}
		if r.IntN(20) == 0 {
			ev.Type, ev.Room, ev.Target = chatevent.TypePrivate, "", fmt.Sprint("user", users.Uint64())
		}
		b, _ := ev.Encode()
		w := ws[i%files]
		w.Write(b)
		w.WriteByte('\n')
		if r.IntN(100) == 0 { // a duplicate, as a producer retry leaves it
			w.Write(b)
			w.WriteByte('\n')
		}
	}
	return start.Format(time.DateOnly), start.Add(span - time.Millisecond).Format(time.DateOnly), nil
}

func syllables(r *rand.Rand, i int) string {
	const cons, vows = "bcdfghklmnprstvz", "aeiou"
	var b strings.Builder
	for k := 0; k < 1+i%4; k++ {
		b.WriteByte(cons[r.IntN(len(cons))])
		b.WriteByte(vows[r.IntN(len(vows))])
	}
	if i%50 == 0 {
		return strings.ToUpper(b.String()[:1]) + b.String()[1:] + "é"
	}
	return b.String()
}

// analyticsBaseline is the straightforward implementation: one goroutine,
// encoding/json, the definitions applied literally.
func analyticsBaseline(args []string) error {
	in, out := args[0], args[1]
	fs := flag.NewFlagSet("baseline", flag.ExitOnError)
	from := fs.String("analytics.from", "", "")
	to := fs.String("analytics.to", "", "")
	fs.Parse(args[2:])
	files, _ := filepath.Glob(filepath.Join(in, "*.jsonl"))
	seen := map[string]bool{}
	users := map[string]map[string]bool{}
	counts := map[string]map[string]int{}
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			return err
		}
		sc := bufio.NewScanner(fh)
		sc.Buffer(make([]byte, 1<<20), 1<<26)
		for sc.Scan() {
			var e struct{ ID, Type, Username, Content, Timestamp string }
			if json.Unmarshal(sc.Bytes(), &e) != nil || (e.Type != "chat" && e.Type != "private") {
				continue
			}
			t, err := time.Parse(time.RFC3339Nano, e.Timestamp)
			if err != nil {
				continue
			}
			date := t.UTC().Format(time.DateOnly)
			if date < *from || date > *to || seen[e.ID] {
				continue
			}
			seen[e.ID] = true
			if users[date] == nil {
				users[date], counts[date] = map[string]bool{}, map[string]int{}
			}
			users[date][e.Username] = true
			for _, w := range strings.FieldsFunc(strings.Map(unicode.ToLower, e.Content), func(r rune) bool {
				return !unicode.IsLetter(r) && !unicode.Is(unicode.Nd, r)
			}) {
				if len([]rune(w)) >= 2 {
					counts[date][w]++
				}
			}
		}
		fh.Close()
	}
	os.MkdirAll(out, 0o755)
	var dates []string
	for d := range users {
		dates = append(dates, d)
	}
	sort.Strings(dates)
	var dau, words bytes.Buffer
	dau.WriteString("date,users\n")
	words.WriteString("date,rank,word,count\n")
	for _, d := range dates {
		fmt.Fprintf(&dau, "%s,%d\n", d, len(users[d]))
		type wc struct {
			w string
			n int
		}
		var l []wc
		for w, n := range counts[d] {
			l = append(l, wc{w, n})
		}
		sort.Slice(l, func(i, j int) bool { return l[i].n > l[j].n || l[i].n == l[j].n && l[i].w < l[j].w })
		for i := 0; i < len(l) && i < 100; i++ {
			fmt.Fprintf(&words, "%s,%d,%s,%d\n", d, i+1, l[i].w, l[i].n)
		}
	}
	os.WriteFile(filepath.Join(out, "dau.csv"), dau.Bytes(), 0o644)
	return os.WriteFile(filepath.Join(out, "words.csv"), words.Bytes(), 0o644)
}

// benchFromBroker loads the same events into an embedded broker process and
// times the job reading the log.
func benchFromBroker(bin, dir string, n int, rng []string) (time.Duration, error) {
	addr := freeAddr()
	broker := exec.Command(bin, "-target=broker", "-broker.addr="+addr, "-http.addr="+freeAddr(), "-data.dir="+dir+"/data", "-broker.sync-writes=false", "-log.level=warn")
	broker.Stderr = os.Stderr
	if err := broker.Start(); err != nil {
		return 0, err
	}
	defer func() { broker.Process.Signal(os.Interrupt); broker.Wait() }()
	k := kafkaio.Config{Brokers: addr, RoomsTopic: "chat.rooms", DirectTopic: "chat.direct", RoomsPartitions: 12, DirectPartitions: 12,
		ReplicationFactor: 1, WriteTimeout: 30 * time.Second, BatchTimeout: 5 * time.Millisecond}
	ctx := context.Background()
	if _, err := k.EnsureTopics(ctx, kafkaio.TopicSpec{Name: "chat.rooms", Partitions: 12}, kafkaio.TopicSpec{Name: "chat.direct", Partitions: 12}); err != nil {
		return 0, err
	}
	rooms, direct := k.NewWriter("chat.rooms"), k.NewWriter("chat.direct")
	rooms.BatchSize, direct.BatchSize = 5000, 5000
	files, _ := filepath.Glob(filepath.Join(dir, "in", "*.jsonl"))
	t0 := time.Now()
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			return 0, err
		}
		sc := bufio.NewScanner(fh)
		var rm, dm []kafka.Message
		flush := func() error {
			if err := rooms.WriteMessages(ctx, rm...); err != nil {
				return err
			}
			if err := direct.WriteMessages(ctx, dm...); err != nil {
				return err
			}
			rm, dm = rm[:0], dm[:0]
			return nil
		}
		for sc.Scan() {
			line := append([]byte(nil), sc.Bytes()...)
			var e struct{ Type, Room, Username, Target string }
			json.Unmarshal(line, &e)
			if e.Type == "private" {
				dm = append(dm, kafka.Message{Key: []byte(chatevent.DMKey(e.Username, e.Target)), Value: line})
			} else {
				rm = append(rm, kafka.Message{Key: []byte(e.Room), Value: line})
			}
			if len(rm)+len(dm) >= 20000 {
				if err := flush(); err != nil {
					return 0, err
				}
			}
		}
		if err := flush(); err != nil {
			return 0, err
		}
		fh.Close()
	}
	rooms.Close()
	direct.Close()
	fmt.Printf("  loaded the log into the embedded broker in %.1fs\n", time.Since(t0).Seconds())
	os.Setenv("CHAT_KAFKA_BROKERS", addr)
	defer os.Unsetenv("CHAT_KAFKA_BROKERS")
	d, err := timed("chat -target=analytics log", n, bin, append([]string{"-target=analytics", "-log.level=warn", "-analytics.out=" + dir + "/log"}, rng...)...)
	if err != nil {
		return 0, err
	}
	return d, sameFiles(dir+"/base", dir+"/log")
}
