package analytics

import (
	"context"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/segmentio/kafka-go"

	"github.com/chatsys/chat/pkg/chatevent"
	"github.com/chatsys/chat/pkg/embedkafka"
	"github.com/chatsys/chat/pkg/kafkaio"
	"github.com/chatsys/chat/pkg/pgutil/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// startLog starts an embedded broker with the topics rooms (4 partitions)
// and direct (3).
func startLog(t testing.TB) kafkaio.Config {
	t.Helper()
	b := embedkafka.New(embedkafka.Config{Addr: "127.0.0.1:0"}, nil)
	ctx := context.Background()
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Stop(ctx) })
	var k kafkaio.Config
	k.Brokers, k.RoomsTopic, k.DirectTopic = b.Addr(), "rooms", "direct"
	k.RoomsPartitions, k.DirectPartitions, k.ReplicationFactor = 4, 3, 1
	k.WriteTimeout, k.BatchTimeout = 5*time.Second, time.Millisecond
	if _, err := k.EnsureTopics(ctx, kafkaio.TopicSpec{Name: "rooms", Partitions: 4}, kafkaio.TopicSpec{Name: "direct", Partitions: 3}); err != nil {
		t.Fatal(err)
	}
	return k
}

// logMessages turns JSON lines into records keyed as the edge keys them:
// private messages to direct, everything else to rooms.
func logMessages(lines string) (rooms, direct []kafka.Message) {
	for _, line := range strings.Split(lines, "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		ev, err := chatevent.Decode([]byte(line))
		m := kafka.Message{Key: []byte("general"), Value: []byte(line)}
		if err == nil && ev.Type == chatevent.TypePrivate {
			m.Key = []byte(chatevent.DMKey(ev.Username, ev.Target))
			direct = append(direct, m)
			continue
		}
		if err == nil {
			m.Key = []byte(chatevent.RoomKey(ev.Room))
		}
		rooms = append(rooms, m)
	}
	return rooms, direct
}

// appendLog appends the records through writers with the given compression,
// each call to WriteMessages a batch of up to 100 records per partition.
func appendLog(t *testing.T, k kafkaio.Config, codec kafka.Compression, rooms, direct []kafka.Message) {
	t.Helper()
	ctx := context.Background()
	for topic, ms := range map[string][]kafka.Message{k.RoomsTopic: rooms, k.DirectTopic: direct} {
		w := k.NewWriter(topic)
		w.Compression = codec
		if err := w.WriteMessages(ctx, ms...); err != nil {
			t.Fatal(err)
		}
		w.Close()
	}
}

