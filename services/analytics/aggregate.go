package analytics

import (
	"bytes"
	"encoding/csv"
	"fmt"
	"io"
	"sort"
	"strconv"
	"sync"
	"time"
)

// TopWords is how many words per day the results keep.
const TopWords = 100

// Event is the part of a stored event analytics reads.
type Event struct {
	ID        string
	Type      string
	Username  string
	Content   string
	Timestamp string
}

// Range is an inclusive range of UTC dates, as "YYYY-MM-DD".
type Range struct{ From, To string }

// ParseRange validates from and to (inclusive, from ≤ to).
func ParseRange(from, to string) (Range, error) {
	f, err := time.Parse(time.DateOnly, from)
	if err != nil {
		return Range{}, fmt.Errorf("analytics.from %q: want YYYY-MM-DD", from)
	}
	t, err := time.Parse(time.DateOnly, to)
	if err != nil {
		return Range{}, fmt.Errorf("analytics.to %q: want YYYY-MM-DD", to)
	}
	if t.Before(f) {
		return Range{}, fmt.Errorf("analytics.to %s is before analytics.from %s", to, from)
	}
	return Range{From: from, To: to}, nil
}

// Start returns the first instant of the range.
func (r Range) Start() time.Time { t, _ := time.Parse(time.DateOnly, r.From); return t }

// End returns the instant just after the range.
func (r Range) End() time.Time { t, _ := time.Parse(time.DateOnly, r.To); return t.AddDate(0, 0, 1) }

// dateOf returns the UTC date of an RFC 3339 timestamp.
func dateOf(ts string) (string, bool) {
	// Fast path: the wire format is already UTC ("…Z").
	if len(ts) >= 20 && ts[len(ts)-1] == 'Z' && ts[4] == '-' && ts[7] == '-' && (ts[10] == 'T' || ts[10] == 't') {
		return ts[:10], true
	}
	t, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		return "", false
	}
	return t.UTC().Format(time.DateOnly), true
}

// idSet is the set of event ids seen, shared by all workers, sharded to
// keep lock contention low. Ids are kept as 16 bytes when they are UUIDs.
type idSet struct {
	shards [64]struct {
		sync.Mutex
		uuids map[[16]byte]struct{}
		other map[string]struct{}
	}
}

func newIDSet() *idSet {
	s := &idSet{}
	for i := range s.shards {
		s.shards[i].uuids = map[[16]byte]struct{}{}
		s.shards[i].other = map[string]struct{}{}
	}
	return s
}

// add reports whether id was new.
func (s *idSet) add(id string) bool {
	if u, ok := parseUUID(id); ok {
		sh := &s.shards[u[15]&63] // the random tail of a UUIDv7
		sh.Lock()
		defer sh.Unlock()
		if _, dup := sh.uuids[u]; dup {
			return false
		}
		sh.uuids[u] = struct{}{}
		return true
	}
	var h byte
	for i := 0; i < len(id); i++ {
		h = h*31 + id[i]
	}
	sh := &s.shards[h&63]
	sh.Lock()
	defer sh.Unlock()
	if _, dup := sh.other[id]; dup {
		return false
	}
	sh.other[id] = struct{}{}
	return true
}

func parseUUID(s string) ([16]byte, bool) {
	var u [16]byte
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return u, false
	}
	j := 0
	for i := 0; i < 36; {
		if i == 8 || i == 13 || i == 18 || i == 23 {
			i++
			continue
		}
		hi, ok1 := unhex(s[i])
		lo, ok2 := unhex(s[i+1])
		if !ok1 || !ok2 {
			return u, false
		}
		u[j] = hi<<4 | lo
		j++
		i += 2
	}
	return u, true
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// day is one date's aggregates.
type day struct {
	users map[string]struct{}
	words map[string]int64
}

// worker aggregates the events one goroutine reads. Not safe for concurrent use.
type worker struct {
	rng    Range
	seen   *idSet
	days   map[string]*day
	buf    []byte
	events int64 // qualifying events counted
}

