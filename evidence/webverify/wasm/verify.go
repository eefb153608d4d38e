// Command wasm is Kurier's offline verifier for the browser: built with
// GOOS=js GOARCH=wasm (go generate ./evidence/webverify), it gives the
// page of package webverify one JavaScript function, kurierVerify, that
// runs the same checks as kurier verify on files the person chose and
// returns the Prüfprotokoll. It reads nothing but its arguments and sends
// nothing anywhere.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"

	"kurier.dev/kurier/evidence/audit"
	"kurier.dev/kurier/evidence/bundle"
	"kurier.dev/kurier/pki"
)

// The largest inputs taken, checked by the page before it reads a file,
// so that a wrong file (a disk image) fails at once rather than filling
// the tab's memory. A bundle as bundle.Write caps it, with the signed
// original of a court's archive (kurier export --with-content) included;
// a CRL as kurier verify --crl takes it.
const (
	maxBundle = bundle.MaxSizeWithContent
	maxCA     = 1 << 20
	maxCRL    = 8 << 20
)

// input is what the page passes: the file to verify and its name, the
// federation's CA certificates (PEM) and optionally a CRL (PEM or DER).
type input struct {
	Name   string
	Bundle []byte
	CA     []byte
	CRL    []byte // nil: the bundle's own
}

// result is what the page shows: the verdict, the Prüfprotokoll as a
// whole HTML document, and the report as kurier verify --json prints it.
type result struct {
	Verdict string // passed, failed or indeterminate
	HTML    string
	JSON    string
}

// verdictOf names a report's outcome as kurier verify --json does.
var verdictOf = map[audit.Status]string{audit.Pass: "passed", audit.Fail: "failed", audit.Indeterminate: "indeterminate"}

// verify checks in.Bundle against in.CA as kurier verify --ca does. An
// error means it could not check at all (no CA, a CA file that holds no
// certificate, an input over its bound); a failed check is a result.
func verify(in input) (result, error) {
	switch {
	case len(in.Bundle) == 0:
		return result{}, fmt.Errorf("%s is empty: choose the evidence bundle (a .zip from kurier export) or a .p7m evidence file", in.Name)
	case len(in.Bundle) > maxBundle:
		return result{}, fmt.Errorf("%s has %d bytes, more than a bundle may (%d)", in.Name, len(in.Bundle), maxBundle)
	case len(in.CA) == 0:
		return result{}, fmt.Errorf("no CA certificate: choose the federation's ca.pem, obtained independently of the bundle")
	case len(in.CA) > maxCA:
		return result{}, fmt.Errorf("the CA file has %d bytes, more than %d: is it the right file?", len(in.CA), maxCA)
	case len(in.CRL) > maxCRL:
		return result{}, fmt.Errorf("the CRL has %d bytes, more than %d: is it the right file?", len(in.CRL), maxCRL)
	}
	roots, err := pki.ParseCertificatesPEM(in.CA)
	if err != nil {
		return result{}, fmt.Errorf("the CA file: %w", err)
	}
	o := audit.Options{Roots: roots, CRL: in.CRL}
	r := audit.Verify(in.Name, in.Bundle, o)
	var html bytes.Buffer
	if err := audit.WriteHTML(&html, []*audit.Report{r}); err != nil {
		return result{}, err
	}
	verdict := verdictOf[r.Worst()]
	js, err := json.Marshal(struct {
		Verdict string `json:"verdict"`
		*audit.Report
	}{verdict, r})
	if err != nil {
		return result{}, fmt.Errorf("encode the report: %w", err)
	}
	return result{Verdict: verdict, HTML: html.String(), JSON: string(js)}, nil
}
