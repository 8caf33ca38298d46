package analytics

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

// benchInput is n JSON lines shaped like real events.
func benchInput(n int) []byte {
	r := rand.New(rand.NewPCG(1, 2))
	words := rand.NewZipf(r, 1.05, 1, 49999)
	users := rand.NewZipf(r, 1.1, 1, 99999)
	var b bytes.Buffer
	start := time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC)
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, `{"id":"01936c4e-%04x-7000-8000-%012x","type":"chat","room":"room%d","username":"user%d","content":"`, i%65536, i, i%100, users.Uint64())
		for w := 0; w < 2+i%14; w++ {
			fmt.Fprintf(&b, "w%d ", words.Uint64())
		}
		fmt.Fprintf(&b, `","timestamp":"%s","client_id":"%d"}`+"\n", start.Add(time.Duration(i)*time.Second).Format("2006-01-02T15:04:05.000Z"), i)
	}
	return b.Bytes()
}

func BenchmarkRunJSONLines(b *testing.B) {
	in := benchInput(200000)
	b.SetBytes(int64(len(in)))
	b.ResetTimer()
	for b.Loop() {
		if _, err := Run(context.Background(), Config{From: "2026-10-01", To: "2026-12-31", Input: "-"}, bytes.NewReader(in), nil); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(200000*b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkRunLog reads the same events from an embedded broker in this
// process (go test -bench RunLog -cpuprofile; the broker's share shows as
// kfake).
func BenchmarkRunLog(b *testing.B) {
	const n = 200000
	k := startLog(b)
	var rooms []kafka.Message
	for i, line := range bytes.Split(benchInput(n), []byte("\n")) {
		if len(line) > 0 {
			rooms = append(rooms, kafka.Message{Key: fmt.Appendf(nil, "room%d", i%100), Value: line})
		}
	}
	w := k.NewWriter(k.RoomsTopic)
	w.BatchSize = 5000
	for len(rooms) > 0 {
		m := rooms[:min(len(rooms), 20000)]
		rooms = rooms[len(m):]
		if err := w.WriteMessages(context.Background(), m...); err != nil {
			b.Fatal(err)
		}
	}
	w.Close()
	b.ResetTimer()
	for b.Loop() {
		res, err := Run(context.Background(), Config{Kafka: k, From: "2026-10-01", To: "2026-12-31"}, nil, nil)
		if err != nil {
			b.Fatal(err)
		}
		if res.Events != n {
			b.Fatalf("%d events, want %d", res.Events, n)
		}
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "events/s")
}
