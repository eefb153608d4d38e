//go:build ignore

// generate.go builds the browser verifier and writes what package
// webverify embeds: site/verifier.wasm.gz and the toolchain's
// site/wasm_exec.js. Run it as go generate ./evidence/webverify and commit
// both files.
package main

import (
	"context"
	"fmt"
	"os"

	"kurier.dev/kurier/evidence/webverify/internal/wasmbuild"
)

func main() {
	if err := generate(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "generate:", err)
		os.Exit(1)
	}
}

func generate(ctx context.Context) error {
	wasm, err := wasmbuild.Build(ctx)
	if err != nil {
		return err
	}
	gz, err := wasmbuild.Gzip(wasm)
	if err != nil {
		return err
	}
	js, err := wasmbuild.WasmExecJS(ctx)
	if err != nil {
		return err
	}
	if err := os.WriteFile("site/verifier.wasm.gz", gz, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile("site/wasm_exec.js", js, 0o644); err != nil {
		return err
	}
	fmt.Printf("site/verifier.wasm.gz: %d bytes (%d uncompressed)\n", len(gz), len(wasm))
	return nil
}
