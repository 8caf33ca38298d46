package pgutil

import (
	"net/url"
	"strings"
)

// redactedValue replaces a secret in a redacted connection string.
const redactedValue = "xxxxx"

// secretParams are the connection parameters whose values are secrets, in
// both the keyword/value form and a URL's query. (sslkey, sslcert, sslrootcert
// and passfile name files: their paths are not secrets and stay visible.)
var secretParams = map[string]bool{"password": true, "sslpassword": true}

// Redacted returns the connection string with every secret hidden, whatever
// its form:
//
//   - a URL (postgres://user:secret@host/db?password=secret&sslpassword=secret):
//     the userinfo password and the query's password and sslpassword;
//   - a keyword/value string (host=h password=secret or password = 'it\'s'):
//     the values of password and sslpassword, quoted or not.
//
// A string it cannot parse is replaced entirely, since where its secrets
// end cannot be told. The result is meant for logs and error messages.
func Redacted(conn string) string {
	r, _, _ := redact(conn)
	return r
}

// redact returns Redacted(conn), the secrets it hid (as written and as
// decoded) and whether conn could be parsed (when not, the secrets are not
// known).
func redact(conn string) (redacted string, secrets []string, parsed bool) {
	s := strings.TrimSpace(conn)
	if s == "" {
		return conn, nil, true
	}
	found := func(vs ...string) {
		for _, v := range vs {
			if v != "" {
				secrets = append(secrets, v)
			}
		}
	}
	if hasScheme(s) {
		redacted, parsed = redactURL(s, found)
	} else {
		redacted, parsed = redactKeywordValue(s, found)
	}
	return redacted, secrets, parsed
}

// scrub replaces every secret of conn in msg (an error message that may
// quote conn, or part of it); ok is false when conn's secrets cannot be
// told (msg is then not to be shown).
func scrub(msg, conn string) (string, bool) {
	r, secrets, parsed := redact(conn)
	if !parsed {
		return "", false
	}
	if conn != "" {
		msg = strings.ReplaceAll(msg, conn, r)
	}
	for _, v := range secrets {
		msg = strings.ReplaceAll(msg, v, redactedValue)
	}
	return msg, true
}

// hasScheme reports whether s starts like a URL: scheme "://".
func hasScheme(s string) bool {
	scheme, _, ok := strings.Cut(s, "://")
	if !ok || scheme == "" {
		return false
	}
	for i, c := range scheme {
		letter := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
		if !letter && (i == 0 || !('0' <= c && c <= '9' || c == '+' || c == '-' || c == '.')) {
			return false
		}
	}
	return true
}

func redactURL(s string, found func(...string)) (string, bool) {
	scheme, _, _ := strings.Cut(s, "://")
	unparseable := scheme + "://(unparseable URL, redacted)"
	u, err := url.Parse(s)
	if err != nil {
		return unparseable, false
	}
	if u.User != nil {
		if pw, ok := u.User.Password(); ok {
			found(pw, url.PathEscape(pw), url.QueryEscape(pw))
			u.User = url.UserPassword(u.User.Username(), redactedValue)
		}
	}
	if u.RawQuery != "" {
		parts := strings.Split(u.RawQuery, "&")
		for i, p := range parts {
			k, v, _ := strings.Cut(p, "=")
			key, err := url.QueryUnescape(k)
			if err != nil {
				return unparseable, false
			}
			if secretParams[strings.ToLower(key)] {
				dv, _ := url.QueryUnescape(v)
				found(v, dv)
				parts[i] = k + "=" + redactedValue
			}
		}
		u.RawQuery = strings.Join(parts, "&")
	}
	if u.Fragment != "" {
		u.Fragment = ""
		u.RawFragment = ""
	}
	return u.String(), true
}

// redactKeywordValue parses libpq's keyword/value form: keyword = value
// pairs separated by white space, spaces around '=' allowed, a value either
// single-quoted (\' and \\ escaped) or running to the next white space
// (backslash escapes allowed there too).
func redactKeywordValue(s string, found func(...string)) (string, bool) {
	const unparseable = "(unparseable connection string, redacted)"
	var b strings.Builder
	i := 0
	isSpace := func(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v' }
	for i < len(s) {
		// White space between pairs, kept as it is.
		start := i
		for i < len(s) && isSpace(s[i]) {
			i++
		}
		b.WriteString(s[start:i])
		if i == len(s) {
			break
		}
		// The keyword.
		start = i
		for i < len(s) && s[i] != '=' && !isSpace(s[i]) {
			i++
		}
		key := s[start:i]
		if key == "" {
			return unparseable, false
		}
		for i < len(s) && isSpace(s[i]) {
			i++
		}
		if i == len(s) || s[i] != '=' {
			return unparseable, false
		}
		i++
		for i < len(s) && isSpace(s[i]) {
			i++
		}
		sep := s[start+len(key) : i] // " = " as written
		// The value.
		vstart := i
		if i < len(s) && s[i] == '\'' {
			i++
			closed := false
			for i < len(s) {
				if s[i] == '\\' {
					i += 2
					continue
				}
				if s[i] == '\'' {
					closed = true
					i++
					break
				}
				i++
			}
			if !closed || i > len(s) {
				return unparseable, false
			}
		} else {
			for i < len(s) && !isSpace(s[i]) {
				if s[i] == '\\' {
					i++
				}
				i++
			}
			if i > len(s) {
				return unparseable, false
			}
		}
		value := s[vstart:i]
		if secretParams[strings.ToLower(key)] {
			found(value, unquote(value))
			value = redactedValue
		}
		b.WriteString(key)
		b.WriteString(sep)
		b.WriteString(value)
	}
	return b.String(), true
}

// unquote returns a keyword/value string's value as libpq reads it.
func unquote(v string) string {
	v = strings.TrimPrefix(v, "'")
	v = strings.TrimSuffix(v, "'")
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		if v[i] == '\\' && i+1 < len(v) {
			i++
		}
		b.WriteByte(v[i])
	}
	return b.String()
}