func newWorker(rng Range, seen *idSet) *worker {
	return &worker{rng: rng, seen: seen, days: map[string]*day{}, buf: make([]byte, 0, 64)}
}

// add counts one event if it qualifies: type chat or private, a timestamp
// in the range, an id not seen before.
func (w *worker) add(e *Event) {
	if e.Type != "chat" && e.Type != "private" {
		return
	}
	date, ok := dateOf(e.Timestamp)
	if !ok || date < w.rng.From || date > w.rng.To {
		return
	}
	if !w.seen.add(e.ID) {
		return
	}
	w.events++
	d := w.days[date]
	if d == nil {
		d = &day{users: map[string]struct{}{}, words: map[string]int64{}}
		w.days[date] = d
	}
	if _, ok := d.users[e.Username]; !ok {
		d.users[e.Username] = struct{}{}
	}
	w.buf = Tokenize(e.Content, w.buf, func(word []byte) {
		d.words[string(word)]++ // no allocation when the word is already counted
	})
}

// Results are the outcome of a run.
type Results struct {
	Range  Range
	Events int64 // qualifying events, duplicates excluded
	Days   []DayResult
}

// DayResult is one date's figures.
type DayResult struct {
	Date  string      `json:"date"`
	Users int         `json:"users"`
	Words []WordCount `json:"words"`
}

// WordCount is one word's count on one date, with its rank (1 = most used).
type WordCount struct {
	Rank  int    `json:"rank"`
	Word  string `json:"word"`
	Count int64  `json:"count"`
}

// merge combines the workers' aggregates into results.
func merge(rng Range, ws []*worker) *Results {
	res := &Results{Range: rng}
	all := map[string]*day{}
	for _, w := range ws {
		res.Events += w.events
		for date, d := range w.days {
			m := all[date]
			if m == nil {
				all[date] = d
				continue
			}
			for u := range d.users {
				m.users[u] = struct{}{}
			}
			for word, n := range d.words {
				m.words[word] += n
			}
		}
	}
	dates := make([]string, 0, len(all))
	for d := range all {
		dates = append(dates, d)
	}
	sort.Strings(dates)
	for _, date := range dates {
		d := all[date]
		wcs := make([]WordCount, 0, len(d.words))
		for word, n := range d.words {
			wcs = append(wcs, WordCount{Word: word, Count: n})
		}
		sort.Slice(wcs, func(i, j int) bool {
			if wcs[i].Count != wcs[j].Count {
				return wcs[i].Count > wcs[j].Count
			}
			return wcs[i].Word < wcs[j].Word // byte order of the UTF-8
		})
		if len(wcs) > TopWords {
			wcs = wcs[:TopWords]
		}
		for i := range wcs {
			wcs[i].Rank = i + 1
		}
		res.Days = append(res.Days, DayResult{Date: date, Users: len(d.users), Words: wcs})
	}
	return res
}

// WriteDAU writes dau.csv: header "date,users", one row per date ascending.
func (r *Results) WriteDAU(w io.Writer) error {
	cw := csv.NewWriter(w)
	cw.Write([]string{"date", "users"})
	for _, d := range r.Days {
		cw.Write([]string{d.Date, strconv.Itoa(d.Users)})
	}
	cw.Flush()
	return cw.Error()
}

// WriteWords writes words.csv: header "date,rank,word,count"; per date the
// top words by count, ties by word; fields quoted as RFC 4180 says.
func (r *Results) WriteWords(w io.Writer) error {
	cw := csv.NewWriter(w)
	cw.Write([]string{"date", "rank", "word", "count"})
	for _, d := range r.Days {
		for _, wc := range d.Words {
			cw.Write([]string{d.Date, strconv.Itoa(wc.Rank), wc.Word, strconv.FormatInt(wc.Count, 10)})
		}
	}
	cw.Flush()
	return cw.Error()
}

// CSV returns both files' contents.
func (r *Results) CSV() (dau, words []byte) {
	var a, b bytes.Buffer
	r.WriteDAU(&a)
	r.WriteWords(&b)
	return a.Bytes(), b.Bytes()
}
