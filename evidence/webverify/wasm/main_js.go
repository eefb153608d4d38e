//go:build js && wasm

package main

import (
	"fmt"
	"syscall/js"
)

// main gives the page kurierVerify and kurierLimits, then waits: the
// page calls kurierVerify for each file the person drops.
//
// kurierVerify(bundle, name, ca, crl) takes Uint8Arrays (crl may be null)
// and returns {verdict, html, json} or, where nothing could be checked,
// {error}.
func main() {
	js.Global().Set("kurierLimits", js.ValueOf(map[string]any{
		"bundle": maxBundle, "ca": maxCA, "crl": maxCRL,
	}))
	js.Global().Set("kurierVerify", js.FuncOf(func(_ js.Value, args []js.Value) (out any) {
		// A panic would end the program and leave the page without a
		// verifier; the person gets the message instead and can go on.
		defer func() {
			if p := recover(); p != nil {
				out = js.ValueOf(map[string]any{"error": fmt.Sprintf("the verifier failed on this file: %v", p)})
			}
		}()
		if len(args) != 4 {
			return js.ValueOf(map[string]any{"error": "kurierVerify(bundle, name, ca, crl) takes four arguments"})
		}
		in := input{Name: args[1].String(), Bundle: bytesOf(args[0]), CA: bytesOf(args[2]), CRL: bytesOf(args[3])}
		res, err := verify(in)
		if err != nil {
			return js.ValueOf(map[string]any{"error": err.Error()})
		}
		return js.ValueOf(map[string]any{"verdict": res.Verdict, "html": res.HTML, "json": res.JSON})
	}))
	select {}
}

// bytesOf copies a Uint8Array into Go, nil for null or anything else. Of
// an array longer than any input may be it copies one byte more than the
// largest bound, enough for verify to refuse it by its length.
func bytesOf(v js.Value) []byte {
	if v.IsNull() || v.IsUndefined() || !v.InstanceOf(js.Global().Get("Uint8Array")) {
		return nil
	}
	n := v.Length()
	if n > maxBundle+1 {
		n = maxBundle + 1 // enough for verify to see it is too long
	}
	b := make([]byte, n)
	js.CopyBytesToGo(b, v)
	return b
}
