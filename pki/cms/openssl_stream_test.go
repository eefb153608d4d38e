package cms_test

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"

	"kurier.dev/kurier/pki/cms"
)

// TestOpenSSLStream checks the streaming API against OpenSSL both ways,
// with content of several pieces: OpenSSL opens what SignWriter inside
// EncryptWriter seal, and DecryptReader and VerifyReader open what
// openssl cms -sign -stream and -encrypt -stream write (indefinite-length
// BER with -outform DER).
func TestOpenSSLStream(t *testing.T) {
	caPEM := filepath.Join(fx.caDir, "ca.pem")
	alice, bob := filepath.Join(fx.dir, "alice"), filepath.Join(fx.dir, "bob")
	content, err := io.ReadAll(generator(200 << 10))
	if err != nil {
		t.Fatal(err)
	}
	doc := writeTemp(t, "doc", content)

	t.Run("openssl opens SignWriter in EncryptWriter", func(t *testing.T) {
		var sealed bytes.Buffer
		seal(t, &sealed, bytes.NewReader(content), fx.bob)
		inner := filepath.Join(t.TempDir(), "inner.p7m")
		openssl(t, "cms", "-decrypt", "-inform", "DER", "-in", writeTemp(t, "sealed.p7m", sealed.Bytes()),
			"-recip", filepath.Join(bob, "enc-cert.pem"), "-inkey", filepath.Join(bob, "enc-key.pem"), "-binary", "-out", inner)
		out := filepath.Join(t.TempDir(), "out")
		openssl(t, "cms", "-verify", "-inform", "DER", "-in", inner, "-CAfile", caPEM, "-binary", "-out", out)
		got, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, content) {
			t.Errorf("openssl opened %d bytes, want the %d sealed", len(got), len(content))
		}
	})

	for name, extra := range map[string][]string{
		"":                  nil,
		", key identifier":  {"-keyid"},
		", no signed attrs": {"-noattr"},
	} {
		t.Run("VerifyReader and Verify read openssl cms -sign -stream"+name, func(t *testing.T) {
			args := append([]string{"cms", "-sign", "-stream", "-binary", "-nodetach", "-outform", "DER", "-md", "sha256",
				"-in", doc, "-signer", filepath.Join(alice, "cert.pem"), "-inkey", filepath.Join(alice, "key.pem")}, extra...)
			signed := openssl(t, args...)
			if !bytes.HasPrefix(signed, []byte{0x30, 0x80}) {
				t.Fatalf("openssl did not write indefinite-length BER: % x", signed[:4])
			}
			got, v, err := verifyStream(bytes.NewReader(signed), participantPolicy())
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, content) || !v.Signer.Equal(fx.alice.Cert) {
				t.Error("wrong content or signer")
			}
			p := participantPolicy()
			p.MaxSize = len(signed)
			if w, err := cms.Verify(signed, p); err != nil || !bytes.Equal(w.Content, content) {
				t.Errorf("Verify = %v", err)
			}
		})
	}

	t.Run("DecryptReader reads openssl cms -encrypt -stream", func(t *testing.T) {
		signed := openssl(t, "cms", "-sign", "-stream", "-binary", "-nodetach", "-outform", "DER", "-md", "sha256",
			"-in", doc, "-signer", filepath.Join(alice, "cert.pem"), "-inkey", filepath.Join(alice, "key.pem"))
		sealed := openssl(t, "cms", "-encrypt", "-stream", "-aes256", "-binary", "-outform", "DER",
			"-in", writeTemp(t, "signed.p7m", signed), "-recip", filepath.Join(bob, "enc-cert.pem"),
			"-keyopt", "rsa_padding_mode:oaep", "-keyopt", "rsa_oaep_md:sha256")
		if !bytes.HasPrefix(sealed, []byte{0x30, 0x80}) {
			t.Fatalf("openssl did not write indefinite-length BER: % x", sealed[:4])
		}
		if parsed := openssl(t, "cms", "-cmsout", "-print", "-inform", "DER", "-in", writeTemp(t, "sealed.p7m", sealed)); !bytes.Contains(parsed, []byte("rsaesOaep")) {
			t.Fatalf("openssl did not use RSAES-OAEP:\n%s", parsed)
		}
		var got bytes.Buffer
		v, err := open(bytes.NewReader(sealed), fx.bob, &got, int64(len(content)))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Bytes(), content) || !v.Signer.Equal(fx.alice.Cert) {
			t.Error("wrong content or signer")
		}
	})
}

// verifyStream reads r with a VerifyReader and returns the content and
// the verdict.
func verifyStream(r io.Reader, p cms.Policy) ([]byte, *cms.Verified, error) {
	vr, err := cms.NewVerifyReader(r, p)
	if err != nil {
		return nil, nil, err
	}
	content, err := io.ReadAll(vr)
	if err != nil {
		return nil, nil, err
	}
	v, err := vr.Verify()
	return content, v, err
}
