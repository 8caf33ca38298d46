package analytics

import (
	"encoding/json"
	"errors"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"
)

var errSyntax = errors.New("not a JSON object")

// parseEvent reads the fields analytics needs from one JSON object (one
// line of an archived log, or a record value). The strings may share memory
// with b: they are valid only while b is. Unknown fields are skipped
// whatever their value. It is a small hand-written scanner because decoding
// dominates the job's cost; anything it does not understand falls back to
// encoding/json, so it is never less correct than that.
func parseEvent(b []byte, e *Event) error {
	if err := scanEvent(b, e); err == nil {
		return nil
	}
	var v struct {
		ID        string `json:"id"`
		Type      string `json:"type"`
		Username  string `json:"username"`
		Content   string `json:"content"`
		Timestamp string `json:"timestamp"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*e = Event{ID: v.ID, Type: v.Type, Username: v.Username, Content: v.Content, Timestamp: v.Timestamp}
	return nil
}

func scanEvent(b []byte, e *Event) error {
	*e = Event{}
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return errSyntax
	}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == '}' {
		return checkEnd(b, i+1)
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return errSyntax
		}
		key, ni, err := readString(b, i)
		if err != nil {
			return err
		}
		i = skipWS(b, ni)
		if i >= len(b) || b[i] != ':' {
			return errSyntax
		}
		i = skipWS(b, i+1)
		var dst *string
		switch key {
		case "id":
			dst = &e.ID
		case "type":
			dst = &e.Type
		case "username":
			dst = &e.Username
		case "content":
			dst = &e.Content
		case "timestamp":
			dst = &e.Timestamp
		}
		if dst != nil && i < len(b) && b[i] == '"' {
			s, ni, err := readString(b, i)
			if err != nil {
				return err
			}
			*dst = s
			i = ni
		} else if dst != nil && i+4 <= len(b) && string(b[i:i+4]) == "null" {
			i += 4 // null leaves the field empty, as encoding/json does
		} else if dst != nil {
			return errSyntax // a known field with a non-string value: let encoding/json decide
		} else {
			ni, err := skipValue(b, i, 0)
			if err != nil {
				return err
			}
			i = ni
		}
		i = skipWS(b, i)
		if i >= len(b) {
			return errSyntax
		}
		switch b[i] {
		case ',':
			i = skipWS(b, i+1)
		case '}':
			return checkEnd(b, i+1)
		default:
			return errSyntax
		}
	}
}

func checkEnd(b []byte, i int) error {
	if skipWS(b, i) != len(b) {
		return errSyntax
	}
	return nil
}

func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// readString decodes the JSON string starting at b[i] == '"'. A string
// without escapes is returned as a view of b, without copying: callers that
// keep it beyond the current line must clone it (worker.add does).
func readString(b []byte, i int) (string, int, error) {
	i++
	start := i
	for i < len(b) { // fast path: no escapes
		c := b[i]
		if c == '"' {
			s := b[start:i]
			if !utf8.Valid(s) {
				return "", 0, errSyntax // encoding/json replaces invalid bytes; defer to it
			}
			if len(s) == 0 {
				return "", i + 1, nil
			}
			return unsafe.String(&s[0], len(s)), i + 1, nil
		}
		if c == '\\' || c < 0x20 {
			break
		}
		i++
	}
	buf := append([]byte(nil), b[start:i]...)
	for i < len(b) {
		c := b[i]
		switch {
		case c == '"':
			if !utf8.Valid(buf) {
				return "", 0, errSyntax
			}
			return string(buf), i + 1, nil
		case c < 0x20:
			return "", 0, errSyntax
		case c != '\\':
			buf = append(buf, c)
			i++
			continue
		}
		if i+1 >= len(b) {
			return "", 0, errSyntax
		}
		switch b[i+1] {
		case '"', '\\', '/':
			buf = append(buf, b[i+1])
		case 'b':
			buf = append(buf, '\b')
		case 'f':
			buf = append(buf, '\f')
		case 'n':
			buf = append(buf, '\n')
		case 'r':
			buf = append(buf, '\r')
		case 't':
			buf = append(buf, '\t')
		case 'u':
			r, ok := hex4(b, i+2)
			if !ok {
				return "", 0, errSyntax
			}
			i += 6
			if utf16.IsSurrogate(r) {
				r2, ok := rune(0), false
				if i+1 < len(b) && b[i] == '\\' && b[i+1] == 'u' {
					r2, ok = hex4(b, i+2)
				}
				if dec := utf16.DecodeRune(r, r2); ok && dec != utf8.RuneError {
					r = dec
					i += 6
				} else {
					r = utf8.RuneError
				}
			}
			buf = utf8.AppendRune(buf, r)
			continue
		default:
			return "", 0, errSyntax
		}
		i += 2
	}
	return "", 0, errSyntax
}

func hex4(b []byte, i int) (rune, bool) {
	if i+4 > len(b) {
		return 0, false
	}
	n, err := strconv.ParseUint(string(b[i:i+4]), 16, 32)
	return rune(n), err == nil
}

// skipValue skips any JSON value at b[i].
func skipValue(b []byte, i, depth int) (int, error) {
	if depth > 1000 || i >= len(b) {
		return 0, errSyntax
	}
	switch c := b[i]; {
	case c == '"':
		_, ni, err := readString(b, i)
		return ni, err
	case c == '{' || c == '[':
		closer := byte('}')
		if c == '[' {
			closer = ']'
		}
		i = skipWS(b, i+1)
		if i < len(b) && b[i] == closer {
			return i + 1, nil
		}
		for {
			if c == '{' {
				if i >= len(b) || b[i] != '"' {
					return 0, errSyntax
				}
				_, ni, err := readString(b, i)
				if err != nil {
					return 0, err
				}
				i = skipWS(b, ni)
				if i >= len(b) || b[i] != ':' {
					return 0, errSyntax
				}
				i = skipWS(b, i+1)
			}
			ni, err := skipValue(b, i, depth+1)
			if err != nil {
				return 0, err
			}
			i = skipWS(b, ni)
			if i >= len(b) {
				return 0, errSyntax
			}
			if b[i] == closer {
				return i + 1, nil
			}
			if b[i] != ',' {
				return 0, errSyntax
			}
			i = skipWS(b, i+1)
		}
	default: // number, true, false, null: validated by the fallback if malformed
		j := i
		for j < len(b) {
			c := b[j]
			if c == ',' || c == '}' || c == ']' || c == ' ' || c == '\t' || c == '\n' || c == '\r' {
				break
			}
			j++
		}
		if j == i {
			return 0, errSyntax
		}
		tok := b[i:j]
		switch string(tok) {
		case "true", "false", "null":
			return j, nil
		}
		if !validNumber(tok) {
			return 0, errSyntax
		}
		return j, nil
	}
}

// validNumber reports whether tok is a JSON number (RFC 8259, section 6):
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? — no leading zeros, no
// "+", hex, Inf or NaN, which strconv.ParseFloat would accept.
func validNumber(tok []byte) bool {
	i := 0
	digits := func() int {
		n := 0
		for i < len(tok) && tok[i] >= '0' && tok[i] <= '9' {
			i++
			n++
		}
		return n
	}
	if i < len(tok) && tok[i] == '-' {
		i++
	}
	switch {
	case i < len(tok) && tok[i] == '0':
		i++
	case digits() == 0:
		return false
	}
	if i < len(tok) && tok[i] == '.' {
		i++
		if digits() == 0 {
			return false
		}
	}
	if i < len(tok) && (tok[i] == 'e' || tok[i] == 'E') {
		i++
		if i < len(tok) && (tok[i] == '+' || tok[i] == '-') {
			i++
		}
		if digits() == 0 {
			return false
		}
	}
	return i == len(tok)
}
