// Package chromium finds a local Chromium and runs it headless, for the
// one thing Kurier asks of a browser outside tests: printing a report page
// to PDF. It starts Chromium as a program of its own with a fresh profile
// and every background connection switched off, so printing a report
// makes no request beyond the page itself.
package chromium

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// ErrNotFound is returned when no Chromium is installed where Find looks.
var ErrNotFound = errors.New("no Chromium found (install Debian's chromium package, or set KURIER_CHROMIUM to its path)")

// names are the programs Find tries, in order, on PATH.
var names = []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"}

// Find returns the path of the Chromium to run: $KURIER_CHROMIUM if set,
// else the first of the usual names on PATH.
func Find() (string, error) {
	if p := os.Getenv("KURIER_CHROMIUM"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("KURIER_CHROMIUM: %w", err)
		}
		return p, nil
	}
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p, nil
		}
	}
	return "", ErrNotFound
}

// Flags are the switches every headless start gets: no GPU, no first-run
// dialogs, and none of Chromium's own background connections (updates,
// sync, component downloads), which a closed network refuses and which a
// verifier must not make anyway. NoSandbox adds --no-sandbox, which
// Chromium requires when it runs as root.
func Flags(userDataDir string) []string {
	f := []string{
		"--headless", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update",
		"--disable-sync", "--disable-extensions", "--disable-default-apps",
		"--user-data-dir=" + userDataDir,
	}
	if os.Geteuid() == 0 {
		f = append(f, "--no-sandbox")
	}
	return f
}

// PrintPDF renders the HTML file htmlPath and writes it as a PDF to
// pdfPath, on the paper size the page's print styles ask for.
func PrintPDF(ctx context.Context, htmlPath, pdfPath string) error {
	bin, err := Find()
	if err != nil {
		return err
	}
	absHTML, err := filepath.Abs(htmlPath)
	if err != nil {
		return fmt.Errorf("print %s: %w", htmlPath, err)
	}
	absPDF, err := filepath.Abs(pdfPath)
	if err != nil {
		return fmt.Errorf("print to %s: %w", pdfPath, err)
	}
	profile, err := os.MkdirTemp("", "kurier-chromium-")
	if err != nil {
		return fmt.Errorf("print %s: %w", htmlPath, err)
	}
	defer os.RemoveAll(profile)
	args := append(Flags(profile), "--no-pdf-header-footer", "--print-to-pdf="+absPDF, "file://"+absHTML)
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("print %s with %s: %w: %s", htmlPath, bin, err, lastLine(out))
	}
	if fi, err := os.Stat(absPDF); err != nil || fi.Size() == 0 {
		return fmt.Errorf("print %s with %s: no PDF written: %s", htmlPath, bin, lastLine(out))
	}
	return nil
}

func lastLine(out []byte) string {
	s := strings.TrimSpace(string(out))
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	const max = 300
	if len(s) > max {
		s = s[:max]
	}
	return s
}
