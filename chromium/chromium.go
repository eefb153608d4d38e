// Package chromium finds a local Chromium and runs it headless, for the
// one thing Kurier asks of a browser outside tests: printing a report page
// to PDF. It starts Chromium as a program of its own with a fresh profile
// and every background connection switched off; printing also sends every
// request the page might make to a proxy that is not there, so a report
// is printed from its file alone and nothing it names reaches a server.
package chromium

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
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
// pdfPath, on the paper size the page's print styles ask for. The page is
// printed Offline: nothing it names beyond files reaches a server. When
// ctx ends, Chromium and every process it started are killed, and
// PrintPDF returns ctx's error.
func PrintPDF(ctx context.Context, htmlPath, pdfPath string) error {
	// Chromium prints its error page for a file it cannot read, and
	// exits 0: the file must be there first.
	if fi, err := os.Stat(htmlPath); err != nil {
		return fmt.Errorf("print %s: %w", htmlPath, err)
	} else if !fi.Mode().IsRegular() {
		return fmt.Errorf("print %s: not a file", htmlPath)
	}
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
	// The page's own URL, escaped: a raw "file://"+path would take a '#',
	// '?' or '%' in the path as URL syntax and print another page.
	page := (&url.URL{Scheme: "file", Path: filepath.ToSlash(absHTML)}).String()
	args := append(Flags(profile), Offline...)
	args = append(args, "--no-pdf-header-footer", "--print-to-pdf="+absPDF, page)
	// Chromium's output goes to a file, not a pipe: a helper process
	// that outlives the browser would hold a pipe open and keep Wait
	// waiting.
	log, err := os.CreateTemp(profile, "output-")
	if err != nil {
		return fmt.Errorf("print %s: %w", htmlPath, err)
	}
	defer log.Close()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	// Chromium runs as a process group of its own, all of which is killed
	// at the deadline and after the browser exits: none of its helpers is
	// left running, and none keeps PrintPDF past its deadline.
	ownGroup(cmd)
	cmd.WaitDelay = 5 * time.Second
	err = cmd.Run()
	killGroup(cmd)
	out, _ := os.ReadFile(log.Name())
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("print %s with %s: %w", htmlPath, bin, ctx.Err())
		}
		return fmt.Errorf("print %s with %s: %w: %s", htmlPath, bin, err, lastLine(out))
	}
	if fi, err := os.Stat(absPDF); err != nil || fi.Size() == 0 {
		return fmt.Errorf("print %s with %s: no PDF written: %s", htmlPath, bin, lastLine(out))
	}
	return nil
}

// Offline are the switches that keep a page printed by PrintPDF from
// reaching any server: every request goes to a proxy on the discard port,
// where nothing listens, loopback addresses included ("<-loopback>"
// removes Chromium's implicit bypass for them), and no name resolves, so
// nothing is asked of DNS either. Files the page names by file: URL are
// still read; a report needs none.
var Offline = []string{
	"--proxy-server=127.0.0.1:9",
	"--proxy-bypass-list=<-loopback>",
	"--host-resolver-rules=MAP * ~NOTFOUND",
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
