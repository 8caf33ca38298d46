// Package analyticsapi holds what clients of the analytics job share with it:
// the results (as POST /v1/admin/analytics answers them in "days"), their
// CSV files dau.csv and words.csv, and the human-readable summary. It has
// no dependency beyond the standard library, so a client such as chatctl
// need not link the job.
package analyticsapi

import (
	"bytes"
	"encoding/csv"
	"fmt"
	"io"
	"strconv"
	"time"
)

// Range is an inclusive range of UTC dates, as "YYYY-MM-DD".
type Range struct{ From, To string }

// Start returns the first instant of the range.
func (r Range) Start() time.Time { t, _ := time.Parse(time.DateOnly, r.From); return t }

// End returns the instant just after the range.
func (r Range) End() time.Time { t, _ := time.Parse(time.DateOnly, r.To); return t.AddDate(0, 0, 1) }

// Results are the outcome of a run.
type Results struct {
	Range Range
	// Records is the number of records (or non-blank lines) read;
	// Undecodable counts those that are not a JSON event, and messages
	// (chat or private) whose timestamp is missing or not RFC 3339.
	Records, Undecodable int64
	Events               int64 // qualifying events, duplicates excluded
	Days                 []DayResult
	// When no message falls in the range: InputDates are the UTC dates of
	// the messages the input holds (reading the log: those read from the
	// range's start on, and those of each partition's first and last
	// records), and Note says so in a sentence.
	InputDates []string
	Note       string
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

// Summary writes a human-readable summary of res.
func Summary(w io.Writer, res *Results) {
	fmt.Fprintf(w, "analytics %s..%s: %d messages on %d days\n", res.Range.From, res.Range.To, res.Events, len(res.Days))
	if res.Undecodable > 0 {
		fmt.Fprintf(w, "  %d of %d records undecodable or without a valid timestamp\n", res.Undecodable, res.Records)
	}
	if res.Note != "" {
		fmt.Fprintf(w, "  %s\n", res.Note)
	}
	for _, d := range res.Days {
		top := ""
		for i, wc := range d.Words {
			if i == 5 {
				break
			}
			top += fmt.Sprintf(" %s(%d)", wc.Word, wc.Count)
		}
		fmt.Fprintf(w, "  %s  %6d users  top:%s\n", d.Date, d.Users, top)
	}
}
