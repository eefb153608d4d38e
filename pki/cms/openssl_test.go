package cms_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"kurier.dev/kurier/pki/cms"
)

// openssl runs the openssl command line tool, skipping the test when it is
// not installed.
func openssl(t *testing.T, args ...string) []byte {
	t.Helper()
	path, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl not on PATH")
	}
	var stderr bytes.Buffer
	cmd := exec.Command(path, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("openssl %v: %v\n%s", args, err, stderr.Bytes())
	}
	return out
}

func writeTemp(t *testing.T, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestOpenSSL(t *testing.T) {
	caPEM := filepath.Join(fx.caDir, "ca.pem")
	alice := filepath.Join(fx.dir, "alice")

	t.Run("openssl verifies Sign", func(t *testing.T) {
		der, err := cms.Sign(document, signerOf(fx.alice))
		if err != nil {
			t.Fatal(err)
		}
		out := openssl(t, "cms", "-verify", "-inform", "DER", "-in", writeTemp(t, "signed.p7m", der), "-CAfile", caPEM)
		if !bytes.Equal(out, document) {
			t.Errorf("openssl printed %q", out)
		}
	})
	t.Run("openssl verifies SignDetached", func(t *testing.T) {
		der, err := cms.SignDetached(document, signerOf(fx.alice))
		if err != nil {
			t.Fatal(err)
		}
		openssl(t, "cms", "-verify", "-inform", "DER", "-in", writeTemp(t, "sig.p7s", der),
			"-content", writeTemp(t, "doc", document), "-binary", "-CAfile", caPEM, "-out", filepath.Join(t.TempDir(), "out"))
	})
	t.Run("openssl decrypts Encrypt", func(t *testing.T) {
		der := encryptTo(t, fx.bob, fx.alice)
		out := openssl(t, "cms", "-decrypt", "-inform", "DER", "-in", writeTemp(t, "sealed.p7m", der),
			"-recip", filepath.Join(alice, "enc-cert.pem"), "-inkey", filepath.Join(alice, "enc-key.pem"), "-binary")
		if !bytes.Equal(out, document) {
			t.Errorf("openssl decrypted %q", out)
		}
	})
	t.Run("Verify reads openssl cms -sign", func(t *testing.T) {
		der := openssl(t, "cms", "-sign", "-binary", "-nodetach", "-outform", "DER", "-md", "sha256",
			"-in", writeTemp(t, "doc", document), "-signer", filepath.Join(alice, "cert.pem"), "-inkey", filepath.Join(alice, "key.pem"))
		v, err := cms.Verify(der, participantPolicy())
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(v.Content, document) || !v.Signer.Equal(fx.alice.Cert) {
			t.Error("wrong content or signer")
		}
	})
	t.Run("Decrypt reads openssl cms -encrypt", func(t *testing.T) {
		der := openssl(t, "cms", "-encrypt", "-aes256", "-binary", "-outform", "DER",
			"-in", writeTemp(t, "doc", document), filepath.Join(alice, "enc-cert.pem"))
		got, err := cms.Decrypt(der, fx.alice.EncCert, fx.alice.EncKey, 0)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, document) {
			t.Errorf("decrypted %q", got)
		}
	})
}
