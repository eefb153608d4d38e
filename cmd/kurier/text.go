package main

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"kurier.dev/kurier/envelope"
)

// printable returns text that others control (subjects, file names,
// reasons, names from a directory, what a forged file claims) fit for a
// terminal: control characters, which could redraw the screen, and
// bidirectional embeddings, overrides and isolates, which reorder what
// follows them ("rechnung\u202efdp.exe" shows as "rechnungexe.pdf"), are
// written as \uXXXX escapes, as is every other character that does not
// print (direction marks, line separators, zero-width characters), and
// invalid UTF-8 (as \xXX), so that a person sees them for what they are.
func printable(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(&b, "\\x%02x", s[i])
		case envelope.Hostile(r) || !unicode.IsPrint(r):
			fmt.Fprintf(&b, "\\u%04x", r)
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}
