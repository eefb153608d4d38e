package pki_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"kurier.dev/kurier/pki"
	"kurier.dev/kurier/pki/pkitest"
)

// copyIdentity copies the identity files of src into a fresh directory.
func copyIdentity(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	for _, f := range []string{pki.CertFile, pki.KeyFile, pki.CACertFile, pki.EncCertFile, pki.EncKeyFile} {
		if _, err := os.Stat(filepath.Join(src, f)); err == nil {
			pkitest.CopyFile(t, filepath.Join(src, f), filepath.Join(dst, f))
		}
	}
	return dst
}

func TestLoadIdentity_errors(t *testing.T) {
	alice := filepath.Join(fx.dir, "alice")
	node := filepath.Join(fx.dir, "node")
	tests := map[string]struct {
		src     string
		change  func(dir string)
		wantMsg string
	}{
		"missing cert":  {node, func(d string) { os.Remove(filepath.Join(d, pki.CertFile)) }, pki.CertFile},
		"missing key":   {node, func(d string) { os.Remove(filepath.Join(d, pki.KeyFile)) }, pki.KeyFile},
		"missing roots": {node, func(d string) { os.Remove(filepath.Join(d, pki.CACertFile)) }, pki.CACertFile},
		"mismatched key": {node, func(d string) {
			pkitest.CopyFile(t, filepath.Join(alice, pki.KeyFile), filepath.Join(d, pki.KeyFile))
		}, "does not match"},
		"enc cert without key": {alice, func(d string) { os.Remove(filepath.Join(d, pki.EncKeyFile)) }, pki.EncKeyFile},
		"enc key without cert": {alice, func(d string) { os.Remove(filepath.Join(d, pki.EncCertFile)) }, pki.EncCertFile},
		"mismatched enc key": {alice, func(d string) {
			pkitest.CopyFile(t, filepath.Join(alice, pki.KeyFile), filepath.Join(d, pki.EncKeyFile))
		}, pki.EncKeyFile},
		"key in cert file": {node, func(d string) {
			pkitest.CopyFile(t, filepath.Join(d, pki.KeyFile), filepath.Join(d, pki.CertFile))
		}, "unexpected PEM block"},
		"empty cert file": {node, func(d string) {
			os.WriteFile(filepath.Join(d, pki.CertFile), nil, 0o644)
		}, pki.CertFile},
		"garbage key": {node, func(d string) {
			os.WriteFile(filepath.Join(d, pki.KeyFile), []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), 0o600)
		}, pki.KeyFile},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			dir := copyIdentity(t, tt.src)
			tt.change(dir)
			_, err := pki.LoadIdentity(dir)
			if err == nil {
				t.Fatal("LoadIdentity succeeded")
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("error %q does not mention %q", err, tt.wantMsg)
			}
		})
	}
}

func TestIdentity_TLSCertificate(t *testing.T) {
	c := fx.node.TLSCertificate()
	if len(c.Certificate) != 1 || c.Leaf != fx.node.Cert || c.PrivateKey != fx.node.Key {
		t.Errorf("TLSCertificate = %d certs, leaf %v", len(c.Certificate), c.Leaf != nil)
	}
	if _, err := fx.node.Cert.Verify(x509.VerifyOptions{Roots: fx.node.RootPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Errorf("node cert does not verify against RootPool: %v", err)
	}
}

// TestWriteKey_NeverReplaces: a key already at the path stays as it
// was, whoever wrote it meanwhile; the write fails with ErrExists.
func TestWriteKey_NeverReplaces(t *testing.T) {
	path := filepath.Join(t.TempDir(), "key.pem")
	first, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteKey(path, first); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	second, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteKey(path, second); !errors.Is(err, pki.ErrExists) {
		t.Fatalf("a second key at the same path: %v, want ErrExists", err)
	}
	if after, err := os.ReadFile(path); err != nil || !bytes.Equal(after, before) {
		t.Fatalf("the first key changed (%v)", err)
	}
}
