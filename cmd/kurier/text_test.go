package main

import "testing"

// TestHostile_Printable shows text that others control as it is: the
// characters that could redraw a terminal or reorder what follows come out
// as visible escapes, everything else as it was.
func TestHostile_Printable(t *testing.T) {
	for in, want := range map[string]string{
		"Klage.pdf":                     "Klage.pdf",
		"Bescheid über Grundsteuer – Ω": "Bescheid über Grundsteuer – Ω",
		"rechnung\u202efdp.exe":         `rechnung\u202efdp.exe`,
		"a\u2066b\u2069c":               `a\u2066b\u2069c`,
		"ok\x1b[2J":                     `ok\u001b[2J`,
		"line\nbreak\r":                 `line\u000abreak\u000d`,
		"c1\u0085\u009b":                `c1\u0085\u009b`,
		"bad\xffutf8":                   `bad\xffutf8`,
		"mark\u200f\u061c":              `mark\u200f\u061c`,
		"lines\u2028\u2029":             `lines\u2028\u2029`,
		"שלום":                          "שלום",
	} {
		if got := printable(in); got != want {
			t.Errorf("printable(%q) = %q, want %q", in, got, want)
		}
	}
}
