package cms_test

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"kurier.dev/kurier/pki/cms"
)

// openssl runs the openssl command line tool, skipping the test when it is
// not installed, except in CI (CI=true), which installs it: there a missing
// openssl fails the test rather than hiding that nothing was checked.
func openssl(t *testing.T, args ...string) []byte {
	t.Helper()
	path, err := exec.LookPath("openssl")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("openssl not on PATH, and CI=true: install openssl")
		}
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
	t.Run("openssl decrypts Encrypt (RSAES-OAEP)", func(t *testing.T) {
		der := encryptTo(t, fx.bob, fx.alice)
		in := writeTemp(t, "sealed.p7m", der)
		for _, id := range []string{alice, filepath.Join(fx.dir, "bob")} {
			out := openssl(t, "cms", "-decrypt", "-inform", "DER", "-in", in,
				"-recip", filepath.Join(id, "enc-cert.pem"), "-inkey", filepath.Join(id, "enc-key.pem"), "-binary")
			if !bytes.Equal(out, document) {
				t.Errorf("openssl decrypted %q for %s", out, id)
			}
		}
		// OpenSSL's own reading of the key transport, for the record.
		if parsed := openssl(t, "cms", "-cmsout", "-print", "-inform", "DER", "-in", in); !bytes.Contains(parsed, []byte("rsaesOaep")) || !bytes.Contains(parsed, []byte("sha256")) {
			t.Errorf("openssl does not read RSAES-OAEP SHA-256 in:\n%s", parsed)
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
	for name, opts := range map[string][]string{
		"PKCS #1 v1.5 (the default)":      nil,
		"RSAES-OAEP SHA-256":              oaepOpts("sha256", "sha256"),
		"RSAES-OAEP SHA-256, key id":      append(oaepOpts("sha256", "sha256"), "-keyid"),
		"AES-128-CBC, RSAES-OAEP SHA-256": append(oaepOpts("sha256", "sha256"), "-aes-128-cbc"),
	} {
		t.Run("Decrypt reads openssl cms -encrypt "+name, func(t *testing.T) {
			got, err := cms.Decrypt(opensslEncrypt(t, opts...), fx.alice.EncCert, fx.alice.EncKey, 0)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, document) {
				t.Errorf("decrypted %q", got)
			}
		})
	}
}

// oaepOpts are openssl cms -encrypt's options for RSAES-OAEP with the given
// hash and MGF1 hash ("" leaves OpenSSL's default, SHA-1).
func oaepOpts(md, mgf1 string) []string {
	opts := []string{"-keyopt", "rsa_padding_mode:oaep"}
	if md != "" {
		opts = append(opts, "-keyopt", "rsa_oaep_md:"+md)
	}
	if mgf1 != "" {
		opts = append(opts, "-keyopt", "rsa_mgf1_md:"+mgf1)
	}
	return opts
}

// opensslEncrypt seals document to alice's encryption certificate with
// openssl cms -encrypt, AES-256-CBC unless opts name another cipher.
func opensslEncrypt(t *testing.T, opts ...string) []byte {
	t.Helper()
	args := []string{"cms", "-encrypt", "-aes-256-cbc", "-binary", "-outform", "DER", "-in", writeTemp(t, "doc", document),
		"-recip", filepath.Join(fx.dir, "alice", "enc-cert.pem")}
	return openssl(t, append(args, opts...)...)
}

// TestHostileOpenSSL refuses what OpenSSL writes when asked for OAEP with
// weaker or mixed hashes: valid envelopes that Kurier's policy refuses.
func TestHostileOpenSSL(t *testing.T) {
	for name, tt := range map[string]struct {
		opts []string
		want string
	}{
		"RSAES-OAEP defaults (SHA-1)":    {oaepOpts("", ""), "hash SHA-1 (the default)"},
		"RSAES-OAEP SHA-256, MGF1 SHA-1": {oaepOpts("sha256", "sha1"), "mask generation MGF1 with SHA-1 (the default)"},
		"RSAES-OAEP SHA-512":             {oaepOpts("sha512", "sha512"), "hash: SHA-512, want SHA-256"},
		"RSAES-OAEP with a label":        {append(oaepOpts("sha256", "sha256"), "-keyopt", "rsa_oaep_label:6b7572696572"), "pSourceFunc present"},
		"DES-EDE3-CBC":                   {[]string{"-des3"}, "content cipher 3DES-CBC refused"},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := cms.Decrypt(opensslEncrypt(t, tt.opts...), fx.alice.EncCert, fx.alice.EncKey, 0)
			if !errors.Is(err, cms.ErrDecrypt) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Decrypt = %d bytes, %v; want ErrDecrypt saying %q", len(got), err, tt.want)
			}
			t.Log(err)
		})
	}
}
