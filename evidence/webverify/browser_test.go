package webverify_test

import (
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/cdproto/target"
	"github.com/chromedp/chromedp"

	"kurier.dev/kurier/chromium/chromiumtest"
	"kurier.dev/kurier/evidence/webverify"
)

// shown is what the page showed for one bundle.
type shown struct {
	Verdict string // the verdict element's data-verdict
	Text    string // its text
	Report  string // the text of the Prüfprotokoll in the frame
}

// A way to give the page its files, as a person does.
type chooser func(t *testing.T, b *chromiumtest.Browser, proof, ca string)

// inInputs chooses ca.pem, then proof.zip in the page's file inputs.
func inInputs(t *testing.T, b *chromiumtest.Browser, proof, ca string) {
	b.Do(t,
		chromedp.SetUploadFiles(chromedp.CSS("#ca"), []string{ca}),
		chromedp.SetUploadFiles(chromedp.CSS("#bundle"), []string{proof}),
	)
}

// dropped drags both files from outside the browser onto the drop zone,
// together, and drops them there.
func dropped(t *testing.T, b *chromiumtest.Browser, proof, ca string) {
	t.Helper()
	box, err := chromedp.Run(b.Ctx, chromedp.Evaluate[[]float64](`(() => {
		const r = document.getElementById("drop").getBoundingClientRect();
		return [r.x + r.width / 2, r.y + r.height / 2];
	})()`))
	if err != nil || len(box) != 2 {
		t.Fatalf("the drop zone: %v", err)
	}
	data := &input.DragData{Items: []*input.DragDataItem{}, Files: []string{proof, ca}, DragOperationsMask: 1}
	for _, typ := range []input.DispatchDragEventType{input.DispatchDragEventTypeDragEnter, input.DispatchDragEventTypeDragOver, input.DispatchDragEventTypeDrop} {
		if _, err := chromedp.Call(b.Ctx, input.DispatchDragEvent, input.DispatchDragEventParams{Type: typ, X: box[0], Y: box[1], Data: data}); err != nil {
			t.Fatalf("%s: %v", typ, err)
		}
	}
}

// verifyInBrowser serves the page on 127.0.0.1, opens it in headless
// Chromium, gives it ca.pem and zip (written as proof.zip) with choose,
// and returns what the page shows. It fails t if the page reported an
// error or made any request after it had loaded.
func verifyInBrowser(t *testing.T, zip []byte, choose chooser) shown {
	t.Helper()
	dir := t.TempDir()
	proof, ca := filepath.Join(dir, "proof.zip"), filepath.Join(dir, "ca.pem")
	pem, err := os.ReadFile(fx.caPEM)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(proof, zip, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ca, pem, 0o600); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(webverify.Handler())
	defer srv.Close()

	b := chromiumtest.New(t, 1200, 900, 2*time.Minute)
	b.Do(t, chromedp.Navigate(srv.URL+"/"))
	if state := waitFor(t, b, `(() => { const s = document.getElementById("status").dataset.state; return s === "loading" ? null : s; })()`); state != "ready" {
		t.Fatalf("the verifier did not start: status %q, page errors %v", state, b.Errors())
	}
	// Loading, the page asks for its own files and nothing else; the
	// verifier comes in a script, so not even a fetch of its own.
	loaded := b.Requests()
	var paths []string
	for _, u := range loaded {
		paths = append(paths, strings.TrimPrefix(u, srv.URL))
	}
	slices.Sort(paths)
	if want := []string{"/", "/app.js", "/style.css", "/verifier.js", "/wasm_exec.js"}; !slices.Equal(paths, want) {
		t.Errorf("loading, the page asked for %q, want %q", loaded, want)
	}

	choose(t, b, proof, ca)
	if errText := waitFor(t, b, `(() => {
		const v = document.getElementById("verdict"), e = document.getElementById("error");
		const r = document.getElementById("report");
		return !e.hidden ? e.textContent : !v.hidden && r.dataset.loaded ? "" : null;
	})()`); errText != "" {
		t.Fatalf("the page shows an error: %s", errText)
	}
	var s shown
	var err2 error
	if s.Verdict, err2 = chromedp.Run(b.Ctx, chromedp.Evaluate[string](`document.getElementById("verdict").dataset.verdict`)); err2 != nil {
		t.Fatal(err2)
	}
	if s.Text, err2 = chromedp.Run(b.Ctx, chromedp.Text(chromedp.CSS("#verdict"))); err2 != nil {
		t.Fatal(err2)
	}
	s.Report = reportText(t, b)

	if errs := b.Errors(); len(errs) > 0 {
		t.Errorf("page errors: %q", errs)
	}
	// Reading the files, verifying and showing the report in a srcdoc
	// frame are no requests; the report's blob: URL (for saving it) is
	// made, not requested. Any request at all here is a fault.
	if after := b.Requests()[len(loaded):]; len(after) > 0 {
		t.Errorf("the page made requests after it had loaded: %q", after)
	}
	return s
}

