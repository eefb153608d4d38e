package main

import (
	"context"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kurier.dev/kurier/broker/daemon"
	"kurier.dev/kurier/pki"
	"kurier.dev/kurier/tlog"
)

func TestRun_PKIInitWritesCRL(t *testing.T) {
	caDir := filepath.Join(t.TempDir(), "ca")
	var ca struct {
		Certificate   string
		CRL           string
		CRLNextUpdate string `json:"crl_next_update"`
	}
	kurierJSON(t, &ca, "pki", "init", "--ca", caDir, "--validity", "72h")
	if ca.CRL != filepath.Join(caDir, "crl.pem") {
		t.Fatalf("init: crl %q", ca.CRL)
	}
	list, err := readCRL(ca.CRL)
	if err != nil {
		t.Fatalf("no CRL right after init: %v", err)
	}
	roots, err := pki.LoadCertificates(ca.Certificate)
	if err != nil {
		t.Fatal(err)
	}
	if err := list.CheckSignatureFrom(roots[0]); err != nil {
		t.Errorf("the first CRL does not verify under the CA: %v", err)
	}
	if list.Number == nil || list.Number.Int64() != 1 || len(list.RevokedCertificateEntries) != 0 {
		t.Errorf("first CRL: number %v, %d entries", list.Number, len(list.RevokedCertificateEntries))
	}
	if next, err := time.Parse(time.RFC3339, ca.CRLNextUpdate); err != nil || !next.Equal(list.NextUpdate.Truncate(time.Second)) ||
		next.Sub(time.Now()) < 71*time.Hour {
		t.Errorf("crl_next_update %q (%v), CRL says %v", ca.CRLNextUpdate, err, list.NextUpdate)
	}

	// A node's trust store takes it, and with it the CA's node certificates.
	trust, err := pki.NewTrustStore(roots, ca.CRL)
	if err != nil {
		t.Fatalf("a node would refuse the first CRL: %v", err)
	}
	nodeDir := filepath.Join(t.TempDir(), "node")
	kurier(t, "pki", "issue", "--ca", caDir, "--node", "gericht.example", "-o", nodeDir)
	id, err := pki.LoadIdentity(nodeDir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := trust.Verify(id.Cert, nil, time.Now(), x509.ExtKeyUsageServerAuth); err != nil {
		t.Errorf("node certificate under the first CRL: %v", err)
	}

	// The next CRL, as before, counts on from the first.
	kurier(t, "pki", "crl", "--ca", caDir)
	if next, err := readCRL(ca.CRL); err != nil || next.Number.Int64() != 2 {
		t.Errorf("the CRL after init: %v", err)
	}
	if _, err := try(t, "pki", "init", "--ca", filepath.Join(t.TempDir(), "x"), "--validity", "0s"); err == nil {
		t.Error("init with --validity 0 succeeded")
	}
}

// TestRun_PKISetupFromZero follows README's production steps: a CA, a
// node identity with its log key, a participant that makes its own keys
// and has the CA sign its CSRs, and a node started from that config, which
// the participant then uses over mutual TLS.
func TestRun_PKISetupFromZero(t *testing.T) {
	const (
		domain = "gericht.example"
		addr   = "eingang@gericht.example"
	)
	dir := t.TempDir()
	caDir, nodeDir, partDir := filepath.Join(dir, "ca"), filepath.Join(dir, "node"), filepath.Join(dir, "eingang")
	kurier(t, "pki", "init", "--ca", caDir)
	kurier(t, "pki", "issue", "--ca", caDir, "--node", domain, "-o", nodeDir)

	var lk struct {
		Key, Origin  string
		VerifierKey  string `json:"verifier_key"`
		VerifierFile string `json:"verifier_file"`
	}
	kurierJSON(t, &lk, "pki", "log-key", "-o", nodeDir)
	if lk.Key != filepath.Join(nodeDir, "log.key") || lk.Origin != tlog.Origin(domain) || lk.VerifierFile != filepath.Join(nodeDir, "log.vkey") {
		t.Errorf("log-key: %+v", lk)
	}
	if fi, err := os.Stat(lk.Key); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("log.key: %v, %v", fi, err)
	}
	before, _ := os.ReadFile(lk.Key)
	if _, err := try(t, "pki", "log-key", "-o", nodeDir); !errors.Is(err, pki.ErrExists) {
		t.Errorf("a second log-key: %v, want ErrExists", err)
	}
	if after, _ := os.ReadFile(lk.Key); string(after) != string(before) {
		t.Error("a second log-key replaced the key")
	}
	if _, err := try(t, "pki", "log-key", "-o", filepath.Join(dir, "x"), "--domain", "stadt.example", "extra"); err == nil {
		t.Error("log-key with an extra argument succeeded")
	}

	// On the participant's machine: keys and CSRs. At the CA: the
	// certificates, written beside the CSRs.
	var csr struct {
		CSR    string
		EncCSR string `json:"enc_csr"`
	}
	kurierJSON(t, &csr, "pki", "csr", "--participant", addr, "-o", partDir)
	for _, f := range []string{"key.pem", "enc-key.pem"} {
		if fi, err := os.Stat(filepath.Join(partDir, f)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, %v", f, fi, err)
		}
	}
	var iss struct {
		Kind, Address, Serial string
		EncryptionSerial      string `json:"encryption_serial"`
		Certificates          []string
	}
	kurierJSON(t, &iss, "pki", "issue", "--ca", caDir, "--csr", csr.CSR, csr.EncCSR)
	if iss.Kind != "participant" || iss.Address != addr || iss.Serial == "" || iss.EncryptionSerial == "" || len(iss.Certificates) != 3 {
		t.Errorf("issue --csr: %+v", iss)
	}
	if _, err := try(t, "pki", "issue", "--ca", caDir, "--csr", csr.CSR); !errors.Is(err, pki.ErrExists) {
		t.Errorf("issuing the same CSR into the same folder again: %v, want ErrExists", err)
	}
	if _, err := try(t, "pki", "issue", "--ca", caDir, "--csr", csr.CSR, "--participant", addr, "-o", filepath.Join(dir, "y")); err == nil {
		t.Error("issue with --csr and --participant succeeded")
	}

	for name, args := range map[string][]string{
		"csr without address":       {"pki", "csr", "-o", filepath.Join(dir, "z")},
		"csr without folder":        {"pki", "csr", "--participant", addr},
		"log-key without folder":    {"pki", "log-key", "--domain", domain},
		"issue of a missing CSR":    {"pki", "issue", "--ca", caDir, "--csr", filepath.Join(dir, "none.pem")},
		"CSRs in different folders": {"pki", "issue", "--ca", caDir, "--csr", csr.CSR, filepath.Join(nodeDir, "cert.pem")},
		"a certificate as CSR":      {"pki", "issue", "--ca", caDir, "--csr", filepath.Join(nodeDir, "cert.pem"), "-o", filepath.Join(dir, "z")},
	} {
		if _, err := try(t, args...); err == nil {
			t.Errorf("%s: kurier %q succeeded", name, args)
		}
	}

	cfgPath := filepath.Join(dir, "kurierd.yaml")
	yaml := "listen: 127.0.0.1:0\n" +
		"data: " + filepath.Join(dir, "store") + "\n" +
		"identity: " + nodeDir + "\n" +
		"crl: " + filepath.Join(caDir, "crl.pem") + "\n" +
		"log_key: " + lk.Key + "\n" +
		"domains: [" + domain + "]\n" +
		"participants:\n  - {address: " + addr + ", display_name: Eingang, kind: court, encryption_cert: " + filepath.Join(partDir, "enc-cert.pem") + "}\n"
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := daemon.LoadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- daemon.Run(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), func(a net.Addr) { ready <- a })
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("node: %v", err)
		}
	}()
	var node string
	select {
	case a := <-ready:
		node = a.String()
	case err := <-done:
		done <- nil // for the deferred stop
		t.Fatalf("the node set up from zero does not start: %v", err)
	}
	var inbox []map[string]any
	kurierJSON(t, &inbox, "inbox", "--id", partDir, "--node", node, "--crl", filepath.Join(caDir, "crl.pem"))
	if len(inbox) != 0 {
		t.Errorf("inbox of a new node: %v", inbox)
	}
	var dir2 struct{ Address string }
	kurierJSON(t, &dir2, "directory", addr, "--id", partDir, "--node", node, "--crl", filepath.Join(caDir, "crl.pem"))
	if dir2.Address != addr {
		t.Errorf("directory %s: %+v", addr, dir2)
	}
	if !strings.HasPrefix(lk.VerifierKey, tlog.Origin(domain)+"+") {
		t.Errorf("verifier key %q", lk.VerifierKey)
	}
}
