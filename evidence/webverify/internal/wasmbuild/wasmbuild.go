// Package wasmbuild builds the browser verifier reproducibly: the js/wasm
// program evidence/webverify/wasm, its gzip form as package webverify
// embeds it, and the wasm_exec.js of the same Go toolchain. go generate
// ./evidence/webverify writes them; a test rebuilds them to catch a
// checked-in verifier that no longer matches the code.
package wasmbuild

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Package is the verifier's import path.
const Package = "kurier.dev/kurier/evidence/webverify/wasm"

// Build cross-compiles the verifier with the go command on PATH and
// returns the WebAssembly module. The build is reproducible: -trimpath
// leaves out where the source is, -buildvcs=false the commit (or the
// module would change with every commit, whatever it touched), -s -w the
// symbol and debug tables; GOFLAGS and GOWASM of the caller are ignored.
func Build(ctx context.Context) ([]byte, error) {
	dir, err := os.MkdirTemp("", "kurier-wasm-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	out := filepath.Join(dir, "verifier.wasm")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w", "-o", out, Package)
	cmd.Env = append(os.Environ(), "GOOS=js", "GOARCH=wasm", "CGO_ENABLED=0", "GOFLAGS=", "GOWASM=")
	if msg, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build the verifier (GOOS=js GOARCH=wasm go build %s): %w\n%s", Package, err, msg)
	}
	wasm, err := os.ReadFile(out)
	if err != nil {
		return nil, err
	}
	if !bytes.HasPrefix(wasm, []byte("\x00asm")) {
		return nil, fmt.Errorf("build the verifier: %s is not a WebAssembly module", out)
	}
	return wasm, nil
}

// Gzip compresses wasm at the best compression, with no name and no time
// in the header, so the same module always gives the same bytes.
func Gzip(wasm []byte) ([]byte, error) {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	if _, err := zw.Write(wasm); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// WasmExecJS returns the JavaScript support file of the go command's
// toolchain, which must come from the toolchain that built the module.
func WasmExecJS(ctx context.Context) ([]byte, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOROOT").Output()
	if err != nil {
		return nil, fmt.Errorf("go env GOROOT: %w", err)
	}
	path := filepath.Join(strings.TrimSpace(string(out)), "lib", "wasm", "wasm_exec.js")
	js, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("the toolchain's wasm_exec.js: %w", err)
	}
	return js, nil
}
