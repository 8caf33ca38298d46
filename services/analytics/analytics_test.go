package analytics

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestTokenize(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []string
	}{
		{"punctuation", "Hello, world! (hi)...ok?", []string{"hello", "world", "hi", "ok"}},
		{"digits", "in 2026 we had 42 rooms, 7 days, 3x4", []string{"in", "2026", "we", "had", "42", "rooms", "days", "3x4"}},
		{"one-letter tokens dropped", "a b c de f", []string{"de"}},
		{"emoji separates", "fun🙂times 🎉 yay", []string{"fun", "times", "yay"}},
		{"url", "https://Example.com/Path?q=1&lang=en", []string{"https", "example", "com", "path", "lang", "en"}},
		{"mixed scripts", "Привет мир, 日本語テキスト mixed日本 héllo", []string{"привет", "мир", "日本語テキスト", "mixed日本", "héllo"}},
		{"non-ascii uppercase", "ÉCOLE ÜBER STRASSE Straße ΣΟΦΙΑ", []string{"école", "über", "strasse", "straße", "σοφια"}},
		{"apostrophes and hyphens split", "don't well-known", []string{"don", "well", "known"}},
		{"only Nd digits: not Nl, No", "ⅫⅫ ½½ ²³ ٤٢", []string{"٤٢"}},
		{"underscore splits", "snake_case_word", []string{"snake", "case", "word"}},
		{"invalid utf-8 splits", "ab\xffcd", []string{"ab", "cd"}},
		{"empty", "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			Tokenize(tc.in, nil, func(w []byte) { got = append(got, string(w)) })
			if strings.Join(got, "|") != strings.Join(tc.want, "|") {
				t.Fatalf("Tokenize(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

// handMade is a small log with hand-computed results (see wantDAU, wantWords).
const handMade = `{"id":"01936c4e-0000-7000-8000-000000000001","type":"chat","room":"general","username":"alice","content":"Hello, World! hello","timestamp":"2026-11-01T10:00:00.000Z","client_id":"1"}
{"id":"01936c4e-0000-7000-8000-000000000002","type":"chat","room":"general","username":"bob","content":"Straße ÉCOLE école 42 x a","timestamp":"2026-11-01T23:59:59.999Z","pos":"3:7","extra":{"nested":[1,2.5e3,{"a":"b"}],"t":true,"n":null}}
{"type":"chat","id":"01936c4e-0000-7000-8000-000000000003","room":"general","username":"alice","content":"see https://Example.com/Path?q=1 🙂 ok","timestamp":"2026-11-02T00:00:00.000Z"}
{"id":"01936c4e-0000-7000-8000-000000000001","type":"chat","room":"general","username":"alice","content":"Hello, World! hello","timestamp":"2026-11-01T10:00:00.000Z","client_id":"1"}

{"id":"01936c4e-0000-7000-8000-000000000004","type":"chat","room":"intl","username":"carol","content":"\u65e5\u672c\u8a9e\u30c6\u30ad\u30b9\u30c8 mixed日本 hello","timestamp":"2026-11-02T01:30:00+02:00"}
{"id":"01936c4e-0000-7000-8000-000000000005","type":"system","username":"dave","content":"maintenance maintenance","timestamp":"2026-11-01T12:00:00.000Z"}
{"id":"01936c4e-0000-7000-8000-000000000006","type":"private","target":"alice","username":"erin","content":"hello hello","timestamp":"2026-11-02T12:00:00.000Z"}
{"id":"01936c4e-0000-7000-8000-000000000007","type":"chat","room":"general","username":"frank","content":"too early","timestamp":"2026-10-31T23:59:59.999Z"}
{"id":"01936c4e-0000-7000-8000-000000000008","type":"chat","room":"general","username":"ghost","content":"too late","timestamp":"2026-11-03T00:00:00.000Z"}
not json at all
{"id":"01936c4e-0000-7000-8000-000000000009","type":"join","room":"general","username":"alice","timestamp":"2026-11-01T09:00:00.000Z"}
`

const wantDAU = "date,users\n2026-11-01,3\n2026-11-02,2\n"

const wantWords = `date,rank,word,count
2026-11-01,1,hello,3
2026-11-01,2,école,2
2026-11-01,3,42,1
2026-11-01,4,mixed日本,1
2026-11-01,5,straße,1
2026-11-01,6,world,1
2026-11-01,7,日本語テキスト,1
2026-11-02,1,hello,2
2026-11-02,2,com,1
2026-11-02,3,example,1
2026-11-02,4,https,1
2026-11-02,5,ok,1
2026-11-02,6,path,1
2026-11-02,7,see,1
`

func TestHandMadeLog(t *testing.T) {
	for _, workers := range []int{1, 3} {
		res, err := Run(context.Background(), Config{From: "2026-11-01", To: "2026-11-02", Input: "-", Workers: workers}, strings.NewReader(handMade), nil)
		if err != nil {
			t.Fatal(err)
		}
		dau, words := res.CSV()
		if string(dau) != wantDAU {
			t.Errorf("workers=%d dau.csv =\n%s\nwant\n%s", workers, dau, wantDAU)
		}
		if string(words) != wantWords {
			t.Errorf("workers=%d words.csv =\n%s\nwant\n%s", workers, words, wantWords)
		}
		if res.Events != 5 {
			t.Errorf("events = %d, want 5 (duplicate, system, join, undecodable and out-of-range excluded)", res.Events)
		}
	}
}

// badStamps are messages without a usable timestamp (undecodable) and a
// join without one (not a message: ignored).
const badStamps = `{"id":"01936c4e-0000-7000-8000-0000000000b1","type":"chat","room":"general","username":"zed","content":"no time"}
{"id":"01936c4e-0000-7000-8000-0000000000b2","type":"private","target":"alice","username":"zed","content":"bad time","timestamp":"yesterday"}
{"id":"01936c4e-0000-7000-8000-0000000000b3","type":"join","room":"general","username":"zed"}
`

func TestBadTimestampsCountAsUndecodable(t *testing.T) {
	res, err := Run(context.Background(), Config{From: "2026-11-01", To: "2026-11-02", Input: "-"}, strings.NewReader(handMade+badStamps), nil)
	if err != nil {
		t.Fatal(err)
	}
	if dau, words := res.CSV(); string(dau) != wantDAU || string(words) != wantWords {
		t.Fatalf("results changed:\n%s\n%s", dau, words)
	}
	if res.Records != 14 || res.Undecodable != 3 {
		t.Fatalf("records %d, undecodable %d; want 14, 3 (not json, no timestamp, unparseable timestamp)", res.Records, res.Undecodable)
	}
	var sb strings.Builder
	Summary(&sb, res)
	if !strings.Contains(sb.String(), "3 of 14 records undecodable or without a valid timestamp") {
		t.Fatalf("summary does not report them:\n%s", sb.String())
	}
}

// conversationEvents are what issue 12 added to the log: an edit and a
// delete of a counted message, read positions, a typing notice. None counts.
const conversationEvents = `{"id":"01936c4e-0000-7000-8000-0000000000c1","type":"read","room":"general","username":"newcomer","timestamp":"2026-11-01T10:00:00.000Z","pos":"0:1"}
{"id":"01936c4e-0000-7000-8000-0000000000c2","type":"read","target":"bob","username":"stranger","timestamp":"2026-11-01T10:00:00.000Z","pos":"0:1"}
{"type":"typing","room":"general","username":"typist"}
`

func TestEditsDeletesAndReadsDoNotCount(t *testing.T) {
	// Edit and delete every message of the hand-made log, under new words.
	var changes strings.Builder
	for _, line := range strings.Split(handMade, "\n") {
		var e Event
		if json.Unmarshal([]byte(line), &e) != nil || (e.Type != "chat" && e.Type != "private") {
			continue
		}
		for _, typ := range []string{"edit", "delete"} {
			c := map[string]string{"id": e.ID, "type": typ, "room": "general", "username": "editor",
				"content": "replacement wording", "timestamp": e.Timestamp, "edited_at": e.Timestamp}
			b, _ := json.Marshal(c)
			changes.Write(append(b, '\n'))
		}
	}
	res, err := Run(context.Background(), Config{From: "2026-11-01", To: "2026-11-02", Input: "-"}, strings.NewReader(handMade+changes.String()+conversationEvents), nil)
	if err != nil {
		t.Fatal(err)
	}
	if dau, words := res.CSV(); string(dau) != wantDAU || string(words) != wantWords {
		t.Fatalf("edits, deletes or reads changed the results:\n%s\n%s", dau, words)
	}
}

func TestEmptyRangeSaysWhichDatesTheInputHolds(t *testing.T) {
	var logged strings.Builder
	log := slog.New(slog.NewTextHandler(&logged, nil))
	res, err := Run(context.Background(), Config{From: "2026-12-01", To: "2026-12-03", Input: "-"}, strings.NewReader(handMade), log)
	if err != nil {
		t.Fatal(err)
	}
	// frank's is the 31st, ghost's the 3rd; carol's is the 1st in UTC; dave's is not a message.
	const want = "no messages dated 2026-12-01..2026-12-03; the input holds messages dated 2026-10-31..2026-11-03"
	if res.Events != 0 || res.Note != want || strings.Join(res.InputDates, " ") != "2026-10-31 2026-11-01 2026-11-02 2026-11-03" {
		t.Fatalf("events %d, note %q, dates %v; want 0, %q", res.Events, res.Note, res.InputDates, want)
	}
	if !strings.Contains(logged.String(), want) {
		t.Errorf("the log output does not say it:\n%s", logged.String())
	}
	var sb strings.Builder
	Summary(&sb, res)
	if !strings.Contains(sb.String(), want) {
		t.Errorf("the summary does not say it:\n%s", sb.String())
	}

	// The default range (yesterday) says it is the default.
	res, err = Run(context.Background(), Config{Input: "-"}, strings.NewReader(handMade), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(res.Note, "(yesterday, the default range); the input holds messages dated 2026-10-31..2026-11-03") {
		t.Fatalf("default range: note %q", res.Note)
	}
	// An input without any message.
	res, err = Run(context.Background(), Config{From: "2026-11-01", Input: "-"}, strings.NewReader("not json\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(res.Note, "; the input holds no messages") {
		t.Fatalf("no messages at all: note %q", res.Note)
	}
	// A range that matches: no note.
	res, _ = Run(context.Background(), Config{From: "2026-11-01", Input: "-"}, strings.NewReader(handMade), nil)
	if res.Note != "" || res.InputDates != nil {
		t.Fatalf("a range with messages: note %q, dates %v", res.Note, res.InputDates)
	}
}

func TestDescribeDates(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want string
	}{
		{nil, ""},
		{[]string{"2026-11-01"}, "2026-11-01"},
		{[]string{"2026-02-27", "2026-02-28", "2026-03-01", "2026-03-03"}, "2026-02-27..2026-03-01, 2026-03-03"},
		{[]string{"2026-01-01", "2026-01-03", "2026-01-05", "2026-01-07", "2026-01-09", "2026-01-11", "2026-01-13", "2026-01-14"},
			"2026-01-01, 2026-01-03, 2026-01-05, 2026-01-07, 2026-01-09, 2026-01-11, and 2 more dates"},
	} {
		if got := describeDates(tc.in); got != tc.want {
			t.Errorf("describeDates(%v) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestDateBoundaries(t *testing.T) {
	lines := `{"id":"a","type":"chat","username":"u1","content":"xx","timestamp":"2026-11-01T23:59:59.999Z"}
{"id":"b","type":"chat","username":"u2","content":"yy","timestamp":"2026-11-02T00:00:00.000Z"}
{"id":"c","type":"chat","username":"u3","content":"zz","timestamp":"2026-11-02T00:59:59.999+01:00"}
{"id":"d","type":"chat","username":"u4","content":"ww","timestamp":"2026-11-01T19:00:00-05:00"}
`
	res, err := Run(context.Background(), Config{From: "2026-11-01", To: "2026-11-02", Input: "-"}, strings.NewReader(lines), nil)
	if err != nil {
		t.Fatal(err)
	}
	dau, _ := res.CSV()
	// c is 23:59:59.999 on the 1st in UTC; d is midnight of the 2nd.
	if want := "date,users\n2026-11-01,2\n2026-11-02,2\n"; string(dau) != want {
		t.Fatalf("dau.csv =\n%s\nwant\n%s", dau, want)
	}
}

func TestWordsCSVQuotingAndTop100(t *testing.T) {
	r := &Results{Days: []DayResult{{Date: "2026-11-01", Users: 1, Words: []WordCount{{Rank: 1, Word: `a,b"c`, Count: 2}, {Rank: 2, Word: "line\nbreak", Count: 1}}}}}
	_, words := r.CSV()
	want := "date,rank,word,count\n2026-11-01,1,\"a,b\"\"c\",2\n2026-11-01,2,\"line\nbreak\",1\n"
	if string(words) != want {
		t.Fatalf("words.csv = %q, want %q", words, want)
	}
	var sb strings.Builder
	for i := 0; i < 150; i++ {
		w := strings.Repeat(string(rune('a'+i%26)), 2+i/26)
		for j := 0; j <= i%7; j++ {
			sb.WriteString(`{"id":"` + w + string(rune('0'+j)) + `","type":"chat","username":"u","content":"` + w + `","timestamp":"2026-11-01T00:00:00.000Z"}` + "\n")
		}
	}
	res, err := Run(context.Background(), Config{From: "2026-11-01", To: "2026-11-01", Input: "-"}, strings.NewReader(sb.String()), nil)
	if err != nil {
		t.Fatal(err)
	}
	ws := res.Days[0].Words
	if len(ws) != TopWords || ws[0].Rank != 1 || ws[99].Rank != 100 {
		t.Fatalf("got %d words, ranks %d..%d; want the top 100", len(ws), ws[0].Rank, ws[len(ws)-1].Rank)
	}
	for i := 1; i < len(ws); i++ {
		if ws[i].Count > ws[i-1].Count || ws[i].Count == ws[i-1].Count && ws[i].Word < ws[i-1].Word {
			t.Fatalf("order broken at rank %d: %+v after %+v", i+1, ws[i], ws[i-1])
		}
	}
}

func TestInputDirectoryAndOut(t *testing.T) {
	dir := t.TempDir()
	lines := strings.Split(strings.TrimSpace(handMade), "\n")
	os.WriteFile(filepath.Join(dir, "a.jsonl"), []byte(strings.Join(lines[:5], "\n")+"\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "b.jsonl"), []byte(strings.Join(lines[5:], "\n")), 0o644) // no final newline
	os.WriteFile(filepath.Join(dir, "ignored.txt"), []byte("garbage"), 0o644)
	out := filepath.Join(t.TempDir(), "out")
	if _, err := Run(context.Background(), Config{From: "2026-11-01", To: "2026-11-02", Input: dir, Out: out}, nil, nil); err != nil {
		t.Fatal(err)
	}
	dau, _ := os.ReadFile(filepath.Join(out, "dau.csv"))
	words, _ := os.ReadFile(filepath.Join(out, "words.csv"))
	if string(dau) != wantDAU || string(words) != wantWords {
		t.Fatalf("files from a directory differ:\n%s\n%s", dau, words)
	}
	if _, err := Run(context.Background(), Config{From: "2026-11-01", Input: t.TempDir()}, nil, nil); err == nil {
		t.Fatal("a directory without *.jsonl: nil error, want one")
	}
}

func TestParseRange(t *testing.T) {
	for _, tc := range []struct {
		from, to string
		ok       bool
	}{{"2026-11-01", "2026-11-27", true}, {"2026-11-01", "2026-11-01", true}, {"2026-11-02", "2026-11-01", false}, {"11/01/2026", "2026-11-02", false}, {"2026-11-01", "", false}} {
		if _, err := ParseRange(tc.from, tc.to); (err == nil) != tc.ok {
			t.Errorf("ParseRange(%q, %q) error = %v, want ok %v", tc.from, tc.to, err, tc.ok)
		}
	}
}

// FuzzParseEvent checks the hand-written scanner against encoding/json.
func FuzzParseEvent(f *testing.F) {
	for _, l := range strings.Split(handMade, "\n") {
		f.Add([]byte(l))
	}
	f.Add([]byte(`{"content":"a\"b\\c\u00e9\ud83d\ude00\ud800x","id":"1"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var got Event
		err := scanEvent(b, &got)
		var want struct {
			ID        string `json:"id"`
			Type      string `json:"type"`
			Username  string `json:"username"`
			Content   string `json:"content"`
			Timestamp string `json:"timestamp"`
		}
		jerr := json.Unmarshal(b, &want)
		if err != nil {
			return // the scanner defers to encoding/json for anything it does not take
		}
		if jerr != nil {
			t.Fatalf("scanner accepted %q, encoding/json: %v", b, jerr)
		}
		if bytes.ContainsAny(b, "ABCDEFGHIJKLMNOPQRSTUVWXYZ\u017f\u212a") {
			return // encoding/json matches keys case-insensitively; the contract's keys are lowercase
		}
		w := Event{ID: want.ID, Type: want.Type, Username: want.Username, Content: want.Content, Timestamp: want.Timestamp}
		if got != w {
			t.Fatalf("scanEvent(%q) = %+v, encoding/json %+v", b, got, w)
		}
	})
}

// A line longer than the reader's 1 MiB buffer (and the chunk size) is
// read whole: counted as undecodable, and the lines around it still count.
func TestHugeLineInJSONLines(t *testing.T) {
	huge := `{"type":"chat","content":"` + strings.Repeat("x", 3<<20) + "\n"
	cfg := Config{From: "2026-11-01", To: "2026-11-02", Input: "-"}
	base, err := Run(context.Background(), cfg, strings.NewReader(handMade+handMade), nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := Run(context.Background(), cfg, strings.NewReader(handMade+huge+handMade), nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Undecodable != base.Undecodable+1 || res.Events != base.Events {
		t.Fatalf("undecodable %d, events %d; want %d and %d (the huge line one more undecodable)", res.Undecodable, res.Events, base.Undecodable+1, base.Events)
	}
}
