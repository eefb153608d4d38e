package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"kurier.dev/kurier/evidence/webverify"
)

// kurier verify --serve serves the page on this computer until the
// command is interrupted, and says where.
func TestVerify_Serve(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := run(ctx, []string{"verify", "--serve", "127.0.0.1:0"}, pw, io.Discard)
		pw.Close()
		done <- err
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatalf("kurier verify --serve printed no URL: %v (%v)", err, <-done)
	}
	url := regexp.MustCompile(`http://127\.0\.0\.1:[0-9]+/`).FindString(line)
	if url == "" {
		t.Fatalf("no URL in %q", line)
	}
	go io.Copy(io.Discard, pr)
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(page), "Nachweise prüfen") || resp.Header.Get("Content-Security-Policy") == "" {
		t.Errorf("GET %s: %s, policy %q:\n%.300s", url, resp.Status, resp.Header.Get("Content-Security-Policy"), page)
	}
	cancel() // as Ctrl-C does through main's signal context
	if err := <-done; err != nil {
		t.Errorf("kurier verify --serve ended with %v, want nil once interrupted", err)
	}
	if _, err := http.Get(url); err == nil {
		t.Errorf("%s still answers after the command ended", url)
	}
}

// Across a network the page itself could be swapped on the way, so
// --serve listens only on this computer.
func TestVerify_ServeRefusesOtherAddresses(t *testing.T) {
	for _, addr := range []string{":8080", "0.0.0.0:8080", "[::]:8080", "192.0.2.1:8080", "example.org:8080", "127.0.0.1"} {
		t.Run(addr, func(t *testing.T) {
			_, err := try(t, "verify", "--serve", addr)
			if err == nil {
				t.Fatalf("kurier verify --serve %s served", addr)
			}
			if addr != "127.0.0.1" && !errors.Is(err, webverify.ErrNotLoopback) {
				t.Errorf("kurier verify --serve %s: %v, want it refused as not this computer's", addr, err)
			}
		})
	}
	if _, err := try(t, "verify", "--serve", "127.0.0.1:0", "bundle.zip"); err == nil || !strings.Contains(err.Error(), "take no files") {
		t.Errorf("kurier verify --serve with a file: %v", err)
	}
}

// The page asks for its files and options itself: --serve and --write-web
// refuse every checking option rather than ignore it, --report-pdf too.
func TestVerify_WebRefusesCheckingOptions(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{"--serve", "127.0.0.1:0", "--report-pdf", filepath.Join(dir, "r.pdf")},
		{"--write-web", filepath.Join(dir, "web"), "--report-pdf", filepath.Join(dir, "r.pdf")},
		{"--write-web", filepath.Join(dir, "web"), "--report", filepath.Join(dir, "r.html")},
		{"--serve", "127.0.0.1:0", "--ca", "ca.pem"},
	} {
		_, err := try(t, append([]string{"verify"}, args...)...)
		if err == nil || !strings.Contains(err.Error(), "no checking options") {
			t.Errorf("kurier verify %q: %v, want it refused", args, err)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) > 0 {
		t.Errorf("refused commands left %d files behind", len(entries))
	}
}

// kurier verify --write-web writes the page as static files: the page
// with its policy, its scripts and the verifier module.
func TestVerify_WriteWeb(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "web")
	var out struct {
		Dir    string
		Files  []string
		Header string `json:"content_security_policy"`
	}
	kurierJSON(t, &out, "verify", "--write-web", dir)
	if out.Dir != dir || len(out.Files) == 0 {
		t.Errorf("JSON %+v", out)
	}
	for _, name := range []string{"index.html", "style.css", "app.js", "wasm_exec.js", "verifier.js"} {
		if fi, err := os.Stat(filepath.Join(dir, name)); err != nil || fi.Size() == 0 {
			t.Errorf("%s: %v", name, err)
		}
	}
	index, err := os.ReadFile(filepath.Join(dir, "index.html"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(index), `<meta http-equiv="Content-Security-Policy" content="`+webverify.Policy+`">`) {
		t.Error("index.html does not carry the page's Content-Security-Policy")
	}
	js, err := os.ReadFile(filepath.Join(dir, "verifier.js"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`"([A-Za-z0-9+/=]{1000,})"`).FindSubmatch(js)
	if m == nil {
		t.Fatal("verifier.js carries no module")
	}
	gz, err := base64.StdEncoding.DecodeString(string(m[1]))
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatal(err)
	}
	head := make([]byte, 8)
	if _, err := io.ReadFull(zr, head); err != nil || !bytes.Equal(head, []byte("\x00asm\x01\x00\x00\x00")) {
		t.Errorf("verifier.js's module starts %q (%v), want WebAssembly's \\0asm version 1", head, err)
	}
	if out.Header != webverify.HeaderPolicy {
		t.Errorf("JSON names the header policy %q, want %q", out.Header, webverify.HeaderPolicy)
	}
	// Again into the same folder: refused, nothing overwritten.
	if _, err := try(t, "verify", "--write-web", dir); !errors.Is(err, webverify.ErrDirNotEmpty) {
		t.Errorf("kurier verify --write-web into a written folder: %v, want ErrDirNotEmpty", err)
	}
	stdout := kurier(t, "verify", "--write-web", filepath.Join(t.TempDir(), "web2"))
	if !strings.Contains(stdout, "HTTPS") || !strings.Contains(stdout, "frame-ancestors 'none'") {
		t.Errorf("kurier verify --write-web says %q, want HTTPS and the header policy with frame-ancestors", stdout)
	}
}
