package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"kurier.dev/kurier/chromium"
	"kurier.dev/kurier/evidence/audit"
	"kurier.dev/kurier/evidence/bundle"
	"kurier.dev/kurier/pki"
)

// Exit codes of kurier verify besides 0 (everything holds) and 1 (a check
// failed, or the command could not run).
const exitIndeterminate = 3

// errIndeterminate is returned when no check failed but not every check
// could be established.
var errIndeterminate = errors.New("not every check could be established")

// exitCode returns the process exit code for err.
func exitCode(err error) int {
	if errors.Is(err, errIndeterminate) {
		return exitIndeterminate
	}
	return 1
}

func (e *env) verify(args []string) error {
	c := newCommand("verify", e.stderr)
	ca := c.String("ca", "", "the federation's CA certificate (PEM), obtained independently; without it the bundle's own is used and the result is at best indeterminate")
	crl := c.String("crl", "", "a CRL (PEM or DER) to use instead of the bundle's; for single .p7m files the only CRL")
	report := c.String("report", "", "write an HTML verification report (Prüfprotokoll) here")
	reportPDF := c.String("report-pdf", "", "also print the report to this PDF file, with a local Chromium (apt-get install chromium)")
	var since, logKeys fileList
	c.Var(&since, "since", "an older checkpoint (or bundle) of the same log, to check the bundle's log extends it; repeatable")
	c.Var(&logKeys, "log-key", "a file with a node's known log key (log.vkey); each of the bundle's logs whose origin a given key names must use one of those, and one that none names is indeterminate; repeatable")
	serve := c.String("serve", "", "serve the verifier's page on this computer's ADDR (127.0.0.1:8080) until interrupted: drop a bundle and ca.pem on it, nothing is uploaded")
	writeWeb := c.String("write-web", "", "write the verifier's page into DIR, static files for any web server (serve it over HTTPS)")
	files, err := c.parse(args)
	if err != nil {
		return err
	}
	if *serve != "" || *writeWeb != "" {
		if len(files) > 0 || *ca != "" || *crl != "" || *report != "" || *reportPDF != "" || len(since) > 0 || len(logKeys) > 0 {
			return errors.New("verify: --serve and --write-web take no files and no checking options: the page asks for them")
		}
		if *serve != "" && *writeWeb != "" {
			return errors.New("verify: give --serve or --write-web, not both")
		}
		if *writeWeb != "" {
			return e.writeWeb(c, *writeWeb)
		}
		return e.serveWeb(c, *serve)
	}
	if len(files) == 0 {
		return errors.New("verify: no file given: kurier verify FILE… [--ca ca.pem]")
	}
	if *reportPDF != "" {
		// Before any work, so that a missing browser is said first.
		if _, err := chromium.Find(); err != nil {
			return fmt.Errorf("verify: --report-pdf needs Chromium to print with: %w; on Debian or Ubuntu: apt-get install chromium", err)
		}
	}
	var o audit.Options
	if *ca != "" {
		if o.Roots, err = pki.LoadCertificates(*ca); err != nil {
			return fmt.Errorf("verify: --ca: %w", err)
		}
	}
	if *crl != "" {
		if o.CRL, err = readBounded(*crl, 8<<20); err != nil {
			return fmt.Errorf("verify: --crl: %w", err)
		}
	}
	for _, f := range logKeys {
		data, err := readBounded(f, 64<<10)
		if err != nil {
			return fmt.Errorf("verify: --log-key: %w", err)
		}
		for _, line := range strings.Fields(string(data)) {
			o.LogKeys = append(o.LogKeys, line)
		}
	}
	for _, f := range since {
		cp, err := readCheckpoint(f)
		if err != nil {
			return fmt.Errorf("verify: --since %s: %w", f, err)
		}
		o.Since = append(o.Since, audit.File{Name: f, Data: cp})
	}
	var reports []*audit.Report
	for _, f := range files {
		data, err := readBounded(f, bundle.MaxSizeWithContent)
		if err != nil {
			reports = append(reports, audit.Unreadable(f, err, o))
			continue
		}
		reports = append(reports, audit.Verify(f, data, o))
	}
	if *report != "" || *reportPDF != "" {
		if err := e.writeReport(reports, *report, *reportPDF); err != nil {
			return err
		}
	}
	if c.json {
		out := make([]verdictJSON, len(reports))
		for i, r := range reports {
			out[i] = verdictJSON{Verdict: verdictOf[r.Worst()], Report: r}
		}
		if err := e.printJSON(out); err != nil {
			return err
		}
	} else {
		for _, r := range reports {
			printChecks(e.stdout, r)
		}
		if *report != "" {
			fmt.Fprintf(e.stdout, "report written to %s\n", *report)
		}
		if *reportPDF != "" {
			fmt.Fprintf(e.stdout, "report printed to %s\n", *reportPDF)
		}
	}
	var err2 error
	switch audit.Worst(reports) {
	case audit.Fail:
		err2 = errors.New("verification failed: see the checks marked FAIL")
	case audit.Indeterminate:
		err2 = fmt.Errorf("verification indeterminate: %w (marked ????)", errIndeterminate)
	}
	if err2 != nil && c.json {
		return reported{err2} // the reports are the JSON value
	}
	return err2
}

