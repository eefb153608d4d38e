package webverify_test

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"kurier.dev/kurier/evidence/webverify"
	"kurier.dev/kurier/evidence/webverify/internal/wasmbuild"
)

// The page must carry the same policy in its <meta> element as Handler
// sends, or a plain web server would serve it with another.
func TestPage_MetaPolicyIsPolicy(t *testing.T) {
	html, err := os.ReadFile("site/index.html")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`<meta http-equiv="Content-Security-Policy" content="([^"]*)">`).FindSubmatch(html)
	if m == nil {
		t.Fatal("index.html has no Content-Security-Policy <meta> element")
	}
	if got := string(m[1]); got != webverify.Policy {
		t.Errorf("index.html's policy\n  %s\nis not webverify.Policy\n  %s", got, webverify.Policy)
	}
	for _, d := range []string{"default-src 'none'", "script-src 'self' 'wasm-unsafe-eval'"} {
		if !strings.Contains(webverify.Policy, d) {
			t.Errorf("the policy lacks %q", d)
		}
	}
	if strings.Contains(webverify.Policy, "connect-src") || strings.Contains(webverify.Policy, "'unsafe-eval'") {
		t.Errorf("the policy allows connections or eval: %s", webverify.Policy)
	}
}

func TestHandler_ServesThePage(t *testing.T) {
	srv := httptest.NewServer(webverify.Handler())
	defer srv.Close()
	for path, ctype := range map[string]string{
		"/":             "text/html; charset=utf-8",
		"/index.html":   "text/html; charset=utf-8",
		"/style.css":    "text/css; charset=utf-8",
		"/app.js":       "text/javascript; charset=utf-8",
		"/wasm_exec.js": "text/javascript; charset=utf-8",
		"/verifier.js":  "text/javascript; charset=utf-8",
	} {
		t.Run(path, func(t *testing.T) {
			resp, body := get(t, srv.URL+path, nil)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("GET %s: %s", path, resp.Status)
			}
			want := map[string]string{
				"Content-Type":            ctype,
				"Content-Security-Policy": webverify.Policy + "; frame-ancestors 'none'",
				"X-Content-Type-Options":  "nosniff",
				"Referrer-Policy":         "no-referrer",
				"Cache-Control":           "no-cache",
			}
			for k, v := range want {
				if got := resp.Header.Get(k); got != v {
					t.Errorf("%s: %q, want %q", k, got, v)
				}
			}
			if len(body) == 0 {
				t.Error("empty body")
			}
			// Revalidation: the same ETag gives 304 and no body.
			etag := resp.Header.Get("ETag")
			if etag == "" {
				t.Fatal("no ETag")
			}
			resp, body = get(t, srv.URL+path, map[string]string{"If-None-Match": etag})
			if resp.StatusCode != http.StatusNotModified || len(body) != 0 {
				t.Errorf("If-None-Match %s: %s with %d bytes, want 304 and none", etag, resp.Status, len(body))
			}
		})
	}
	for _, path := range []string{"/verifier.wasm.gz", "/site/app.js", "/../go.mod", "/app.js/"} {
		if resp, _ := get(t, srv.URL+path, nil); resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %s, want 404", path, resp.Status)
		}
	}
	resp, err := http.Post(srv.URL+"/", "application/zip", strings.NewReader("PK"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /: %s, want 405: the page takes no uploads", resp.Status)
	}
}

func get(t *testing.T, url string, header map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

func TestWriteDir_WritesThePage(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pruefung")
	names, err := webverify.WriteDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"index.html", "style.css", "app.js", "wasm_exec.js", "verifier.js"}
	if !slices.Equal(names, want) {
		t.Errorf("wrote %q, want %q", names, want)
	}
	srv := httptest.NewServer(webverify.Handler())
	defer srv.Close()
	for _, name := range want {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if _, served := get(t, srv.URL+"/"+name, nil); !bytes.Equal(data, served) {
			t.Errorf("%s differs from what Handler serves", name)
		}
	}
	wasm := verifierModule(t, filepath.Join(dir, "verifier.js"))
	if !bytes.HasPrefix(wasm, []byte("\x00asm\x01\x00\x00\x00")) {
		t.Errorf("verifier.js does not carry a WebAssembly module: %q", wasm[:min(len(wasm), 8)])
	}
}

