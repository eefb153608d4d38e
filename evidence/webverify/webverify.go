// Package webverify is Kurier's verifier in the browser: one static page
// on which a person drops an evidence bundle and the federation's
// ca.pem, and sees the verdict and the same Prüfprotokoll as kurier
// verify --report writes, computed in the browser. Nothing is uploaded:
// the checks are kurier verify's own code (package audit) compiled to
// WebAssembly (evidence/webverify/wasm). Once loaded the page makes no
// request of its own, and its Content-Security-Policy refuses every kind
// a script could make without leaving the page: fetch and XHR, images,
// CSS url(), fonts, frames, WebSocket, prefetch and form submissions. (No
// policy can forbid a script to navigate the page away; the page's own
// scripts never do.)
//
// Handler serves the page; WriteDir writes it as a folder for any web
// server. The compiled verifier is checked in as site/verifier.wasm.gz,
// built reproducibly by go generate ./evidence/webverify; the page
// carries it base64-encoded in verifier.js, so that loading it is a
// plain script and any server that serves .js files will do.
package webverify

//go:generate go run generate.go

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

//go:embed site/index.html site/style.css site/app.js site/wasm_exec.js site/verifier.wasm.gz
var site embed.FS

// Policy is the page's Content-Security-Policy, which index.html also
// carries in a <meta> element for servers that send no header. It allows
// the page's own scripts and the compiling of the verifier, and refuses
// every request the page could make while staying on it: no connect-src
// (fetch, XHR, WebSocket), no images but data:, no fonts, no prefetch, no
// form submission, frames only from srcdoc (which needs no source).
// Navigating away is beyond any policy. The report's inline <style>
// needs 'unsafe-inline' for styles, since the sandboxed frame it is shown
// in inherits this policy; with no script, no connection and images only
// from data: URLs, a style has nothing to run and no way out.
const Policy = "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self' 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"

// HeaderPolicy is Policy with what a <meta> policy cannot say: that no
// other site may frame the page (frame-ancestors). Handler sends it; a
// web server serving WriteDir's folder should send it as its
// Content-Security-Policy header.
const HeaderPolicy = Policy + "; frame-ancestors 'none'"

// file is one file of the page.
type file struct {
	name  string // as served and written: index.html, app.js …
	ctype string
	data  []byte
	etag  string
}

// files returns the page's files as a web server serves them, index.html
// first.
var files = sync.OnceValues(func() ([]file, error) {
	read := func(name string) ([]byte, error) { return fs.ReadFile(site, "site/"+name) }
	var out []file
	for _, f := range []struct{ name, ctype string }{
		{"index.html", "text/html; charset=utf-8"},
		{"style.css", "text/css; charset=utf-8"},
		{"app.js", "text/javascript; charset=utf-8"},
		{"wasm_exec.js", "text/javascript; charset=utf-8"},
	} {
		data, err := read(f.name)
		if err != nil {
			return nil, err
		}
		out = append(out, file{name: f.name, ctype: f.ctype, data: data})
	}
	gz, err := read("verifier.wasm.gz")
	if err != nil {
		return nil, err
	}
	out = append(out, file{name: "verifier.js", ctype: "text/javascript; charset=utf-8", data: verifierJS(gz)})
	for i := range out {
		sum := sha256.Sum256(out[i].data)
		out[i].etag = `"` + hex.EncodeToString(sum[:16]) + `"`
	}
	return out, nil
})

// verifierJS wraps the gzipped verifier in a script that app.js reads.
func verifierJS(gz []byte) []byte {
	var b bytes.Buffer
	b.WriteString("// Kurier's verifier: Go compiled to WebAssembly, gzipped, base64-encoded (go generate ./evidence/webverify).\n")
	b.WriteString(`globalThis.kurierVerifierGzip = "`)
	b.WriteString(base64.StdEncoding.EncodeToString(gz))
	b.WriteString("\";\n")
	return b.Bytes()
}

// Handler serves the page at / (and /index.html) with its scripts, and
// nothing else: GET and HEAD only, every response with the page's
// Content-Security-Policy, nosniff and no referrer. Responses carry an
// ETag and must be revalidated, so a browser keeps the verifier cached
// but never runs a stale one.
func Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", HeaderPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			h.Set("Allow", "GET, HEAD")
			http.Error(w, "the verifier's page is only read (GET)", http.StatusMethodNotAllowed)
			return
		}
		all, err := files()
		if err != nil {
			http.Error(w, "the page's files are missing from this build", http.StatusInternalServerError)
			return
		}
		name := strings.TrimPrefix(r.URL.Path, "/")
		if name == "" {
			name = "index.html"
		}
		for _, f := range all {
			if f.name == name {
				h.Set("Content-Type", f.ctype)
				h.Set("Cache-Control", "no-cache")
				h.Set("ETag", f.etag)
				http.ServeContent(w, r, f.name, time.Time{}, bytes.NewReader(f.data))
				return
			}
		}
		http.NotFound(w, r)
	})
}

// ErrDirNotEmpty is returned by WriteDir for a folder that already holds
// something: the page is written only into a new or empty folder, so that
// it never overwrites a file, nor writes through a link left there.
var ErrDirNotEmpty = errors.New("DIR is not empty: write the page into a new or empty folder")

// WriteDir writes the page into dir (made if missing, else it must be
// empty) as files for any web server: index.html, style.css, app.js,
// wasm_exec.js and verifier.js. The server needs no configuration beyond
// serving .js as JavaScript; index.html carries the policy itself, all of
// it but frame-ancestors, which only the Content-Security-Policy header
// can carry, so a server should send HeaderPolicy too. (Chromium also
// runs the page opened from disk.) Every file is created new inside dir,
// never through a symbolic link. It returns the names written.
func WriteDir(dir string) ([]string, error) {
	all, err := files()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("write the verifier's page: %w", err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("write the verifier's page: %w", err)
	}
	defer root.Close()
	if err := empty(root); err != nil {
		return nil, fmt.Errorf("write the verifier's page into %s: %w", dir, err)
	}
	var names []string
	for _, f := range all {
		if err := create(root, f); err != nil {
			return nil, fmt.Errorf("write the verifier's page into %s: %w", dir, err)
		}
		names = append(names, f.name)
	}
	return names, nil
}

// empty returns ErrDirNotEmpty unless root holds nothing.
func empty(root *os.Root) error {
	d, err := root.Open(".")
	if err != nil {
		return err
	}
	defer d.Close()
	if names, err := d.Readdirnames(1); len(names) > 0 {
		return ErrDirNotEmpty
	} else if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

// create writes f as a new file in root: O_EXCL refuses any name already
// there, a symbolic link included, so nothing outside root is written.
func create(root *os.Root, f file) error {
	w, err := root.OpenFile(f.name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := w.Write(f.data); err != nil {
		w.Close()
		return fmt.Errorf("%s: %w", f.name, err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("%s: %w", f.name, err)
	}
	return nil
}
