package webverify_test

import (
	"bytes"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/cdproto/target"
	"github.com/chromedp/chromedp"

	"kurier.dev/kurier/chromium/chromiumtest"
	"kurier.dev/kurier/evidence/bundle"
	"kurier.dev/kurier/evidence/webverify"
)

// shown is what the page showed for one bundle.
type shown struct {
	Verdict string // the verdict element's data-verdict
	Text    string // its text
	Report  string // the text of the Prüfprotokoll in the frame
	Error   string // the error shown instead, if any
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
	dropFiles(t, b, []string{proof, ca})
	// Each file lands in its input, which then names it.
	got := waitFor(t, b, `(() => {
		const b = document.getElementById("bundle").files, c = document.getElementById("ca").files;
		return b.length && c.length ? b[0].name + " " + c[0].name : null;
	})()`)
	if got != "proof.zip ca.pem" {
		t.Errorf("after the drop the inputs hold %q, want proof.zip and ca.pem", got)
	}
}

// dropFiles drags paths from outside the browser onto the drop zone,
// together, and drops them there.
func dropFiles(t *testing.T, b *chromiumtest.Browser, paths []string) {
	t.Helper()
	box, err := chromedp.Run(b.Ctx, chromedp.Evaluate[[]float64](`(() => {
		const r = document.getElementById("drop").getBoundingClientRect();
		return [r.x + r.width / 2, r.y + r.height / 2];
	})()`))
	if err != nil || len(box) != 2 {
		t.Fatalf("the drop zone: %v", err)
	}
	data := &input.DragData{Items: []*input.DragDataItem{}, Files: paths, DragOperationsMask: 1}
	for _, typ := range []input.DispatchDragEventType{input.DispatchDragEventTypeDragEnter, input.DispatchDragEventTypeDragOver, input.DispatchDragEventTypeDrop} {
		if _, err := chromedp.Call(b.Ctx, input.DispatchDragEvent, input.DispatchDragEventParams{Type: typ, X: box[0], Y: box[1], Data: data}); err != nil {
			t.Fatalf("%s: %v", typ, err)
		}
	}
}

// verifyInBrowser serves the page with Handler on 127.0.0.1 and verifies
// zip on it against the federation's CA; see verifyOn.
func verifyInBrowser(t *testing.T, zip []byte, choose chooser) shown {
	t.Helper()
	pem, err := os.ReadFile(fx.caPEM)
	if err != nil {
		t.Fatal(err)
	}
	return verifyOn(t, webverify.Handler(), zip, pem, choose)
}

// verifyOn serves the page with h on 127.0.0.1 and verifies zip against
// ca on it; see verifyAt.
func verifyOn(t *testing.T, h http.Handler, zip, ca []byte, choose chooser) shown {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	return verifyAt(t, srv.URL+"/", zip, ca, choose)
}

