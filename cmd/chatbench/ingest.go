package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/chatsys/chat/pkg/auth"
	"github.com/chatsys/chat/pkg/chatevent"
	"github.com/chatsys/chat/pkg/embedkafka"
	"github.com/chatsys/chat/pkg/kafkaio"
	"github.com/chatsys/chat/pkg/pgutil"
	"github.com/chatsys/chat/services/history"
)

// ingest measures the history writer (log → PostgreSQL) against a bare COPY
// of the same rows into the same table, then the API's newest-page latency
// on the filled table.
func ingest(args []string) error {
	fs := flag.NewFlagSet("ingest", flag.ExitOnError)
	n := fs.Int("n", 1000000, "events")
	rooms := fs.Int("rooms", 100, "rooms (Zipf-distributed traffic)")
	requests := fs.Int("requests", 2000, "API requests for the latency figures")
	dbURL := fs.String("database-url", "", "a PostgreSQL server to use (its databases chatbench_copy and chatbench_history are replaced); empty starts one")
	batch := fs.Int("batch-size", 5000, "history.batch-size")
	fs.Parse(args)
	ctx := context.Background()

	admin := *dbURL
	if admin == "" {
		dir, err := os.MkdirTemp("", "chatbench-pg-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		os.Chmod(dir, 0o755)
		pg := &pgutil.Server{Dir: filepath.Join(dir, "pg")}
		if err := pg.Start(ctx); err != nil {
			return err
		}
		defer pg.Stop(ctx)
		admin = pg.AdminURL()
	}
	copyURL, err := freshDB(ctx, admin, "chatbench_copy")
	if err != nil {
		return err
	}
	histURL, err := freshDB(ctx, admin, "chatbench_history")
	if err != nil {
		return err
	}

	fmt.Printf("generating %d events over %d rooms\n", *n, *rooms)
	evs := genEvents(*n, *rooms)

	// Baseline: one COPY of the same rows into the same (migrated, indexed) table.
	pool, err := pgutil.Open(ctx, copyURL)
	if err != nil {
		return err
	}
	if err := history.Migrate(ctx, pool); err != nil {
		return err
	}
	t0 := time.Now()
	_, err = pool.CopyFrom(ctx, pgx.Identifier{"messages"},
		[]string{"id", "type", "conversation", "room", "username", "content", "client_id", "created_at", "topic", "log_partition", "log_offset"},
		pgx.CopyFromSlice(len(evs), func(i int) ([]any, error) {
			e := &evs[i]
			t, _ := e.Time()
			return []any{e.ID, e.Type, chatevent.Conversation(e), e.Room, e.Username, e.Content, e.ClientID, t, "chat.rooms", 0, int64(i)}, nil
		}))
	copyDur := time.Since(t0)
	pool.Close()
	if err != nil {
		return fmt.Errorf("bare copy: %w", err)
	}
	copyRate := float64(*n) / copyDur.Seconds()
	fmt.Printf("bare COPY:      %8d rows in %6.2fs = %8.0f rows/s\n", *n, copyDur.Seconds(), copyRate)

	// The same events through the log and the history writer.
	b := embedkafka.New(embedkafka.Config{Addr: "127.0.0.1:0"}, nil)
	if err := b.Start(ctx); err != nil {
		return err
	}
	defer b.Stop(ctx)
	cfg := history.Defaults()
	cfg.Kafka.Brokers = b.Addr()
	cfg.DatabaseURL = histURL
	cfg.Auth = auth.Config{Secret: secret}
	cfg.BatchSize = *batch
	if _, err := cfg.Kafka.EnsureTopics(ctx, kafkaio.TopicSpec{Name: cfg.Kafka.RoomsTopic, Partitions: cfg.Kafka.RoomsPartitions}); err != nil {
		return err
	}
	if err := produceAll(ctx, cfg, evs); err != nil {
		return err
	}
	h, err := history.New(cfg, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		return err
	}
	t0 = time.Now()
	if err := h.Start(ctx); err != nil {
		return err
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- h.Run(rctx) }()
	pool, err = pgutil.Open(ctx, histURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	var firstRow time.Time
	for {
		var got int
		if err := pool.QueryRow(ctx, "SELECT count(*) FROM messages").Scan(&got); err != nil {
			return err
		}
		if got > 0 && firstRow.IsZero() {
			firstRow = time.Now()
		}
		if got >= *n {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	ingestDur := time.Since(t0)
	fmt.Printf("history writer: joined the group and wrote its first batch after %.2fs\n", firstRow.Sub(t0).Seconds())
	ingestRate := float64(*n) / ingestDur.Seconds()
	fmt.Printf("history writer: %8d rows in %6.2fs = %8.0f rows/s (batch-size %d): %.2f× the bare COPY\n", *n, ingestDur.Seconds(), ingestRate, *batch, ingestRate/copyRate)

	// API latency: the newest page of a room, over HTTP to the real handler.
	mux := http.NewServeMux()
	h.Routes(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	tok, _ := auth.NewHS256Minter(secret, "").Mint("bench", false, time.Hour)
	var lat []time.Duration
	client := srv.Client()
	for i := 0; i < *requests; i++ {
		room := fmt.Sprint("room", zipfRoom(*rooms))
		req, _ := http.NewRequest("GET", srv.URL+"/v1/rooms/"+room+"/messages?limit=50", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		t := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		var buf [4096]byte
		for {
			if _, err := resp.Body.Read(buf[:]); err != nil {
				break
			}
		}
		resp.Body.Close()
		lat = append(lat, time.Since(t))
		if resp.StatusCode != 200 {
			return fmt.Errorf("api: %s", resp.Status)
		}
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	fmt.Printf("API newest page (limit 50) on a %d-row table, %d requests: p50 %v, p99 %v\n", *n, *requests,
		lat[len(lat)/2].Round(10*time.Microsecond), lat[len(lat)*99/100].Round(10*time.Microsecond))
	cancel()
	<-done
	return h.Stop(ctx)
}

var zipfGen = rand.NewZipf(rand.New(rand.NewPCG(1, 2)), 1.2, 1, 99)

func zipfRoom(rooms int) int { return int(zipfGen.Uint64()) % rooms }

func genEvents(n, rooms int) []chatevent.Event {
	words := []string{"hello", "world", "kafka", "postgres", "lunch", "deploy", "review", "the", "a", "is", "ok", "thanks", "merge", "build", "test"}
	r := rand.New(rand.NewPCG(3, 4))
	base := time.Now().Add(-time.Duration(n) * time.Millisecond)
	evs := make([]chatevent.Event, n)
	for i := range evs {
		content := ""
		for w := 0; w < 3+r.IntN(12); w++ {
			content += words[r.IntN(len(words))] + " "
		}
		evs[i] = chatevent.Event{ID: chatevent.NewID(), Type: chatevent.TypeChat, Room: fmt.Sprint("room", zipfRoom(rooms)),
			Username: fmt.Sprint("user", r.IntN(5000)), Content: content, Timestamp: chatevent.FormatTime(base.Add(time.Duration(i) * time.Millisecond)),
			ClientID: fmt.Sprint("c", i)}
	}
	return evs
}

func produceAll(ctx context.Context, cfg history.Config, evs []chatevent.Event) error {
	w := cfg.Kafka.NewWriter(cfg.Kafka.RoomsTopic)
	w.BatchSize = 5000
	defer w.Close()
	t0 := time.Now()
	const chunk = 20000
	for i := 0; i < len(evs); i += chunk {
		msgs := make([]kafka.Message, 0, chunk)
		for j := i; j < min(i+chunk, len(evs)); j++ {
			b, _ := evs[j].Encode()
			msgs = append(msgs, kafka.Message{Key: []byte(evs[j].Room), Value: b})
		}
		if err := w.WriteMessages(ctx, msgs...); err != nil {
			return err
		}
	}
	fmt.Printf("produced %d events to the log in %.1fs\n", len(evs), time.Since(t0).Seconds())
	return nil
}

func freshDB(ctx context.Context, admin, name string) (string, error) {
	c, err := pgx.Connect(ctx, admin)
	if err != nil {
		return "", err
	}
	defer c.Close(ctx)
	c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
	if _, err := c.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", err
	}
	cfg, err := pgx.ParseConfig(admin)
	if err != nil {
		return "", err
	}
	u := fmt.Sprintf("postgres://%s:%s@%s:%d/%s?sslmode=disable", cfg.User, cfg.Password, cfg.Host, cfg.Port, name)
	return u, nil
}
