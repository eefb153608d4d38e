package pki

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// copyIdentity copies the identity files of src into a fresh directory.
func copyIdentity(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	for _, f := range []string{certFile, keyFile, caCertFile, encCertFile, encKeyFile} {
		if _, err := os.Stat(filepath.Join(src, f)); err == nil {
			copyFile(t, filepath.Join(src, f), filepath.Join(dst, f))
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
		"missing cert":  {node, func(d string) { os.Remove(filepath.Join(d, certFile)) }, certFile},
		"missing key":   {node, func(d string) { os.Remove(filepath.Join(d, keyFile)) }, keyFile},
		"missing roots": {node, func(d string) { os.Remove(filepath.Join(d, caCertFile)) }, caCertFile},
		"mismatched key": {node, func(d string) {
			copyFile(t, filepath.Join(alice, keyFile), filepath.Join(d, keyFile))
		}, "does not match"},
		"enc cert without key": {alice, func(d string) { os.Remove(filepath.Join(d, encKeyFile)) }, encKeyFile},
		"enc key without cert": {alice, func(d string) { os.Remove(filepath.Join(d, encCertFile)) }, encCertFile},
		"mismatched enc key": {alice, func(d string) {
			copyFile(t, filepath.Join(alice, keyFile), filepath.Join(d, encKeyFile))
		}, encKeyFile},
		"key in cert file": {node, func(d string) {
			copyFile(t, filepath.Join(d, keyFile), filepath.Join(d, certFile))
		}, "unexpected PEM block"},
		"empty cert file": {node, func(d string) {
			os.WriteFile(filepath.Join(d, certFile), nil, 0o644)
		}, certFile},
		"garbage key": {node, func(d string) {
			os.WriteFile(filepath.Join(d, keyFile), []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), 0o600)
		}, keyFile},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			dir := copyIdentity(t, tt.src)
			tt.change(dir)
			_, err := LoadIdentity(dir)
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
