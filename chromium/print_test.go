package chromium_test

import (
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"kurier.dev/kurier/chromium"
)

// need skips t where no Chromium is installed; under CI=true, where .ci/run
// installs it, it fails instead.
func need(t *testing.T) {
	t.Helper()
	if _, err := chromium.Find(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%v: .ci/run installs it", err)
		}
		t.Skip(err)
	}
}

// A report's path may hold characters that are URL syntax ('#', '?',
// '%'): the PDF is still of that file, not of another or of an error page.
func TestPrintPDF_PathWithURLSyntax(t *testing.T) {
	need(t)
	for _, name := range []string{"r#1.html", "r?x=1.html", "r%41.html", "Prüf protokoll.html"} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			html := filepath.Join(dir, name)
			if err := os.WriteFile(html, []byte("<!DOCTYPE html><title>THEREPORT</title><p>report</p>"), 0o600); err != nil {
				t.Fatal(err)
			}
			pdf := filepath.Join(dir, "out.pdf")
			if err := chromium.PrintPDF(t.Context(), html, pdf); err != nil {
				t.Fatal(err)
			}
			data, err := os.ReadFile(pdf)
			if err != nil {
				t.Fatal(err)
			}
			// The page's title is the PDF's /Title.
			if !bytes.Contains(data, []byte("THEREPORT")) {
				t.Errorf("the PDF of %s (%d bytes) is not of that page: its title is not THEREPORT", name, len(data))
			}
		})
	}
}

// PrintPDF alone keeps the printed page offline: a page with no
// Content-Security-Policy that asks for a stylesheet image, an image, a
// font and a script from a server on this computer gets none of them.
func TestPrintPDF_MakesNoRequests(t *testing.T) {
	need(t)
	var asked atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { asked.Add(1) }))
	defer srv.Close()
	dir := t.TempDir()
	html := filepath.Join(dir, "r.html")
	page := `<!DOCTYPE html><title>x</title><style>@font-face{font-family:f;src:url(` + srv.URL + `/font)}
		body{font-family:f;background:url(` + srv.URL + `/css)}</style>
		<img src="` + srv.URL + `/img"><img src="http://localhost:` + srv.URL[len("http://127.0.0.1:"):] + `/byname">
		<script src="` + srv.URL + `/js"></script><p>text</p>`
	if err := os.WriteFile(html, []byte(page), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := chromium.PrintPDF(t.Context(), html, filepath.Join(dir, "out.pdf")); err != nil {
		t.Fatal(err)
	}
	if n := asked.Load(); n > 0 {
		t.Errorf("printing made %d requests to %s", n, srv.URL)
	}
}

// A missing report is an error, not a PDF of Chromium's error page.
func TestPrintPDF_MissingPage(t *testing.T) {
	dir := t.TempDir()
	pdf := filepath.Join(dir, "out.pdf")
	if err := chromium.PrintPDF(t.Context(), filepath.Join(dir, "missing.html"), pdf); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("PrintPDF of a missing page: %v, want os.ErrNotExist", err)
	}
	if _, err := os.Stat(pdf); err == nil {
		t.Error("PrintPDF of a missing page wrote a PDF")
	}
}