// verifyAt opens the page at url in headless Chromium, gives it ca and
// zip (written as ca.pem and proof.zip) with choose, and returns what the
// page shows. It fails t if the page loaded anything but its own files,
// reported an error, or made any request after it had loaded.
func verifyAt(t *testing.T, url string, zip, ca []byte, choose chooser) shown {
	t.Helper()
	dir := t.TempDir()
	proofFile, caFile := filepath.Join(dir, "proof.zip"), filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(proofFile, zip, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(caFile, ca, 0o600); err != nil {
		t.Fatal(err)
	}
	b := chromiumtest.New(t, 1200, 900, 2*time.Minute)
	b.Do(t, chromedp.Navigate(url))
	if state := waitFor(t, b, `(() => { const s = document.getElementById("status").dataset.state; return s === "loading" ? null : s; })()`); state != "ready" {
		t.Fatalf("the verifier did not start: status %q, page errors %v", state, b.Errors())
	}
	// Loading, the page asks for its own files and nothing else; the
	// verifier comes in a script, so not even a fetch of its own.
	loaded := b.Requests()
	base, page := url[:strings.LastIndex(url, "/")+1], url[strings.LastIndex(url, "/")+1:]
	var names []string
	for _, u := range loaded {
		names = append(names, strings.TrimPrefix(u, base))
	}
	slices.Sort(names)
	want := []string{page, "app.js", "style.css", "verifier.js", "wasm_exec.js"}
	slices.Sort(want)
	if !slices.Equal(names, want) {
		t.Errorf("loading, the page asked for %q, want %q", loaded, want)
	}

	choose(t, b, proofFile, caFile)
	var s shown
	s.Error = waitFor(t, b, `(() => {
		const v = document.getElementById("verdict"), e = document.getElementById("error");
		const r = document.getElementById("report");
		return !e.hidden ? e.textContent : !v.hidden && r.dataset.loaded ? "" : null;
	})()`)
	if s.Error == "" {
		var err error
		if s.Verdict, err = chromedp.Run(b.Ctx, chromedp.Evaluate[string](`document.getElementById("verdict").dataset.verdict`)); err != nil {
			t.Fatal(err)
		}
		if s.Text, err = chromedp.Run(b.Ctx, chromedp.Text(chromedp.CSS("#verdict"))); err != nil {
			t.Fatal(err)
		}
		s.Report = reportText(t, b)
	}

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
	wantPassed(t, verifyInBrowser(t, fx.zip, inInputs))
}

// The folder of kurier verify --write-web on a plain file server, which
// sends no policy of its own: the page works, and its <meta> policy holds
// it to its own files just the same.
func TestBrowserVerify_GenuineFromStaticFolder(t *testing.T) {
	dir := t.TempDir()
	if _, err := webverify.WriteDir(dir); err != nil {
		t.Fatal(err)
	}
	pem, err := os.ReadFile(fx.caPEM)
	if err != nil {
		t.Fatal(err)
	}
	wantPassed(t, verifyOn(t, http.FileServer(http.Dir(dir)), fx.zip, pem, inInputs))
	// With no server at all: the verifier is a script, not a fetch, so
	// Chromium runs the page from disk too.
	wantPassed(t, verifyAt(t, "file://"+filepath.ToSlash(dir)+"/index.html", fx.zip, pem, inInputs))
}

// Both files dropped at once: the page tells the bundle from the CA
// certificate by their content.
func TestBrowserVerify_GenuineDropped(t *testing.T) {
	wantPassed(t, verifyInBrowser(t, fx.zip, dropped))
}

func wantPassed(t *testing.T, s shown) {
	t.Helper()
	if s.Error != "" {
		t.Fatalf("the page shows an error: %s", s.Error)
	}
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
	if s.Error != "" {
		t.Fatalf("the page shows an error: %s", s.Error)
	}
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

// A CA file that holds no certificate is not a verdict: the page says
// what is wrong with the file and shows no report.
func TestBrowserVerify_NotACertificate(t *testing.T) {
	s := verifyOn(t, webverify.Handler(), fx.zip, []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), inInputs)
	for _, want := range []string{"Prüfung nicht möglich / cannot verify", "the CA file", "PRIVATE KEY"} {
		if !strings.Contains(s.Error, want) {
			t.Errorf("the page's error %q does not say %q", s.Error, want)
		}
	}
	if s.Verdict != "" {
		t.Errorf("the page shows the verdict %q", s.Verdict)
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

// The page's policy, from Handler's header or from the <meta> element of
// the static folder alone, refuses any request a script on the page might
// try: the "no request after load" holds by the browser's rule, not only
// because app.js makes none.
func TestBrowserVerify_PolicyRefusesRequests(t *testing.T) {
	dir := t.TempDir()
	if _, err := webverify.WriteDir(dir); err != nil {
		t.Fatal(err)
	}
	for name, h := range map[string]http.Handler{"Handler": webverify.Handler(), "static folder": http.FileServer(http.Dir(dir))} {
		t.Run(name, func(t *testing.T) {
			var mu sync.Mutex
			var asked []string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				asked = append(asked, r.URL.Path)
				mu.Unlock()
				h.ServeHTTP(w, r)
			}))
			defer srv.Close()
			b := chromiumtest.New(t, 800, 600, time.Minute)
			b.Do(t, chromedp.Navigate(srv.URL+"/"))
			waitFor(t, b, `document.getElementById("status").dataset.state === "ready" || null`)
			got, err := chromedp.Run(b.Ctx, chromedp.Evaluate[string](`Promise.all([
				fetch("/probe-fetch").then(() => "sent", () => "refused"),
				new Promise((done) => { const i = new Image(); i.onload = () => done("sent"); i.onerror = () => done("refused"); i.src = "/probe-img"; }),
				new Promise((done) => { const f = document.createElement("iframe"); f.onload = () => done("framed"); f.src = "/probe-frame"; document.body.append(f); }),
			]).then((r) => r.join(" "))`, chromedp.EvalAwaitPromise))
			if err != nil || got != "refused refused framed" {
				t.Errorf("probes: %q, %v", got, err)
			}
			mu.Lock()
			defer mu.Unlock()
			for _, p := range asked {
				if strings.HasPrefix(p, "/probe") {
					t.Errorf("the server was asked for %s", p)
				}
			}
			if errs := strings.Join(b.Errors(), "\n"); !strings.Contains(errs, "Content-Security-Policy refused") {
				t.Errorf("no refusal among the page errors: %q", errs)
			}
		})
	}
}

