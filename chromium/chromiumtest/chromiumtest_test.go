package chromiumtest_test

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"kurier.dev/kurier/chromium"
	"kurier.dev/kurier/chromium/chromiumtest"
)

// A page's script errors and its requests are what the browser tests
// assert on; both must be seen.
func TestBrowser_SeesErrorsAndRequests(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/":
			w.Header().Set("Content-Type", "text/html")
			_, _ = w.Write([]byte(`<!DOCTYPE html><title>t</title><h1 id=h>Hallo</h1><img src="/pixel.png"><script>throw new Error("kaputt")</script>`))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	b := chromiumtest.New(t, 800, 600, time.Minute)
	b.Do(t, chromedp.Navigate(srv.URL+"/"))
	text, err := chromedp.Run(b.Ctx, chromedp.Text("#h"))
	if err != nil || text != "Hallo" {
		t.Fatalf("heading: %q, %v", text, err)
	}
	if errs := strings.Join(b.Errors(), "\n"); !strings.Contains(errs, "kaputt") {
		t.Errorf("the script's exception is not among the page errors: %q", errs)
	}
	if reqs := strings.Join(b.Requests(), " "); !strings.Contains(reqs, srv.URL+"/pixel.png") {
		t.Errorf("the image request is not on record: %q", reqs)
	}
}

func TestPrintPDF_WritesAPDF(t *testing.T) {
	if _, err := chromium.Find(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%v", err)
		}
		t.Skipf("%v", err)
	}
	dir := t.TempDir()
	html := filepath.Join(dir, "r.html")
	if err := os.WriteFile(html, []byte("<!DOCTYPE html><title>r</title><p>Prüfprotokoll"), 0o600); err != nil {
		t.Fatal(err)
	}
	pdf := filepath.Join(dir, "r.pdf")
	if err := chromium.PrintPDF(t.Context(), html, pdf); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(pdf)
	if err != nil || !strings.HasPrefix(string(data), "%PDF-") {
		t.Fatalf("not a PDF: %v %q", err, data[:min(len(data), 8)])
	}
}