// writeReport writes the reports as HTML to htmlPath and, if pdfPath is
// set, prints that page to pdfPath with Chromium; without htmlPath the
// page goes to a temporary file for printing only.
func (e *env) writeReport(reports []*audit.Report, htmlPath, pdfPath string) error {
	var buf bytes.Buffer
	if err := audit.WriteHTML(&buf, reports); err != nil {
		return err
	}
	if htmlPath == "" {
		dir, err := os.MkdirTemp("", "kurier-report-")
		if err != nil {
			return fmt.Errorf("verify: report: %w", err)
		}
		defer os.RemoveAll(dir)
		htmlPath = filepath.Join(dir, "pruefprotokoll.html")
	}
	if err := writeFileAtomic(htmlPath, buf.Bytes()); err != nil {
		return fmt.Errorf("verify: report: %w", err)
	}
	if pdfPath == "" {
		return nil
	}
	// Printed beside its destination under another name, then renamed,
	// so that a failed print leaves no half a PDF.
	tmp, err := os.CreateTemp(filepath.Dir(pdfPath), ".kurier-report-*.pdf")
	if err != nil {
		return fmt.Errorf("verify: --report-pdf: %w", err)
	}
	tmp.Close()
	defer os.Remove(tmp.Name())
	ctx, cancel := context.WithTimeout(e.ctx, printTimeout)
	defer cancel()
	if err := chromium.PrintPDF(ctx, htmlPath, tmp.Name()); err != nil {
		if errors.Is(err, chromium.ErrNotFound) {
			err = fmt.Errorf("%w; on Debian or Ubuntu: apt-get install chromium", err)
		}
		return fmt.Errorf("verify: --report-pdf: %w", err)
	}
	if err := os.Rename(tmp.Name(), pdfPath); err != nil {
		return fmt.Errorf("verify: --report-pdf: %w", err)
	}
	return nil
}

// printTimeout bounds printing the report with Chromium, which starts a
// browser of its own.
const printTimeout = 2 * time.Minute

// verdictJSON is one file's report as verify --json prints it, its
// verdict first.
type verdictJSON struct {
	Verdict string `json:"verdict"`
	*audit.Report
}

// verdictOf names a report's outcome in verify --json.
var verdictOf = map[audit.Status]string{audit.Pass: "passed", audit.Fail: "failed", audit.Indeterminate: "indeterminate"}

// printChecks prints a report as one line per check, the outcome first.
func printChecks(w io.Writer, r *audit.Report) {
	if r == nil {
		return
	}
	verdict := map[audit.Status]string{audit.Pass: "PASSED", audit.Indeterminate: "INDETERMINATE", audit.Fail: "FAILED"}[r.Worst()]
	fmt.Fprintf(w, "%s: %s\n", printable(r.File), verdict)
	if r.Log != nil {
		printLog(w, *r.Log, " (the exporting node's)")
	}
	for _, l := range r.OtherLogs {
		printLog(w, l, "")
	}
	mark := map[audit.Status]string{audit.Pass: "ok  ", audit.Indeterminate: "????", audit.Fail: "FAIL"}
	for _, ch := range r.Checks {
		subject := ""
		if ch.Subject != "" {
			subject = " " + ch.Subject
		}
		fmt.Fprintf(w, "  %s %s%s: %s\n", mark[ch.Status], ch.Name, printable(subject), printable(ch.Detail))
	}
}

// printLog prints one log a report established: which checkpoint the
// proofs lead to, and whose key signed it.
func printLog(w io.Writer, l audit.LogState, whose string) {
	root := l.Root
	if len(root) > 16 {
		root = root[:16] + "…"
	}
	fmt.Fprintf(w, "  log  %s%s: tree size %d, root %s, key %s", printable(l.Origin), whose, l.TreeSize, root, printable(l.Key))
	if l.Node != "" {
		fmt.Fprintf(w, ", vouched for by %s", printable(l.Node))
	}
	fmt.Fprintln(w)
}
