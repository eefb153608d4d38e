//go:build unix

package chromium_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"kurier.dev/kurier/chromium"
)

// fakeChromium installs a shell script as KURIER_CHROMIUM that starts a
// helper (sleep 20, its pid written to the returned file) and then runs
// body, and returns the helper's pid file.
func fakeChromium(t *testing.T, body string) string {
	t.Helper()
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "helper.pid")
	fake := filepath.Join(dir, "chromium")
	script := "#!/bin/sh\nsleep 20 &\necho $! > " + pidFile + "\n" + body + "\n"
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KURIER_CHROMIUM", fake)
	return pidFile
}

// gone reports whether the process in pidFile ends within a second: a
// killed process takes a moment to die, which no clock of ours can
// shorten, so this polls /proc (bounded) until it is gone or a zombie.
func gone(t *testing.T, pidFile string) bool {
	t.Helper()
	for deadline := time.Now().Add(time.Second); ; time.Sleep(10 * time.Millisecond) {
		if ended(t, pidFile) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}

// ended reports whether the process in pidFile has ended: no longer in
// /proc, or a zombie waiting for init to reap it.
func ended(t *testing.T, pidFile string) bool {
	t.Helper()
	data, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatalf("the fake browser started no helper: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		t.Fatal(err)
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if errors.Is(err, os.ErrNotExist) {
		return true
	}
	if err != nil {
		t.Skipf("no /proc here: %v", err)
	}
	// pid (comm) STATE …
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	return len(f) > 0 && (f[0] == "Z" || f[0] == "X")
}

// At its deadline PrintPDF kills the browser and every helper it started,
// and returns at once, though a helper would outlive the browser.
func TestPrintPDF_KeepsItsDeadline(t *testing.T) {
	pidFile := fakeChromium(t, "sleep 20")
	dir := t.TempDir()
	html := filepath.Join(dir, "r.html")
	if err := os.WriteFile(html, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	start := time.Now()
	err := chromium.PrintPDF(ctx, html, filepath.Join(dir, "out.pdf"))
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("PrintPDF with a 1s deadline returned after %s", took.Round(time.Second))
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("PrintPDF past its deadline: %v, want context.DeadlineExceeded", err)
	}
	if !gone(t, pidFile) {
		t.Error("the browser's helper is still running after PrintPDF returned")
	}
}

// A helper that outlives a browser which printed and exited is killed,
// and does not hold PrintPDF up.
func TestPrintPDF_LeavesNoHelperRunning(t *testing.T) {
	pidFile := fakeChromium(t, `for a in "$@"; do case "$a" in --print-to-pdf=*) echo '%PDF-1.4' > "${a#--print-to-pdf=}";; esac; done`)
	dir := t.TempDir()
	html := filepath.Join(dir, "r.html")
	if err := os.WriteFile(html, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := chromium.PrintPDF(t.Context(), html, filepath.Join(dir, "out.pdf")); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("PrintPDF waited %s for a helper of the browser", took.Round(time.Second))
	}
	if !gone(t, pidFile) {
		t.Error("the browser's helper is still running after PrintPDF returned")
	}
}
