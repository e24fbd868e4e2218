package events

import (
	"fmt"
	"strconv"
	"unicode/utf8"
)

// ExcerptMax is the number of bytes of a value that Excerpt keeps. Event values have documented maximum
// lengths far below a file's limit, but a problem must stay short whatever the value: a 700 KB node name
// echoed into an error would bloat every report, log and run record that carries it.
const ExcerptMax = 64

// Excerpt quotes s (Go syntax, as %q does) for a problem message. A value longer than ExcerptMax bytes is
// cut at a character boundary and its length is said: "aaaa…" (716800 bytes). Every value of the events
// echoed into a problem goes through Excerpt.
func Excerpt(s string) string {
	if len(s) <= ExcerptMax {
		return strconv.Quote(s)
	}
	cut := ExcerptMax
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	if cut == 0 { // not UTF-8: keep the bytes
		cut = ExcerptMax
	}
	q := strconv.Quote(s[:cut])
	return fmt.Sprintf("%s…\" (%d bytes)", q[:len(q)-1], len(s))
}

// excerptID is an event id or a path element for a location: short ones as they are, others quoted.
func excerptID(s string) string {
	if len(s) <= ExcerptMax && plain(s) {
		return s
	}
	return Excerpt(s)
}

// plain reports whether s is printable ASCII without quotes, backslashes or spaces.
func plain(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f || c == '"' || c == '\\' {
			return false
		}
	}
	return s != ""
}