// verifierModule returns the WebAssembly module that the verifier.js at
// path carries, as app.js decodes it.
func verifierModule(t *testing.T, path string) []byte {
	t.Helper()
	js, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`globalThis\.kurierVerifierGzip = "([A-Za-z0-9+/=]+)";`).FindSubmatch(js)
	if m == nil {
		t.Fatal("verifier.js does not set kurierVerifierGzip")
	}
	gz, err := base64.StdEncoding.DecodeString(string(m[1]))
	if err != nil {
		t.Fatal(err)
	}
	return gunzip(t, gz)
}

func gunzip(t *testing.T, gz []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// The checked-in verifier must be what its source builds to, or the page
// would check with other code than kurier verify. The build takes a
// while, so it runs under CI=true or KURIER_CHECK_WASM=1.
func TestVerifier_UpToDate(t *testing.T) {
	if os.Getenv("CI") != "true" && os.Getenv("KURIER_CHECK_WASM") != "1" {
		t.Skip("set KURIER_CHECK_WASM=1 to rebuild the verifier and compare it with the checked-in one")
	}
	// The go command on PATH builds, with the toolchain go.mod names
	// (GOTOOLCHAIN=auto): another toolchain gives other bytes.
	const fix = "run go generate ./evidence/webverify and commit site/verifier.wasm.gz and site/wasm_exec.js (with GOTOOLCHAIN=auto)"
	built, err := wasmbuild.Build(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	gz, err := os.ReadFile("site/verifier.wasm.gz")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(gunzip(t, gz), built) {
		t.Errorf("site/verifier.wasm.gz is not what the source builds to: %s", fix)
	}
	js, err := wasmbuild.WasmExecJS(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if checkedIn, err := os.ReadFile("site/wasm_exec.js"); err != nil || !bytes.Equal(checkedIn, js) {
		t.Errorf("site/wasm_exec.js is not the toolchain's (%v): %s", err, fix)
	}
}

// WriteDir writes only into a new or empty folder: a link or a file
// already in it is left as it was, and nothing outside it is written.
func TestWriteDir_StaysInDir(t *testing.T) {
	root := t.TempDir()
	outside := filepath.Join(root, "bashrc")
	if err := os.WriteFile(outside, []byte("keep me\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, prepare := range map[string]func(dir string) error{
		"link to a file outside": func(dir string) error { return os.Symlink(outside, filepath.Join(dir, "app.js")) },
		"dangling link": func(dir string) error {
			return os.Symlink(filepath.Join(root, "new"), filepath.Join(dir, "index.html"))
		},
		"a file of its own": func(dir string) error {
			return os.WriteFile(filepath.Join(dir, "index.html"), []byte("keep me\n"), 0o600)
		},
		"the page itself": func(dir string) error {
			_, err := webverify.WriteDir(dir)
			return err
		},
	} {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "www")
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := prepare(dir); err != nil {
				t.Fatal(err)
			}
			before, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			_, err = webverify.WriteDir(dir)
			if !errors.Is(err, webverify.ErrDirNotEmpty) || !strings.Contains(err.Error(), "new or empty folder") {
				t.Errorf("WriteDir into a folder that is not empty: %v, want ErrDirNotEmpty", err)
			}
			if after, _ := os.ReadDir(dir); len(after) != len(before) {
				t.Errorf("WriteDir added to the folder: %d entries, had %d", len(after), len(before))
			}
			if got, _ := os.ReadFile(outside); string(got) != "keep me\n" {
				t.Errorf("WriteDir wrote %d bytes into %s, outside DIR", len(got), outside)
			}
			if _, err := os.Lstat(filepath.Join(root, "new")); err == nil {
				t.Error("WriteDir created a file through a dangling link")
			}
		})
	}
	// An empty folder that exists is fine.
	dir := t.TempDir()
	if names, err := webverify.WriteDir(dir); err != nil || len(names) != 5 {
		t.Errorf("WriteDir into an empty folder: %q, %v", names, err)
	}
}
