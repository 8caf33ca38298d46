package analytics

import (
	"unicode"
	"unicode/utf8"
)

// Tokenize calls fn for every word of content, in order. The content is
// lowercased with the Unicode simple lowercase mapping (unicode.ToLower); a
// word is a maximal run of code points that are letters (L*) or decimal
// digits (Nd); words shorter than 2 code points are dropped. Invalid UTF-8
// bytes (U+FFFD) separate words. buf is reused scratch space; the word
// passed to fn is only valid during the call.
func Tokenize(content string, buf []byte, fn func(word []byte)) []byte {
	word := buf[:0]
	n := 0 // code points in word
	flush := func() {
		if n >= 2 {
			fn(word)
		}
		word, n = word[:0], 0
	}
	for i := 0; i < len(content); {
		c := content[i]
		if c < utf8.RuneSelf { // ASCII fast path
			i++
			switch {
			case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
				word = append(word, c)
				n++
			case 'A' <= c && c <= 'Z':
				word = append(word, c+('a'-'A'))
				n++
			default:
				flush()
			}
			continue
		}
		r, size := utf8.DecodeRuneInString(content[i:])
		i += size
		if r == utf8.RuneError && size == 1 {
			flush()
			continue
		}
		r = unicode.ToLower(r)
		if unicode.IsLetter(r) || unicode.Is(unicode.Nd, r) {
			word = utf8.AppendRune(word, r)
			n++
		} else {
			flush()
		}
	}
	flush()
	return word
}
