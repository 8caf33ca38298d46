package analytics

import (
	"context"
	"strings"
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

// TestLogAndJSONLinesAgree appends the hand-made events to a real broker,
// keyed as the edge keys them, and checks that reading the log gives the
// same files as reading the JSON lines.
func TestLogAndJSONLinesAgree(t *testing.T) {
	b := embedkafka.New(embedkafka.Config{Addr: "127.0.0.1:0"}, nil)
	ctx := context.Background()
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer b.Stop(ctx)
	var k kafkaio.Config
	k.Brokers, k.RoomsTopic, k.DirectTopic = b.Addr(), "rooms", "direct"
	k.RoomsPartitions, k.DirectPartitions, k.ReplicationFactor = 4, 3, 1
	k.WriteTimeout, k.BatchTimeout = 5*time.Second, time.Millisecond
	if _, err := k.EnsureTopics(ctx, kafkaio.TopicSpec{Name: "rooms", Partitions: 4}, kafkaio.TopicSpec{Name: "direct", Partitions: 3}); err != nil {
		t.Fatal(err)
	}
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
	for _, line := range strings.Split(handMade, "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		ev, err := chatevent.Decode([]byte(line))
		key := "general"
		w := rooms
		if err == nil && ev.Type == chatevent.TypePrivate {
			key, w = chatevent.DMKey(ev.Username, ev.Target), direct
		} else if err == nil {
			key = chatevent.RoomKey(ev.Room)
		}
		if err := w.WriteMessages(ctx, kafka.Message{Key: []byte(key), Value: []byte(line)}); err != nil {
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
