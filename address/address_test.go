package address

import (
	"errors"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	good := []string{
		"poststelle@stadt.example",
		"eingang@amtsgericht.example",
		"a.b-c_d+e@x-1.y.example",
	}
	for _, s := range good {
		a, err := Parse(s)
		if err != nil {
			t.Errorf("Parse(%q): %v", s, err)
			continue
		}
		if a.String() != s {
			t.Errorf("Parse(%q).String() = %q", s, a.String())
		}
	}
	bad := map[string]string{
		"no at":          "poststelle",
		"empty local":    "@stadt.example",
		"empty domain":   "poststelle@",
		"one label":      "poststelle@localhost",
		"uppercase":      "Poststelle@stadt.example",
		"upper domain":   "p@Stadt.example",
		"two ats":        "a@b@stadt.example",
		"space":          "a b@stadt.example",
		"slash":          "a/b@stadt.example",
		"double dot":     "a..b@stadt.example",
		"leading dot":    ".a@stadt.example",
		"empty label":    "a@stadt..example",
		"hyphen label":   "a@-stadt.example",
		"long local":     strings.Repeat("a", 65) + "@stadt.example",
		"non-ascii":      "pöst@stadt.example",
		"control":        "a\n@stadt.example",
		"too long":       "a@" + strings.Repeat("b", 320) + ".example",
		"label over 63":  "a@" + strings.Repeat("b", 64) + ".example",
		"trailing dot":   "a@stadt.example.",
		"underscore dom": "a@st_adt.example",
	}
	for name, s := range bad {
		t.Run(name, func(t *testing.T) {
			if _, err := Parse(s); !errors.Is(err, ErrInvalid) {
				t.Errorf("Parse(%q) = %v, want ErrInvalid", s, err)
			}
		})
	}
}

func TestDomainOf(t *testing.T) {
	if got := DomainOf("poststelle@stadt.example"); got != "stadt.example" {
		t.Errorf("DomainOf = %q", got)
	}
	if got := DomainOf("nothing"); got != "" {
		t.Errorf("DomainOf(no at) = %q", got)
	}
}

func FuzzParse(f *testing.F) {
	f.Add("poststelle@stadt.example")
	f.Add("a@b")
	f.Fuzz(func(t *testing.T, s string) {
		a, err := Parse(s)
		if err != nil {
			return
		}
		if a.String() != s {
			t.Fatalf("round trip %q -> %q", s, a.String())
		}
		if err := CheckDomain(a.Domain); err != nil {
			t.Fatalf("accepted %q with bad domain: %v", s, err)
		}
	})
}
