package audit_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"

	"kurier.dev/kurier/chromium"
	"kurier.dev/kurier/chromium/chromiumtest"
	"kurier.dev/kurier/evidence/audit"
)

// The tests in this file open the HTML report in a real Chromium, at the
// size of an A4 page on screen (794×1123 CSS pixels), and check what a
// reader sees first. Each saves a screenshot in its temporary directory
// and, if KURIER_REPORT_SHOTS names a folder, there too, to be looked at.

const a4Width, a4Height = 794, 1123

// writeReport writes the page of reports to name in a temporary directory
// and returns its path.
func writeReport(t *testing.T, name string, reports ...*audit.Report) string {
	t.Helper()
	var buf bytes.Buffer
	if err := audit.WriteHTML(&buf, reports); err != nil {
		t.Fatalf("WriteHTML: %v", err)
	}
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	if d := os.Getenv("KURIER_REPORT_SHOTS"); d != "" {
		if err := os.WriteFile(filepath.Join(d, name), buf.Bytes(), 0o644); err != nil {
			t.Errorf("save the page: %v", err)
		}
	}
	return path
}

// openReport opens the page at path in a new Chromium at A4 size.
func openReport(t *testing.T, path string) *chromiumtest.Browser {
	t.Helper()
	b := chromiumtest.New(t, a4Width, a4Height, time.Minute)
	b.Do(t, chromedp.EmulateViewport(a4Width, a4Height, chromedp.EmulatePortrait), chromedp.Navigate("file://"+path))
	return b
}

// box is where an element is on the page and what it says.
type box struct {
	Found         bool
	Top, Bottom   float64
	Text          string
	Screen        float64 // the window's inner height
	LineThrough   bool    // the element's computed text decoration strikes it through
	NextOfHeading string  // the id of the element after the page's h1
}

// boxOf returns the box of the first element matching the CSS selector
// sel.
func boxOf(t *testing.T, b *chromiumtest.Browser, sel string) box {
	t.Helper()
	js := `(() => {
		const e = document.querySelector(` + jsString(sel) + `);
		const h = document.querySelector('h1');
		const next = h && h.nextElementSibling ? h.nextElementSibling.id : '';
		if (!e) return {Found: false, Screen: window.innerHeight, NextOfHeading: next};
		const r = e.getBoundingClientRect();
		return {Found: true, Top: r.top, Bottom: r.bottom, Text: e.innerText, Screen: window.innerHeight,
			LineThrough: getComputedStyle(e).textDecorationLine.includes('line-through'), NextOfHeading: next};
	})()`
	got, err := chromedp.Run(b.Ctx, chromedp.Evaluate[box](js))
	if err != nil {
		t.Fatalf("find %s: %v", sel, err)
	}
	return got
}

