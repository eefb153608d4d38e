package main

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"kurier.dev/kurier/broker/daemon"
	"kurier.dev/kurier/chromium"
)

// exportedBundle sends a message from the agency to the court on the test
// node and returns the path of its evidence bundle as kurier export
// writes it.
func exportedBundle(t *testing.T) string {
	t.Helper()
	doc := filepath.Join(t.TempDir(), "klage.txt")
	if err := os.WriteFile(doc, []byte("Klage"), 0o600); err != nil {
		t.Fatal(err)
	}
	var sent struct{ ID string }
	kurierJSON(t, &sent, append([]string{"send", "--to", daemon.DevCourt, "--subject", "Klage wegen Mietrückstand", doc}, as("agency")...)...)
	zip := filepath.Join(t.TempDir(), "nachweis.zip")
	kurier(t, append([]string{"export", sent.ID, "-o", zip}, as("agency")...)...)
	return zip
}

// TestReport_VerifyReportPDF: kurier verify --report-pdf prints the
// Prüfprotokoll to PDF, beside the HTML of --report or, without it, from
// a temporary page it leaves nowhere; without Chromium it says how to
// install it before checking anything.
func TestReport_VerifyReportPDF(t *testing.T) {
	zip := exportedBundle(t)
	ca := filepath.Join(devDir, "ca", "ca.pem")

	t.Run("no chromium", func(t *testing.T) {
		t.Setenv("PATH", t.TempDir())
		t.Setenv("KURIER_CHROMIUM", "")
		dir := t.TempDir()
		pdf := filepath.Join(dir, "pruefprotokoll.pdf")
		out, err := try(t, "verify", zip, "--ca", ca, "--report-pdf", pdf)
		if err == nil || !strings.Contains(err.Error(), "apt-get install chromium") || exitCode(err) != 1 {
			t.Fatalf("kurier verify --report-pdf without Chromium: %v (exit %d), want the install named, exit 1", err, exitCode(err))
		}
		if out != "" {
			t.Errorf("checks printed although the PDF cannot be made: %q", out)
		}
		if entries, _ := os.ReadDir(dir); len(entries) > 0 {
			t.Errorf("left behind: %v", entries)
		}
	})

	if _, err := chromium.Find(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%v: .ci/run installs it", err)
		}
		t.Skipf("%v: apt-get install chromium", err)
	}
	wantPDF := func(t *testing.T, path string) {
		t.Helper()
		data, err := os.ReadFile(path)
		if err != nil || !bytes.HasPrefix(data, []byte("%PDF-")) {
			t.Fatalf("%s is not a PDF: %v", path, err)
		}
	}
	t.Run("with report", func(t *testing.T) {
		dir := t.TempDir()
		html, pdf := filepath.Join(dir, "pruefprotokoll.html"), filepath.Join(dir, "pruefprotokoll.pdf")
		out := kurier(t, "verify", zip, "--ca", ca, "--report", html, "--report-pdf", pdf)
		if !strings.Contains(out, zip+": PASSED") || !strings.Contains(out, "report printed to "+pdf) {
			t.Errorf("kurier verify printed:\n%s", out)
		}
		page, err := os.ReadFile(html)
		if err != nil || !bytes.Contains(page, []byte("Bestanden")) || !bytes.Contains(page, []byte("Klage wegen Mietrückstand")) {
			t.Errorf("the HTML report does not pass the bundle or lacks its subject: %v", err)
		}
		wantPDF(t, pdf)
	})
	t.Run("pdf only", func(t *testing.T) {
		dir := t.TempDir()
		pdf := filepath.Join(dir, "pruefprotokoll.pdf")
		tmpBefore, _ := filepath.Glob(filepath.Join(os.TempDir(), "kurier-report-*"))
		kurier(t, "verify", zip, "--ca", ca, "--report-pdf", pdf)
		wantPDF(t, pdf)
		entries, err := os.ReadDir(dir)
		if err != nil || len(entries) != 1 {
			t.Errorf("beside the PDF: %v %v", entries, err)
		}
		tmpAfter, _ := filepath.Glob(filepath.Join(os.TempDir(), "kurier-report-*"))
		for _, p := range tmpAfter {
			if !slices.Contains(tmpBefore, p) {
				t.Errorf("the temporary page %s is left behind", p)
			}
		}
	})
}
