package pki_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"kurier.dev/kurier/pki"
	"kurier.dev/kurier/pki/pkitest"
	"kurier.dev/kurier/tlog"
)

// checkLogKey does with the key at path what a node does at start
// (node.New): sign a checkpoint for tlog.Origin(domain) and derive the
// verifier key, which must be the one in log.vkey beside it.
func checkLogKey(t *testing.T, path, domain string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	skey := strings.TrimSpace(string(data))
	signed, err := tlog.Sign(tlog.Checkpoint{Origin: tlog.Origin(domain), Root: tlog.EmptyRoot()}, skey)
	if err != nil {
		t.Fatalf("a node for %s would refuse %s: %v", domain, path, err)
	}
	vkey, err := tlog.VerifierKey(skey)
	if err != nil {
		t.Fatal(err)
	}
	published, err := os.ReadFile(filepath.Join(filepath.Dir(path), "log.vkey"))
	if err != nil {
		t.Fatal(err)
	}
	if string(published) != vkey+"\n" {
		t.Errorf("log.vkey holds %q, the key's verifier is %q", published, vkey)
	}
	if _, err := tlog.Open(signed, strings.TrimSpace(string(published))); err != nil {
		t.Errorf("published verifier key does not open the node's checkpoint: %v", err)
	}
}

func TestWriteLogKey(t *testing.T) {
	nodeDir := t.TempDir()
	if _, err := fx.ca.IssueNode(nodeDir, []string{"stadt.example", "kreis.example"}); err != nil {
		t.Fatal(err)
	}

	t.Run("domain from the node certificate", func(t *testing.T) {
		dir := t.TempDir()
		for _, f := range []string{pki.CertFile} {
			pkitest.CopyFile(t, filepath.Join(nodeDir, f), filepath.Join(dir, f))
		}
		k, err := pki.WriteLogKey(dir, "")
		if err != nil {
			t.Fatal(err)
		}
		if k.Origin != tlog.Origin("stadt.example") || k.Path != filepath.Join(dir, "log.key") || k.VerifierPath != filepath.Join(dir, "log.vkey") {
			t.Errorf("WriteLogKey = %+v", k)
		}
		if !strings.HasPrefix(k.VerifierKey, "stadt.example/kurier-log+") {
			t.Errorf("verifier key %q", k.VerifierKey)
		}
		pkitest.AssertMode(t, k.Path, 0o600)
		pkitest.AssertMode(t, k.VerifierPath, 0o644)
		checkLogKey(t, k.Path, "stadt.example")

		t.Run("refuses to overwrite", func(t *testing.T) {
			before, err := os.ReadFile(k.Path)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := pki.WriteLogKey(dir, ""); !errors.Is(err, pki.ErrExists) || !strings.Contains(err.Error(), k.Path) {
				t.Fatalf("second WriteLogKey: %v, want ErrExists naming %s", err, k.Path)
			}
			if after, _ := os.ReadFile(k.Path); string(after) != string(before) {
				t.Error("the log key was replaced")
			}
			checkLogKey(t, k.Path, "stadt.example")
		})
	})
	t.Run("second domain of the certificate", func(t *testing.T) {
		dir := t.TempDir()
		pkitest.CopyFile(t, filepath.Join(nodeDir, pki.CertFile), filepath.Join(dir, pki.CertFile))
		k, err := pki.WriteLogKey(dir, "kreis.example")
		if err != nil {
			t.Fatal(err)
		}
		checkLogKey(t, k.Path, "kreis.example")
	})
	t.Run("without a certificate", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "new")
		k, err := pki.WriteLogKey(dir, "stadt.example")
		if err != nil {
			t.Fatal(err)
		}
		pkitest.AssertMode(t, dir, 0o700)
		checkLogKey(t, k.Path, "stadt.example")
	})
	for name, c := range map[string]struct {
		cert   bool
		domain string
	}{
		"domain not in the certificate": {true, "other.example"},
		"no certificate, no domain":     {false, ""},
		"invalid domain":                {false, "Stadt.example"},
		"one label":                     {false, "localhost"},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			if c.cert {
				pkitest.CopyFile(t, filepath.Join(nodeDir, pki.CertFile), filepath.Join(dir, pki.CertFile))
			}
			if _, err := pki.WriteLogKey(dir, c.domain); err == nil {
				t.Fatalf("WriteLogKey(%q) succeeded", c.domain)
			}
			if pki.FileExists(filepath.Join(dir, "log.key")) {
				t.Error("a refused WriteLogKey left a key")
			}
		})
	}
	t.Run("participant certificate", func(t *testing.T) {
		dir := t.TempDir()
		pkitest.CopyFile(t, filepath.Join(fx.dir, "alice", pki.CertFile), filepath.Join(dir, pki.CertFile))
		if _, err := pki.WriteLogKey(dir, ""); err == nil {
			t.Fatal("WriteLogKey beside a participant certificate succeeded")
		}
	})
}
