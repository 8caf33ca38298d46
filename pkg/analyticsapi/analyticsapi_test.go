package analyticsapi

import (
	"bytes"
	"encoding/json"
	"flag"
	goldenfile "github.com/chatsys/chat/pkg/testutil/golden"
	"reflect"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files")

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	goldenfile.Check(t, name, got, *update, "")
}

func sample() *Results {
	return &Results{Range: Range{From: "2026-11-01", To: "2026-11-03"}, Records: 120, Undecodable: 2, Events: 100,
		Days: []DayResult{
			{Date: "2026-11-01", Users: 12, Words: []WordCount{{1, "hello", 40}, {2, "a,b", 7}, {3, `say "hi"`, 5}, {4, "naïve", 3}, {5, "x\ny", 2}, {6, "sixth", 1}}},
			{Date: "2026-11-02", Users: 0, Words: nil},
			{Date: "2026-11-03", Users: 3, Words: []WordCount{{1, "release", 9}}},
		},
		InputDates: []string{"2026-10-31"}, Note: "a note"}
}

// The files chatctl analytics --out and the job's -analytics.out write.
func TestCSV(t *testing.T) {
	dau, words := sample().CSV()
	golden(t, "dau.csv", dau)
	golden(t, "words.csv", words)
}

func TestSummary(t *testing.T) {
	var b bytes.Buffer
	Summary(&b, sample())
	golden(t, "summary.txt", b.Bytes())
	b.Reset()
	Summary(&b, &Results{Range: Range{From: "2026-11-01", To: "2026-11-01"}})
	golden(t, "summary_empty.txt", b.Bytes())
}

// DayResult is what the admin API answers in "days".
func TestDaysJSON(t *testing.T) {
	days := sample().Days[:1]
	b, err := json.Marshal(days)
	if err != nil {
		t.Fatal(err)
	}
	want := `[{"date":"2026-11-01","users":12,"words":[{"rank":1,"word":"hello","count":40},{"rank":2,"word":"a,b","count":7},{"rank":3,"word":"say \"hi\"","count":5},{"rank":4,"word":"naïve","count":3},{"rank":5,"word":"x\ny","count":2},{"rank":6,"word":"sixth","count":1}]}]`
	if string(b) != want {
		t.Fatalf("days = %s\nwant %s", b, want)
	}
	var back []DayResult
	if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(back, days) {
		t.Fatalf("round trip: %+v, %v", back, err)
	}
}

func TestRange(t *testing.T) {
	r := Range{From: "2026-11-01", To: "2026-11-03"}
	if got := r.Start().Format("2006-01-02T15:04:05Z07:00"); got != "2026-11-01T00:00:00Z" {
		t.Errorf("Start = %s", got)
	}
	if got := r.End().Format("2006-01-02T15:04:05Z07:00"); got != "2026-11-04T00:00:00Z" {
		t.Errorf("End = %s", got)
	}
}
