package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"kurier.dev/kurier/pki"
	"kurier.dev/kurier/pki/ca"
)

// caPEM returns a real CA certificate as ca.pem holds it.
func caPEM(t *testing.T) []byte {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "ca")
	if _, err := ca.Init(dir, "Kurier Test CA"); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, pki.CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestVerify_RefusesWhatItCannotCheck(t *testing.T) {
	good := caPEM(t)
	for name, tc := range map[string]struct {
		in   input
		want string
	}{
		"empty file":     {input{Name: "proof.zip", CA: good}, "proof.zip is empty"},
		"no CA":          {input{Name: "proof.zip", Bundle: []byte("PK")}, "no CA certificate"},
		"CA not PEM":     {input{Name: "proof.zip", Bundle: []byte("PK"), CA: []byte("hello")}, "no PEM certificate found"},
		"key as CA":      {input{Name: "proof.zip", Bundle: []byte("PK"), CA: []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")}, `unexpected PEM block "PRIVATE KEY"`},
		"bundle too big": {input{Name: "disk.img", Bundle: make([]byte, maxBundle+1), CA: good}, "more than a bundle may"},
		"CA too big":     {input{Name: "proof.zip", Bundle: []byte("PK"), CA: bytes.Repeat(good, maxCA/len(good)+1)}, "the CA file has"},
		"CRL too big":    {input{Name: "proof.zip", Bundle: []byte("PK"), CA: good, CRL: make([]byte, maxCRL+1)}, "the CRL has"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := verify(tc.in)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("verify: %v, want an error saying %q", err, tc.want)
			}
		})
	}
}

// A file that is no evidence is a failed report, as kurier verify makes
// it, not an error: the person sees which check it failed.
func TestVerify_ReportsAFailedFile(t *testing.T) {
	res, err := verify(input{Name: "brief.pdf", Bundle: []byte("%PDF-1.7"), CA: caPEM(t)})
	if err != nil {
		t.Fatal(err)
	}
	if res.Verdict != "failed" {
		t.Errorf("verdict %q, want failed", res.Verdict)
	}
	if !strings.Contains(res.HTML, "Prüfprotokoll") || !strings.Contains(res.HTML, "brief.pdf") {
		t.Errorf("the HTML is not the report of brief.pdf:\n%s", res.HTML)
	}
	var out struct {
		Verdict string `json:"verdict"`
		File    string `json:"file"`
		Checks  []struct {
			Name   string `json:"check"`
			Status string `json:"status"`
		} `json:"checks"`
	}
	if err := json.Unmarshal([]byte(res.JSON), &out); err != nil {
		t.Fatal(err)
	}
	failed := false
	for _, c := range out.Checks {
		failed = failed || c.Name == "evidence signature" && c.Status == "fail"
	}
	if out.Verdict != "failed" || out.File != "brief.pdf" || !failed {
		t.Errorf("JSON %s: want verdict failed, file brief.pdf and a failed evidence signature", res.JSON)
	}
}
