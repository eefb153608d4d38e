package envelope

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// TestHostile_Quote: what an error message quotes of others' text is
// short, marked where cut, never splits a character, and shows every
// character that could make it lie escaped.
func TestHostile_Quote(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", `""`},
		{"bescheid.pdf", `"bescheid.pdf"`},
		{"rechnung\u202efdp.exe", `"rechnung\u202efdp.exe"`},
		{"a\x1b[31mb\x00", `"a\x1b[31mb\x00"`},
		{"\xff\xfe", `"\xff\xfe"`},
		{strings.Repeat("x", 64), `"` + strings.Repeat("x", 64) + `"`},
		{strings.Repeat("x", 65), `"` + strings.Repeat("x", 64) + `"…`},
		{strings.Repeat("x", 63) + "ä" + "yyy", `"` + strings.Repeat("x", 63) + `"…`},
	}
	for _, tt := range tests {
		if got := Quote(tt.in); got != tt.want {
			t.Errorf("Quote(%.80q) = %s, want %s", tt.in, got, tt.want)
		}
	}
	long := Quote(strings.Repeat("\u202e", 1<<20))
	if len(long) > 64*6+8 || !utf8.ValidString(long) || strings.ContainsRune(long, '\u202e') {
		t.Errorf("Quote of 1 Mi bidi overrides: %d bytes %.100q", len(long), long)
	}
}