// TestLogAndJSONLinesAgree appends the hand-made events to a real broker,
// keyed as the edge keys them, and checks that reading the log gives the
// same files as reading the JSON lines.
func TestLogAndJSONLinesAgree(t *testing.T) {
	k := startLog(t)
	ctx := context.Background()
	rooms, direct := k.NewWriter("rooms"), k.NewWriter("direct")
	defer rooms.Close()
	defer direct.Close()
	// Records older than the range, so the reader must start at the range's offsets.
	for i := 0; i < 20; i++ {
		old := `{"id":"01936c4e-0000-7000-8000-0000000001` + string(rune('a'+i%6)) + string(rune('0'+i/6)) + `","type":"chat","room":"general","username":"old","content":"ancient words","timestamp":"2026-10-01T00:00:00.000Z"}`
		if err := rooms.WriteMessages(ctx, kafka.Message{Key: []byte("general"), Value: []byte(old), Time: time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC)}); err != nil {
			t.Fatal(err)
		}
	}
	rm, dm := logMessages(handMade)
	for _, m := range rm { // a batch per record
		if err := rooms.WriteMessages(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range dm {
		if err := direct.WriteMessages(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	res, err := Run(ctx, Config{Kafka: k, From: "2026-11-01", To: "2026-11-02"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	dau, words := res.CSV()
	if string(dau) != wantDAU || string(words) != wantWords {
		t.Fatalf("from the log:\n%s\n%s\nwant the JSON-lines results:\n%s\n%s", dau, words, wantDAU, wantWords)
	}
	if res.Records != int64(len(rm)+len(dm)) || res.Undecodable != 1 {
		t.Errorf("records %d, undecodable %d; want %d (the old ones skipped), 1", res.Records, res.Undecodable, len(rm)+len(dm))
	}

	// A range the log has no message of: the note says where the log
	// starts (the old records) and ends.
	res, err = Run(ctx, Config{Kafka: k, From: "2027-01-01", To: "2027-01-02"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Events != 0 || len(res.InputDates) == 0 || res.InputDates[0] != "2026-10-01" ||
		!strings.HasPrefix(res.Note, "no messages dated 2027-01-01..2027-01-02; the log's messages are dated 2026-10-01 to 2026-11-0") {
		t.Fatalf("empty range: events %d, dates %v, note %q", res.Events, res.InputDates, res.Note)
	}
}

// TestLogCompressedBatches reads batches of many records, compressed with
// each codec.
func TestLogCompressedBatches(t *testing.T) {
	for _, codec := range []kafka.Compression{kafka.Gzip, kafka.Snappy, kafka.Lz4, kafka.Zstd} {
		t.Run(codec.String(), func(t *testing.T) {
			k := startLog(t)
			rm, dm := logMessages(handMade)
			appendLog(t, k, codec, rm, dm)
			res, err := Run(context.Background(), Config{Kafka: k, From: "2026-11-01", To: "2026-11-02"}, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			if dau, words := res.CSV(); string(dau) != wantDAU || string(words) != wantWords {
				t.Fatalf("from %s batches:\n%s\n%s", codec, dau, words)
			}
		})
	}
}

// TestLogChunksAndSmallFetches cuts the partitions into chunks that start
// and end inside batches, fetched one batch at a time by several fetchers,
// with record headers and null values about: every record is read exactly
// once.
func TestLogChunksAndSmallFetches(t *testing.T) {
	defer func(b int32, c int64) { logFetchBytes, minChunk = b, c }(logFetchBytes, minChunk)
	logFetchBytes, minChunk = 1, 3
	k := startLog(t)
	var rooms, direct []kafka.Message
	for range 5 { // the same events five times: duplicates count once
		rm, dm := logMessages(handMade + badStamps)
		for i := range rm {
			rm[i].Headers = []kafka.Header{{Key: "traceparent", Value: []byte("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")}}
		}
		rooms, direct = append(rooms, rm...), append(direct, dm...)
		rooms = append(rooms, kafka.Message{Key: []byte("general")}) // a null value
	}
	appendLog(t, k, 0, rooms, direct)
	for _, workers := range []int{1, 3} {
		res, err := Run(context.Background(), Config{Kafka: k, From: "2026-11-01", To: "2026-11-02", Workers: workers}, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if dau, words := res.CSV(); string(dau) != wantDAU || string(words) != wantWords {
			t.Fatalf("workers=%d:\n%s\n%s", workers, dau, words)
		}
		// Per copy: "not json at all", the null value and badStamps' two.
		if res.Records != int64(len(rooms)+len(direct)) || res.Undecodable != 5*4 || res.Events != 5 {
			t.Fatalf("workers=%d: records %d, undecodable %d, events %d; want %d, 20, 5", workers, res.Records, res.Undecodable, res.Events, len(rooms)+len(direct))
		}
	}
	// A range from before 1970 (record timestamps count milliseconds from
	// then): the whole log, frank's message of the 31st included.
	res, err := Run(context.Background(), Config{Kafka: k, From: "1969-12-31", To: "2026-11-02"}, nil, nil)
	if err != nil || res.Events != 6 {
		t.Fatalf("from 1969-12-31: %v events, %v; want 6", res, err)
	}
}

// TestFetchCanceled checks that ending the run's context ends a fetch the
// broker never answers.
func TestFetchCanceled(t *testing.T) {
	addr := silentBroker(t)
	host, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	pr := partitionRange{part: kafka.Partition{Topic: "rooms", ID: 0, Leader: kafka.Broker{Host: host, Port: p}}, start: 0, end: 10}
	ctx, cancel := context.WithCancel(context.Background())
	var cs fetchConns
	defer context.AfterFunc(ctx, cs.close)()
	pool := sync.Pool{New: func() any { return new([]byte) }}
	errc := make(chan error, 1)
	go func() { errc <- fetchRange(ctx, &cs, pr, &pool, make(chan logChunk)) }()
	time.Sleep(100 * time.Millisecond)
	cancel()
	select {
	case err := <-errc:
		if err == nil {
			t.Fatal("fetchRange returned nil after its context was canceled")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("fetchRange still waiting 5s after its context was canceled")
	}
}

// silentBroker accepts connections and never answers.
func silentBroker(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			go io.Copy(io.Discard, c)
		}
	}()
	return l.Addr().String()
}

func TestRerunReplacesDays(t *testing.T) {
	db := pgtest.NewDatabase(t)
	ctx := context.Background()
	run := func(input string) {
		t.Helper()
		if _, err := Run(ctx, Config{DatabaseURL: db, From: "2026-11-01", To: "2026-11-02", Input: "-"}, strings.NewReader(input), nil); err != nil {
			t.Fatal(err)
		}
	}
	run(handMade)
	run(handMade)
	conn, err := pgx.Connect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	q := func(sql string) int {
		var n int
		if err := conn.QueryRow(ctx, sql).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := q("SELECT count(*) FROM analytics_dau"); n != 2 {
		t.Fatalf("dau rows after two runs = %d, want 2", n)
	}
	if n := q("SELECT count(*) FROM analytics_words"); n != 14 {
		t.Fatalf("word rows after two runs = %d, want 14", n)
	}
	if n := q("SELECT users FROM analytics_dau WHERE date = '2026-11-01'"); n != 3 {
		t.Fatalf("users on 2026-11-01 = %d, want 3", n)
	}
	// A re-run over data without the 2nd removes the 2nd's rows; other dates stay.
	conn.Exec(ctx, "INSERT INTO analytics_dau (date, users) VALUES ('2026-10-15', 9)")
	run(strings.Split(handMade, "\n")[0] + "\n")
	if n := q("SELECT count(*) FROM analytics_dau"); n != 2 {
		t.Fatalf("dau rows = %d, want 2 (2026-11-01 and the untouched 2026-10-15)", n)
	}
	if n := q("SELECT users FROM analytics_dau WHERE date = '2026-11-01'"); n != 1 {
		t.Fatalf("users on 2026-11-01 after the re-run = %d, want 1", n)
	}
}

// Compose's PostgreSQL init script creates chat_reports (Grafana's
// datasource role), and the analytics migration lets it read the analytics
// tables and nothing else: not write them, not read history's messages.
func TestReportsRoleReadsOnlyTheReports(t *testing.T) {
	psql, err := exec.LookPath("psql")
	if err != nil {
		m, _ := filepath.Glob("/usr/lib/postgresql/*/bin/psql")
		if len(m) == 0 {
			t.Skip("psql not found")
		}
		psql = m[len(m)-1]
	}
	db := pgtest.NewDatabase(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = 'chat_reports')").Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if exists { // roles are the cluster's
		t.Skip("role chat_reports exists already on this server (TEST_DATABASE_URL?)")
	}
	cfg := conn.Config()
	path, err := filepath.Abs(filepath.Join("..", "..", "deploy", "compose", "postgres-init", "10-reports-role.sh"))
	if err != nil {
		t.Fatal(err)
	}
	script := exec.Command("sh", path)
	script.Dir = t.TempDir()
	script.Env = []string{"PATH=" + filepath.Dir(psql) + ":/usr/bin:/bin", "PGHOST=" + cfg.Host, "PGPORT=" + strconv.Itoa(int(cfg.Port)),
		"PGPASSWORD=" + cfg.Password, "POSTGRES_USER=" + cfg.User, "POSTGRES_DB=" + cfg.Database, "CHAT_POSTGRES_REPORTS_PASSWORD=s3cret-reports"}
	if out, err := script.CombinedOutput(); err != nil {
		t.Fatalf("init script: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), db)
		if err == nil {
			c.Exec(context.Background(), "DROP OWNED BY chat_reports")
			c.Exec(context.Background(), "DROP ROLE chat_reports")
			c.Close(context.Background())
		}
	})
	if _, err := conn.Exec(ctx, "CREATE TABLE messages (id int)"); err != nil { // history's, in the same database
		t.Fatal(err)
	}
	if _, err := Run(ctx, Config{DatabaseURL: db, From: "2026-11-01", To: "2026-11-02", Input: "-"}, strings.NewReader(handMade), nil); err != nil {
		t.Fatal(err)
	}
	// Logged in as the role, with the script's password.
	rcfg := cfg.Copy()
	rcfg.User, rcfg.Password = "chat_reports", "s3cret-reports"
	rc, err := pgx.ConnectConfig(ctx, rcfg)
	if err != nil {
		t.Fatalf("log in as chat_reports: %v", err)
	}
	defer rc.Close(ctx)
	var users int
	if err := rc.QueryRow(ctx, "SELECT users FROM analytics_dau WHERE date = '2026-11-01'").Scan(&users); err != nil || users != 3 {
		t.Fatalf("chat_reports reads analytics_dau: %d, %v; want 3", users, err)
	}
	for _, sql := range []string{"SELECT count(*) FROM messages", "DELETE FROM analytics_words", "INSERT INTO analytics_dau (date, users) VALUES ('2020-01-01', 1)", "DROP TABLE analytics_dau"} {
		if _, err := rc.Exec(ctx, sql); err == nil || !strings.Contains(err.Error(), "42501") && !strings.Contains(err.Error(), "must be owner") {
			t.Errorf("chat_reports: %s: %v, want permission denied", sql, err)
		}
	}
}