// A bundle chosen while an earlier one is still being read replaces it:
// the earlier run, finishing last, shows nothing, and the page keeps the
// verdict of the file chosen last, under that file's name. Here the
// genuine a.zip is read slowly (the page's reading is held until the
// tampered b.zip, chosen after it, has its verdict shown).
func TestBrowserVerify_LaterFileWins(t *testing.T) {
	dir := t.TempDir()
	bad, _ := tampered(t)
	a, b := filepath.Join(dir, "a.zip"), filepath.Join(dir, "b.zip")
	if err := os.WriteFile(a, fx.zip, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(b, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(webverify.Handler())
	defer srv.Close()
	br := chromiumtest.New(t, 1000, 800, 2*time.Minute)
	br.Do(t, chromedp.Navigate(srv.URL+"/"))
	waitFor(t, br, `document.getElementById("status").dataset.state === "ready" || null`)
	// A slow disk for a.zip: its reading is held until kurierTestRelease
	// is called. kurierTestReads counts the reads not yet done.
	if _, err := chromedp.Run(br.Ctx, chromedp.Evaluate[string](`(() => {
		const orig = File.prototype.arrayBuffer;
		let release;
		const held = new Promise((r) => { release = r; });
		globalThis.kurierTestRelease = release;
		globalThis.kurierTestReads = 0;
		File.prototype.arrayBuffer = function () {
			globalThis.kurierTestReads++;
			let p = orig.call(this);
			if (this.name === "a.zip") p = p.then((x) => held.then(() => x));
			return p.finally(() => { globalThis.kurierTestReads--; });
		};
		return "";
	})()`)); err != nil {
		t.Fatal(err)
	}
	br.Do(t, chromedp.SetUploadFiles(chromedp.CSS("#ca"), []string{fx.caPEM}),
		chromedp.SetUploadFiles(chromedp.CSS("#bundle"), []string{a}),
		chromedp.SetUploadFiles(chromedp.CSS("#bundle"), []string{b}))
	first := waitFor(t, br, `(() => { const v = document.getElementById("verdict"); return v.hidden ? null : v.dataset.verdict + " " + v.textContent; })()`)
	if !strings.HasPrefix(first, "failed ") || !strings.HasSuffix(first, "— b.zip") {
		t.Fatalf("for the tampered b.zip the page shows %q", first)
	}
	// Let a.zip's run go on, and wait until every read is done and what
	// follows it has run (a task after the last read's continuations).
	after, err := chromedp.Run(br.Ctx, chromedp.Evaluate[string](`(async () => {
		globalThis.kurierTestRelease();
		do {
			await new Promise((r) => setTimeout(r, 0));
		} while (globalThis.kurierTestReads > 0);
		const v = document.getElementById("verdict"), e = document.getElementById("error");
		return (v.hidden ? "hidden" : v.dataset.verdict + " " + v.textContent) + (e.hidden ? "" : " error: " + e.textContent);
	})()`, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatal(err)
	}
	if after != first {
		t.Errorf("once a.zip, chosen before b.zip, was read, the page shows %q, want still %q", after, first)
	}
	if errs := br.Errors(); len(errs) > 0 {
		t.Errorf("page errors: %q", errs)
	}
}

// Dropped files go to their inputs by what they hold, not by their names:
// a DER CA certificate named ca.der is the CA, a DER CRL named
// sperrliste.der the CRL.
func TestBrowserVerify_DroppedDERByContent(t *testing.T) {
	pemData, err := os.ReadFile(fx.caPEM)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(pemData)
	if block == nil {
		t.Fatal("ca.pem holds no PEM block")
	}
	bun, err := bundle.Read(bytes.NewReader(fx.zip), int64(len(fx.zip)))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	files := map[string][]byte{"proof.zip": fx.zip, "ca.der": block.Bytes, "sperrliste.der": bun.CRL}
	var paths []string
	for name, data := range files {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	srv := httptest.NewServer(webverify.Handler())
	defer srv.Close()
	b := chromiumtest.New(t, 1000, 800, time.Minute)
	b.Do(t, chromedp.Navigate(srv.URL+"/"))
	waitFor(t, b, `document.getElementById("status").dataset.state === "ready" || null`)
	dropFiles(t, b, paths)
	// The page verifies once every dropped file is in its input; what it
	// shows then (a verdict, or an error) does not matter here.
	got := waitFor(t, b, `(() => {
		if (document.getElementById("verdict").hidden && document.getElementById("error").hidden) return null;
		const n = (id) => { const f = document.getElementById(id).files; return f.length ? f[0].name : "-"; };
		return n("bundle") + " " + n("ca") + " " + n("crl");
	})()`)
	if got != "proof.zip ca.der sperrliste.der" {
		t.Errorf("after the drop the inputs hold %q, want proof.zip, ca.der and sperrliste.der", got)
	}
}
