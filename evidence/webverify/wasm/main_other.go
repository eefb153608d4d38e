//go:build !(js && wasm)

package main

import (
	"fmt"
	"os"
)

// main explains where this program runs: it is the page's verifier, and
// kurier verify is the one for the command line.
func main() {
	fmt.Fprintln(os.Stderr, "this is the browser's verifier: build it with GOOS=js GOARCH=wasm (go generate ./evidence/webverify); on the command line use kurier verify")
	os.Exit(2)
}