// waitFor evaluates expr in the page until it is not null, waiting on the
// page's own changes (a MutationObserver) rather than on a clock, and
// returns its value as a string. The browser's timeout bounds it.
func waitFor(t *testing.T, b *chromiumtest.Browser, expr string) string {
	t.Helper()
	js := `new Promise((resolve) => {
		const check = () => ` + expr + `;
		let v = check();
		if (v !== null) { resolve(String(v)); return; }
		new MutationObserver((_, o) => {
			v = check();
			if (v !== null) { o.disconnect(); resolve(String(v)); }
		}).observe(document.documentElement, { subtree: true, attributes: true, childList: true, characterData: true });
	})`
	v, err := chromedp.Run(b.Ctx, chromedp.Evaluate[string](js, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("wait for the page: %v (page errors: %v)", err, b.Errors())
	}
	return v
}

// reportText returns the text of the report in the page's frame, as the
// person reads it, and fails t if the frame requested anything. The frame
// is sandboxed, so Chromium runs it in a process and DevTools target of
// its own, whose requests the page's do not include: the frame's own
// resource timing says what it loaded.
func reportText(t *testing.T, b *chromiumtest.Browser) string {
	t.Helper()
	infos, err := chromedp.Targets(b.Ctx)
	if err != nil {
		t.Fatal(err)
	}
	var frames []target.ID
	for _, i := range infos {
		if i.Type == "iframe" {
			frames = append(frames, i.TargetID)
		}
	}
	if len(frames) != 1 {
		t.Fatalf("want the report's frame as the one frame target, have %d", len(frames))
	}
	ctx, cancel := chromedp.NewContext(b.Ctx, chromedp.WithTargetID(frames[0]))
	defer cancel()
	text, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("body")))
	if err != nil {
		t.Fatalf("the report's text: %v", err)
	}
	loaded, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`performance.getEntriesByType("resource").map((e) => e.name)`))
	if err != nil {
		t.Fatal(err)
	}
	if len(loaded) > 0 {
		t.Errorf("the report's frame loaded %q", loaded)
	}
	return text
}

func TestBrowserVerify_Genuine(t *testing.T) {
	s := verifyInBrowser(t, fx.zip, inInputs)
	wantPassed(t, s)
}

// Both files dropped at once: the page tells the bundle from the CA
// certificate by their content.
func TestBrowserVerify_GenuineDropped(t *testing.T) {
	wantPassed(t, verifyInBrowser(t, fx.zip, dropped))
}

func wantPassed(t *testing.T, s shown) {
	t.Helper()
	if s.Verdict != "passed" {
		t.Errorf("verdict %q (%s), want passed; report:\n%s", s.Verdict, s.Text, s.Report)
	}
	for _, want := range []string{"Alle Prüfungen bestanden / every check passed", "proof.zip"} {
		if !strings.Contains(s.Text, want) {
			t.Errorf("the verdict %q does not say %q", s.Text, want)
		}
	}
	for _, want := range []string{"Prüfprotokoll", fx.id, "evidence/01-SubmissionAcceptance.p7m", "evidence/04-Acknowledgement.p7m"} {
		if !strings.Contains(s.Report, want) {
			t.Errorf("the report does not show %q:\n%s", want, s.Report)
		}
	}
	if strings.Contains(s.Report, "nicht bestanden / failed") {
		t.Errorf("the report of a genuine bundle shows a failed check:\n%s", s.Report)
	}
}

func TestBrowserVerify_Tampered(t *testing.T) {
	zip, file := tampered(t)
	s := verifyInBrowser(t, zip, inInputs)
	if s.Verdict != "failed" {
		t.Errorf("verdict %q (%s), want failed; report:\n%s", s.Verdict, s.Text, s.Report)
	}
	if !strings.Contains(s.Text, "Nicht alle Prüfungen bestanden / not every check passed") {
		t.Errorf("the verdict %q does not say that a check failed", s.Text)
	}
	// The check that caught it, its file and its outcome, on one row.
	if !hasLine(s.Report, "evidence signature", file, "failed") {
		t.Errorf("the report does not show the evidence signature of %s as failed:\n%s", file, s.Report)
	}
}

// hasLine reports whether one line of text holds every part.
func hasLine(text string, parts ...string) bool {
	for _, line := range strings.Split(text, "\n") {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(line, p)
		}
		if ok {
			return true
		}
	}
	return false
}
