package audit

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"kurier.dev/kurier/evidence"
)

// checkNames returns the value of every Check* constant declared in the
// package's own (non-test) source, so that a check added anywhere in the
// package is found without being listed here.
func checkNames(t *testing.T) map[string]string {
	t.Helper()
	entries, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	names := map[string]string{}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".go") || strings.HasSuffix(e.Name(), "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, e.Name(), nil, 0)
		if err != nil {
			t.Fatalf("parse %s: %v", e.Name(), err)
		}
		for _, d := range f.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, n := range vs.Names {
					if !strings.HasPrefix(n.Name, "Check") || i >= len(vs.Values) {
						continue
					}
					lit, ok := vs.Values[i].(*ast.BasicLit)
					if !ok || lit.Kind != token.STRING {
						continue
					}
					v, err := strconv.Unquote(lit.Value)
					if err != nil {
						t.Fatalf("%s: %v", n.Name, err)
					}
					names[n.Name] = v
				}
			}
		}
	}
	return names
}

// Every check a report can name has its plain words: what it is, and what
// its failure means, in German and English, and a group of its own.
func TestReport_WordsForEveryCheck(t *testing.T) {
	names := checkNames(t)
	if len(names) < 19 {
		t.Fatalf("found %d Check constants, want at least the 19 of report.go: %v", len(names), names)
	}
	for constant, name := range names {
		w, ok := words[name]
		switch {
		case !ok:
			t.Errorf("%s (%q) has no words in words.go", constant, name)
			continue
		case w.Title == "" || w.TitleEN == "":
			t.Errorf("%s (%q) has no title in German and English", constant, name)
		case w.Failed == "" || w.FailedEN == "":
			t.Errorf("%s (%q) does not say in German and English what its failure means", constant, name)
		case !slices.Contains(groups, w.Group) || w.Group == groupOther:
			t.Errorf("%s (%q) is in group %v, not one of the report's", constant, name, w.Group)
		}
		if (w.Open == "") != (w.OpenEN == "") {
			t.Errorf("%s (%q) says what an indeterminate outcome means in one language only", constant, name)
		}
	}
	for name := range words {
		if !slices.Contains(mapValues(names), name) {
			t.Errorf("words.go has words for %q, which no Check constant names", name)
		}
	}
	for _, typ := range evidence.Types {
		if w := eventWords[typ]; w.Name == "" || w.Line == "" || w.EN == "" {
			t.Errorf("evidence type %s has no timeline words", typ)
		}
		for _, rcpt := range []string{"", "eingang@amtsgericht.example"} {
			line, _ := eventLine(Signature{What: string(typ), Node: "amtsgericht.example", Recipient: rcpt})
			if strings.Contains(line, "%!") {
				t.Errorf("the timeline line of %s does not format: %q", typ, line)
			}
		}
		if w := stateWords[typ]; w.DE == "" || w.EN == "" {
			t.Errorf("evidence type %s has no words for the state it leaves a message in", typ)
		}
	}
}

func mapValues(m map[string]string) []string {
	var out []string
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

func TestReport_Sizes(t *testing.T) {
	for n, want := range map[int64]string{
		0: "0 Bytes", 999: "999 Bytes", 1000: "1,0 kB", 12345: "12,3 kB", 1234567: "1,2 MB", 5 << 30: "5,4 GB",
	} {
		if got := humanSize(n); got != want {
			t.Errorf("humanSize(%d) = %q, want %q", n, got, want)
		}
	}
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1.000", 1234567: "1.234.567"} {
		if got := groupDigits(n); got != want {
			t.Errorf("groupDigits(%d) = %q, want %q", n, got, want)
		}
	}
}