func jsString(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

// shoot saves screenshots of the page: name.png all of it, and
// name-1.png, name-2.png … one screen each, as a reader scrolls through it
// (at most 8).
func shoot(t *testing.T, b *chromiumtest.Browser, name string) {
	t.Helper()
	dirs := []string{t.TempDir()}
	if d := os.Getenv("KURIER_REPORT_SHOTS"); d != "" {
		dirs = append(dirs, d)
	}
	save := func(file string, shot chromedp.Action[[]byte]) {
		png, err := chromedp.Run(b.Ctx, shot)
		if err != nil {
			t.Fatalf("screenshot: %v", err)
		}
		for _, d := range dirs {
			if err := os.WriteFile(filepath.Join(d, file), png, 0o644); err != nil {
				t.Errorf("save screenshot: %v", err)
			}
		}
	}
	save(name+".png", chromedp.FullScreenshot(100))
	screens, err := chromedp.Run(b.Ctx, chromedp.Evaluate[int](`Math.ceil(document.documentElement.scrollHeight / window.innerHeight)`))
	if err != nil {
		t.Fatalf("measure the page: %v", err)
	}
	for i := range min(screens, 8) {
		b.Do(t, chromedp.Evaluate[chromedp.Void](fmt.Sprintf("window.scrollTo(0, %d * window.innerHeight)", i)))
		save(fmt.Sprintf("%s-%d.png", name, i+1), chromedp.CaptureScreenshot())
	}
	b.Do(t, chromedp.Evaluate[chromedp.Void]("window.scrollTo(0, 0)"))
}

// wantClean fails t if the page had errors or loaded anything but itself.
func wantClean(t *testing.T, b *chromiumtest.Browser, path string) {
	t.Helper()
	if errs := b.Errors(); len(errs) > 0 {
		t.Errorf("page errors: %q", errs)
	}
	for _, u := range b.Requests() {
		if u != "file://"+path {
			t.Errorf("the report loaded %s", u)
		}
	}
}

// tamperedSubject returns the report of the fixture's bundle with the
// subject changed in the envelope after the sender signed it.
func tamperedSubject(t *testing.T) *audit.Report {
	t.Helper()
	b := fresh(t)
	i := bytes.Index(b.Envelope, []byte("Vorgang 2"))
	if i < 0 {
		t.Fatal("the subject is not in envelope.json")
	}
	b.Envelope[i] = 'W' // "Worgang 2"
	r := verify(t, b, roots())
	if r.MessageVerified || r.Subject != "Worgang 2" {
		t.Fatalf("the tampered report: verified %v, subject %q", r.MessageVerified, r.Subject)
	}
	return r
}

// genuine returns the report of the fixture's bundle, with every check.
func genuine(t *testing.T) *audit.Report {
	t.Helper()
	o := roots()
	o.Since = []audit.File{{Name: "before.checkpoint", Data: fx.before}}
	r := audit.Verify("nachweis.zip", fx.zip, o)
	if !r.OK() {
		t.Fatalf("the genuine bundle does not verify:\n%s", dump(r))
	}
	return r
}

// A genuine bundle: the reader sees "bestanden" on the first screen, then
// the message as fact and its history in words.
func TestReport_GenuineVerdictFirst(t *testing.T) {
	path := writeReport(t, "genuine.html", genuine(t))
	b := openReport(t, path)
	defer shoot(t, b, "report-genuine")

	v := boxOf(t, b, "#verdict")
	if !v.Found || v.Bottom > v.Screen {
		t.Errorf("the verdict is not within the first screen: %+v", v)
	}
	if !strings.Contains(v.Text, "Bestanden") || strings.Contains(v.Text, "Nicht bestanden") {
		t.Errorf("the verdict of the genuine bundle says %q", v.Text)
	}
	if f := boxOf(t, b, ".findings"); f.Found {
		t.Errorf("the genuine report lists findings: %q", f.Text)
	}
	m := boxOf(t, b, "#message-0")
	for _, want := range []string{"Vorgang 2", "poststelle@stadt.example", "eingang@amtsgericht.example", "schriftsatz.txt", "Empfang bestätigt"} {
		if !strings.Contains(m.Text, want) {
			t.Errorf("the message section lacks %q:\n%s", want, m.Text)
		}
	}
	if strings.Contains(m.Text, "NICHT VERIFIZIERT") || boxOf(t, b, "#subject-0 .value").LineThrough {
		t.Errorf("the genuine message is marked unverified:\n%s", m.Text)
	}
	tl := boxOf(t, b, "#timeline-0")
	lines := strings.Split(strings.TrimSpace(tl.Text), "\n")
	wantOrder := []string{"Eingang beim Knoten stadt.example bestätigt", "In das Postfach von eingang@amtsgericht.example zugestellt",
		"Von eingang@amtsgericht.example abgerufen", "Empfang von eingang@amtsgericht.example bestätigt", "Nachweispaket zusammengestellt"}
	at := 0
	for _, l := range lines {
		if at < len(wantOrder) && strings.Contains(l, wantOrder[at]) {
			at++
		}
	}
	if at != len(wantOrder) {
		t.Errorf("the timeline does not tell, in order, %q (missing from %q on):\n%s", wantOrder, wantOrder[at], tl.Text)
	}
	if !strings.Contains(tl.Text, "signiert von Teilnehmer eingang@amtsgericht.example") || strings.Contains(tl.Text, "NICHT VERIFIZIERT") {
		t.Errorf("the timeline does not name the court as the acknowledgement's signer, or marks a line unverified:\n%s", tl.Text)
	}
	wantClean(t, b, path)
}

// A bundle whose subject was changed after the sender signed it: the
// failure, in plain words, comes right after the title and on the first
// screen, before the message, and the changed subject is shown only
// marked unverified.
func TestReport_TamperedFailureFirst(t *testing.T) {
	path := writeReport(t, "tampered.html", tamperedSubject(t))
	b := openReport(t, path)
	defer shoot(t, b, "report-tampered")

	v := boxOf(t, b, "#verdict")
	if !v.Found || v.Bottom > v.Screen || v.NextOfHeading != "verdict" {
		t.Errorf("the verdict does not follow the title within the first screen: %+v", v)
	}
	if !strings.Contains(v.Text, "Nicht bestanden") {
		t.Errorf("the verdict of the tampered bundle says %q", v.Text)
	}
	f := boxOf(t, b, "#findings-0")
	m := boxOf(t, b, "#message-0")
	if !f.Found || f.Bottom > f.Screen || f.Bottom > m.Top {
		t.Errorf("the failures (%+v) are not on the first screen above the message (top %v)", f, m.Top)
	}
	for _, want := range []string{
		"Der Umschlag wurde nach der Signatur des Absenders verändert",
		"Ein Nachweis bezieht sich auf einen anderen Umschlag",
		"Signatur des Absenders (envelope.p7s)", "Zustellnachweis (evidence/02-Delivery.p7m)",
	} {
		if !strings.Contains(f.Text, want) {
			t.Errorf("the failures do not say %q:\n%s", want, f.Text)
		}
	}
	subject := boxOf(t, b, "#subject-0")
	if !strings.Contains(subject.Text, "Worgang 2") || !strings.Contains(subject.Text, "NICHT VERIFIZIERT") {
		t.Errorf("the tampered subject is not shown marked unverified: %q", subject.Text)
	}
	if !boxOf(t, b, "#subject-0 .value").LineThrough {
		t.Error("the tampered subject is not struck through")
	}
	if !strings.Contains(m.Text, "nicht vom Absender bestätigt") {
		t.Errorf("the message section does not say why it is unverified:\n%s", m.Text)
	}
	// Every evidence names another envelope than the one in the file: no
	// line of the history stands as fact.
	tl := boxOf(t, b, "#timeline-0")
	if n := strings.Count(tl.Text, "NICHT VERIFIZIERT"); n != len(evidenceFiles) {
		t.Errorf("%d timeline lines marked unverified, want the %d evidence:\n%s", n, len(evidenceFiles), tl.Text)
	}
	if g := boxOf(t, b, "details.group.fail:not([open])"); g.Found {
		t.Errorf("a group with a failed check is closed: %q", g.Text)
	}
	wantClean(t, b, path)
}

// Printed, the report is on A4 with every group open and nothing wider
// than the page; Chromium prints a genuine single-recipient report on a
// few pages.
func TestReport_PrintA4(t *testing.T) {
	r := genuine(t)
	path := writeReport(t, "genuine.html", r)

	// As print media at the width of A4 within its margins (210 mm less
	// 2×12 mm, at 96 CSS pixels per inch).
	const printWidth = 703
	b := chromiumtest.New(t, printWidth, a4Height, time.Minute)
	printMedia := func(ctx context.Context, tg *chromedp.Target) (chromedp.Void, error) {
		_, err := cdp.Call(ctx, tg, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{Media: "print"})
		return chromedp.Void{}, err
	}
	b.Do(t, chromedp.EmulateViewport(printWidth, a4Height, chromedp.EmulatePortrait), printMedia, chromedp.Navigate("file://"+path))
	type layout struct {
		Wide    []string
		Hidden  []string
		Details int
	}
	got, err := chromedp.Run(b.Ctx, chromedp.Evaluate[layout](`(() => {
		const wide = [], hidden = [];
		for (const e of document.querySelectorAll('body *')) {
			const r = e.getBoundingClientRect();
			if (r.right > document.documentElement.clientWidth + 1) wide.push(e.tagName + '.' + e.className + ': ' + (e.innerText || '').slice(0, 60));
		}
		const ds = document.querySelectorAll('details');
		for (const d of ds) {
			for (const c of d.children) {
				if (c.tagName !== 'SUMMARY' && !c.checkVisibility()) hidden.push(d.id + ' ' + c.tagName);
			}
		}
		return {Wide: wide, Hidden: hidden, Details: ds.length};
	})()`))
	if err != nil {
		t.Fatalf("measure the print layout: %v", err)
	}
	if len(got.Wide) > 0 {
		t.Errorf("wider than an A4 page, so cut off in print: %q", got.Wide)
	}
	if got.Details == 0 || len(got.Hidden) > 0 {
		t.Errorf("of %d collapsible groups, these stay closed in print: %q", got.Details, got.Hidden)
	}
	shoot(t, b, "report-print")

	for name, rep := range map[string]*audit.Report{"genuine": r, "tampered": tamperedSubject(t)} {
		t.Run(name, func(t *testing.T) {
			html := writeReport(t, name+".html", rep)
			pdf := filepath.Join(t.TempDir(), name+".pdf")
			if err := chromium.PrintPDF(t.Context(), html, pdf); err != nil {
				t.Fatalf("PrintPDF: %v", err)
			}
			data, err := os.ReadFile(pdf)
			if err != nil || !bytes.HasPrefix(data, []byte("%PDF-")) {
				t.Fatalf("not a PDF: %v", err)
			}
			pages := len(regexp.MustCompile(`/Type\s*/Page\b[^s]`).FindAll(data, -1))
			if pages < 1 || name == "genuine" && pages > 4 {
				t.Errorf("the %s report prints on %d A4 pages, want 1 to 4", name, pages)
			}
			if d := os.Getenv("KURIER_REPORT_SHOTS"); d != "" {
				_ = os.WriteFile(filepath.Join(d, "report-"+name+".pdf"), data, 0o644)
			}
		})
	}
}

// pageOf returns the HTML page of reports.
func pageOf(t *testing.T, reports ...*audit.Report) string {
	t.Helper()
	var buf bytes.Buffer
	if err := audit.WriteHTML(&buf, reports); err != nil {
		t.Fatalf("WriteHTML: %v", err)
	}
	return buf.String()
}

// Without the federation's CA certificate the verdict is "nicht
// entscheidbar", says first what is open and why, and the message is
// marked as not fully established.
func TestReport_IndeterminateSaysWhatIsOpen(t *testing.T) {
	page := pageOf(t, audit.Verify("nachweis.zip", fx.zip, audit.Options{}))
	verdict := page[strings.Index(page, `id="verdict"`):strings.Index(page, `id="message-0"`)]
	for _, want := range []string{"Nicht entscheidbar", "Das CA-Zertifikat stammt aus der geprüften Datei selbst", "nicht entscheidbar"} {
		if !strings.Contains(verdict, want) {
			t.Errorf("the verdict lacks %q:\n%s", want, verdict)
		}
	}
	if strings.Contains(verdict, "NICHT BESTANDEN") || strings.Contains(verdict, "Nicht bestanden") {
		t.Errorf("the verdict of an indeterminate report says failed:\n%s", verdict)
	}
	if !strings.Contains(page, "nicht abschließend geprüft") {
		t.Error("the message is not marked as not fully established")
	}
}

// An evidence whose signature no longer holds is still a line of the
// timeline, for the reader to see what it claims, but marked as claimed
// and unverified.
func TestReport_ClaimedEvidenceUnverified(t *testing.T) {
	b := fresh(t)
	b.Evidence[1].DER = flipTimeDigit(t, b.Evidence[1].DER)
	r := verify(t, b, roots())
	if len(r.Claimed) != 1 || r.Claimed[0].File != "evidence/02-Delivery.p7m" || r.Claimed[0].Recipient == "" {
		t.Fatalf("claimed evidence = %+v, want the Delivery with its recipient", r.Claimed)
	}
	page := pageOf(t, r)
	tl := page[strings.Index(page, `id="timeline-0"`):strings.Index(page, `id="checks-0"`)]
	i := strings.Index(tl, "In das Postfach von")
	if i < 0 {
		t.Fatalf("the changed Delivery is not on the timeline:\n%s", tl)
	}
	line := tl[strings.LastIndex(tl[:i], "<li"):]
	line = line[:strings.Index(line, "</li>")]
	for _, want := range []string{`class="fail"`, "angeblich signiert von", "nicht verifiziert", "Die Signatur dieses Nachweises hält nicht", "Signatur des Nachweises"} {
		if !strings.Contains(line, want) {
			t.Errorf("the Delivery's line lacks %q:\n%s", want, line)
		}
	}
}

// A page of several files names each file's verdict under the overall
// one, and each file's part again starts with its failures.
func TestReport_SeveralFiles(t *testing.T) {
	path := writeReport(t, "several.html", genuine(t), tamperedSubject(t))
	b := openReport(t, path)
	defer shoot(t, b, "report-several")

	v := boxOf(t, b, "#verdict")
	if !v.Found || v.Bottom > v.Screen || !strings.Contains(v.Text, "Nicht bestanden") ||
		!strings.Contains(v.Text, "nachweis.zip: bestanden") || !strings.Contains(v.Text, "bundle.zip: nicht bestanden") {
		t.Errorf("the overall verdict does not name each file's on the first screen: %+v", v)
	}
	if f := boxOf(t, b, "#findings-0"); f.Found {
		t.Errorf("the genuine file lists findings: %q", f.Text)
	}
	f, m := boxOf(t, b, "#findings-1"), boxOf(t, b, "#message-1")
	if !f.Found || f.Bottom > m.Top || !strings.Contains(f.Text, "Der Umschlag wurde nach der Signatur des Absenders verändert") {
		t.Errorf("the tampered file's part does not start with its failures: %+v (message at %v)", f, m.Top)
	}
	wantClean(t, b, path)
}
