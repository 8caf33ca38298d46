package analytics

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/chatsys/chat/pkg/analyticsapi"
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

// The results and their encodings are shared with clients (chatctl) in
// analyticsapi.
type (
	// Range is an inclusive range of UTC dates, as "YYYY-MM-DD".
	Range = analyticsapi.Range
	// Results are the outcome of a run.
	Results = analyticsapi.Results
	// DayResult is one date's figures.
	DayResult = analyticsapi.DayResult
	// WordCount is one word's count on one date, with its rank (1 = most used).
	WordCount = analyticsapi.WordCount
)

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

// idSet is the set of event ids seen, shared by all workers. It is kept
// per date (a duplicate carries its original's timestamp), so the sets
// being probed stay small and cache-friendly while a time-ordered input is
// read; each date's set is sharded to keep lock contention low. Ids are
// kept as 16 bytes when they are UUIDs.
type idSet struct {
	mu      sync.Mutex
	days    map[string]*dayIDs
	perDate int // expected ids per date, for sizing (0: unknown)
}

// expect sizes the sets of dates yet to come for about n ids spread over
// the range's dates: growing large maps step by step costs more than
// filling them.
func (s *idSet) expect(n int64, dates int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if dates > 0 {
		s.perDate = int(min(n/int64(dates), 20_000_000))
	}
}

const idShards = 16

type dayIDs struct {
	shards [idShards]struct {
		sync.Mutex
		uuids map[[16]byte]struct{}
		other map[string]struct{}
	}
}

func newIDSet() *idSet { return &idSet{days: map[string]*dayIDs{}} }

// forDate returns the set of ids of one date.
func (s *idSet) forDate(date string) *dayIDs {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.days[date]
	if d == nil {
		// Size the new date's maps for the expected count, or like the
		// fullest date so far: days are alike.
		hint := s.perDate / idShards
		for _, o := range s.days {
			o.shards[0].Lock()
			hint = max(hint, len(o.shards[0].uuids))
			o.shards[0].Unlock()
		}
		d = &dayIDs{}
		for i := range d.shards {
			d.shards[i].uuids = make(map[[16]byte]struct{}, hint+hint/8)
			d.shards[i].other = map[string]struct{}{}
		}
		s.days[strings.Clone(date)] = d
	}
	return d
}

// add reports whether id was new.
func (s *dayIDs) add(id string) bool {
	if u, ok := parseUUID(id); ok {
		sh := &s.shards[u[15]%idShards] // the random tail of a UUIDv7
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
	sh := &s.shards[h%idShards]
	sh.Lock()
	defer sh.Unlock()
	if _, dup := sh.other[id]; dup {
		return false
	}
	sh.other[strings.Clone(id)] = struct{}{} // id may be a view of the input buffer
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

// day is one date's aggregates: the distinct users, and word counts indexed
// by the worker's dictionary.
type day struct {
	ids    *dayIDs // shared by all workers
	users  map[string]struct{}
	counts []int64
}

// worker aggregates the events one goroutine reads. Not safe for concurrent
// use. Words go through one dictionary per worker (word → index) so that
// counting a word is one lookup in one map, whatever the number of days.
type worker struct {
	rng    Range
	seen   *idSet
	days   map[string]*day
	dict   map[string]int32
	words  []string
	buf    []byte
	events int64 // qualifying events counted

	others    map[string]struct{} // dates of messages outside the range
	lastOther string
}

func newWorker(rng Range, seen *idSet) *worker {
	return &worker{rng: rng, seen: seen, days: map[string]*day{}, dict: map[string]int32{}, buf: make([]byte, 0, 64), others: map[string]struct{}{}}
}

// add counts one event if it qualifies: type chat or private, a timestamp
// in the range, an id not seen before. It reports false for a message
// (chat or private) whose timestamp is missing or not RFC 3339: the caller
// counts it as undecodable.
func (w *worker) add(e *Event) bool {
	if e.Type != "chat" && e.Type != "private" {
		return true
	}
	date, ok := dateOf(e.Timestamp)
	if !ok {
		return false
	}
	if date < w.rng.From || date > w.rng.To {
		w.other(date)
		return true
	}
	d := w.days[date]
	if d == nil {
		d = &day{ids: w.seen.forDate(date), users: map[string]struct{}{}}
		w.days[strings.Clone(date)] = d // the event's strings may be views of the input buffer
	}
	if !d.ids.add(e.ID) {
		return true
	}
	w.events++
	if _, ok := d.users[e.Username]; !ok {
		d.users[strings.Clone(e.Username)] = struct{}{}
	}
	w.buf = Tokenize(e.Content, w.buf, func(word []byte) {
		i, ok := w.dict[string(word)] // a lookup: no allocation
		if !ok {
			i = int32(len(w.words))
			s := string(word)
			w.dict[s] = i
			w.words = append(w.words, s)
		}
		if int(i) >= len(d.counts) {
			d.counts = append(d.counts, make([]int64, int(i)+1-len(d.counts)+len(d.counts)/2)...)
		}
		d.counts[i]++
	})
	return true
}

// other notes the date of a message outside the range, so that an empty
// result can say which dates the input holds.
func (w *worker) other(date string) {
	if date == w.lastOther {
		return
	}
	date = strings.Clone(date) // a view of the input buffer
	w.others[date] = struct{}{}
	w.lastOther = date
}

// before reports whether a ranks above b: count descending, then word
// ascending in byte order.
func before(a, b WordCount) bool {
	if a.Count != b.Count {
		return a.Count > b.Count
	}
	return a.Word < b.Word
}

// otherDates returns the dates of the messages the workers saw outside the
// range, ascending.
func otherDates(ws []*worker) []string {
	set := map[string]struct{}{}
	for _, w := range ws {
		for d := range w.others {
			set[d] = struct{}{}
		}
	}
	return slices.Sorted(maps.Keys(set))
}

// describeDates writes ascending dates compactly: runs of consecutive
// dates as "first..last", at most six runs.
func describeDates(dates []string) string {
	var runs []string
	for i := 0; i < len(dates); {
		j := i
		for j+1 < len(dates) && nextDate(dates[j]) == dates[j+1] {
			j++
		}
		if len(runs) == 6 {
			runs = append(runs, fmt.Sprintf("and %d more dates", len(dates)-i))
			break
		}
		if j == i {
			runs = append(runs, dates[i])
		} else {
			runs = append(runs, dates[i]+".."+dates[j])
		}
		i = j + 1
	}
	return strings.Join(runs, ", ")
}

func nextDate(d string) string {
	t, err := time.Parse(time.DateOnly, d)
	if err != nil {
		return ""
	}
	return t.AddDate(0, 0, 1).Format(time.DateOnly)
}

// merge combines the workers' aggregates into results.
func merge(rng Range, ws []*worker) *Results {
	res := &Results{Range: rng}
	// One dictionary for all workers; each worker's indices are mapped once.
	dict := map[string]int32{}
	var words []string
	users := map[string]map[string]struct{}{}
	counts := map[string][]int64{}
	for _, w := range ws {
		res.Events += w.events
		remap := make([]int32, len(w.words))
		for i, word := range w.words {
			g, ok := dict[word]
			if !ok {
				g = int32(len(words))
				dict[word] = g
				words = append(words, word)
			}
			remap[i] = g
		}
		for date, d := range w.days {
			if users[date] == nil {
				users[date] = d.users
			} else {
				for u := range d.users {
					users[date][u] = struct{}{}
				}
			}
			c := counts[date]
			for i, n := range d.counts {
				if n == 0 {
					continue
				}
				g := int(remap[i])
				if g >= len(c) {
					c = append(c, make([]int64, g+1-len(c))...)
				}
				c[g] += n
			}
			counts[date] = c
		}
	}
	dates := make([]string, 0, len(users))
	for d := range users {
		dates = append(dates, d)
	}
	sort.Strings(dates)
	for _, date := range dates {
		top := make([]WordCount, 0, TopWords+1)
		for g, n := range counts[date] {
			if n == 0 {
				continue
			}
			wc := WordCount{Word: words[g], Count: n}
			if len(top) == TopWords && !before(wc, top[len(top)-1]) {
				continue
			}
			// Insert in order; the list stays at most TopWords long.
			i := sort.Search(len(top), func(i int) bool { return before(wc, top[i]) })
			top = append(top, WordCount{})
			copy(top[i+1:], top[i:])
			top[i] = wc
			if len(top) > TopWords {
				top = top[:TopWords]
			}
		}
		for i := range top {
			top[i].Rank = i + 1
		}
		res.Days = append(res.Days, DayResult{Date: date, Users: len(users[date]), Words: top})
	}
	return res
}
