package cms_test

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"testing"
	"time"

	"github.com/digitorus/pkcs7"

	"kurier.dev/kurier/pki"
	"kurier.dev/kurier/pki/cms"
)

func encryptTo(t testing.TB, ids ...*pki.Identity) []byte {
	t.Helper()
	return sealTo(t, cms.Encrypt, ids...)
}

// legacyEncryptTo seals document to ids as Kurier sealed before RSAES-OAEP:
// pkcs7.Encrypt (AES-256-CBC, set in TestMain; PKCS #1 v1.5 key transport).
func legacyEncryptTo(t testing.TB, ids ...*pki.Identity) []byte {
	t.Helper()
	return sealTo(t, pkcs7.Encrypt, ids...)
}

func sealTo(t testing.TB, seal func([]byte, []*x509.Certificate) ([]byte, error), ids ...*pki.Identity) []byte {
	t.Helper()
	var certs []*x509.Certificate
	for _, id := range ids {
		certs = append(certs, id.EncCert)
	}
	der, err := seal(document, certs)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// opensFor checks that each of ids decrypts der to document.
func opensFor(t *testing.T, der []byte, ids ...*pki.Identity) {
	t.Helper()
	for _, id := range ids {
		got, err := cms.Decrypt(der, id.EncCert, id.EncKey, 0)
		if err != nil {
			t.Fatalf("%s: %v", id.EncCert.Subject, err)
		}
		if !bytes.Equal(got, document) {
			t.Errorf("%s decrypted %q", id.EncCert.Subject, got)
		}
	}
}

func TestEncrypt_twoRecipients(t *testing.T) {
	der := encryptTo(t, fx.alice, fx.bob)
	if bytes.Contains(der, document) {
		t.Fatal("plaintext visible in the envelope")
	}
	opensFor(t, der, fx.alice, fx.bob)
	if !bytes.Contains(der, mustDER(pkcs7.OIDEncryptionAlgorithmAES256CBC)) {
		t.Error("envelope is not AES-256-CBC")
	}
}

// TestSeal is the sender's and recipient's path from the design: sign,
// encrypt to the recipient, decrypt, verify.
func TestSeal(t *testing.T) {
	signed, err := cms.Sign(document, signerOf(fx.alice))
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := cms.Encrypt(signed, []*x509.Certificate{fx.bob.EncCert})
	if err != nil {
		t.Fatal(err)
	}
	opened, err := cms.Decrypt(sealed, fx.bob.EncCert, fx.bob.EncKey, 0)
	if err != nil {
		t.Fatal(err)
	}
	v, err := cms.Verify(opened, participantPolicy())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(v.Content, document) || v.Signer.EmailAddresses[0] != "alice@stadt.example" {
		t.Error("wrong content or signer")
	}
}

func TestEncrypt_refused(t *testing.T) {
	rsa2048 := rsaCert(t, 2048)
	for name, certs := range map[string][]*x509.Certificate{
		"none":         nil,
		"nil":          {nil},
		"ECDSA":        {fx.alice.Cert},
		"RSA-2048":     {rsa2048},
		"one bad":      {fx.bob.EncCert, fx.alice.Cert},
		"node (ECDSA)": {fx.node.Cert},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := cms.Encrypt(document, certs); err == nil {
				t.Fatal("Encrypt succeeded")
			}
		})
	}
}

// rsaCert issues an RSA certificate of the given size with the test CA's key.
func rsaCert(t *testing.T, bits int) *x509.Certificate {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:   big.NewInt(time.Now().UnixNano()),
		Subject:        pkix.Name{CommonName: "small@stadt.example"},
		EmailAddresses: []string{"small@stadt.example"},
		NotBefore:      time.Now().Add(-time.Hour),
		NotAfter:       time.Now().Add(time.Hour),
		KeyUsage:       x509.KeyUsageKeyEncipherment,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, fx.ca.Certificate(), key.Public(), loadCAKey(t))
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// opaqueDecrypter hides the *rsa.PrivateKey behind the interface, as an
// HSM would.
type opaqueDecrypter struct{ k *rsa.PrivateKey }

func (o opaqueDecrypter) Public() crypto.PublicKey { return o.k.Public() }
func (o opaqueDecrypter) Decrypt(r io.Reader, msg []byte, opts crypto.DecrypterOpts) ([]byte, error) {
	return o.k.Decrypt(r, msg, opts)
}

func TestDecrypt_refused(t *testing.T) {
	der := encryptTo(t, fx.alice, fx.bob)
	aliceKey := fx.alice.EncKey.(*rsa.PrivateKey)
	signed, err := cms.Sign(document, signerOf(fx.alice))
	if err != nil {
		t.Fatal(err)
	}
	tests := map[string]struct {
		der  []byte
		cert *x509.Certificate
		key  crypto.Decrypter
		max  int
		want error
	}{
		"not a recipient": {der, fx.revoked.EncCert, fx.revoked.EncKey, 0, cms.ErrDecrypt},
		"key mismatch":    {der, fx.alice.EncCert, fx.bob.EncKey, 0, cms.ErrDecrypt},
		"opaque key":      {der, fx.alice.EncCert, opaqueDecrypter{aliceKey}, 0, cms.ErrDecrypt},
		"nil key":         {der, fx.alice.EncCert, nil, 0, cms.ErrDecrypt},
		"nil cert":        {der, nil, fx.alice.EncKey, 0, cms.ErrDecrypt},
		"too large":       {der, fx.alice.EncCert, fx.alice.EncKey, len(der) - 1, cms.ErrTooLarge},
		"signed data":     {signed, fx.alice.EncCert, fx.alice.EncKey, 0, cms.ErrDecrypt},
		"garbage":         {[]byte("not cms at all"), fx.alice.EncCert, fx.alice.EncKey, 0, cms.ErrDecrypt},
		"empty":           {nil, fx.alice.EncCert, fx.alice.EncKey, 0, cms.ErrDecrypt},
		"truncated":       {der[:len(der)-10], fx.alice.EncCert, fx.alice.EncKey, 0, cms.ErrDecrypt},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := cms.Decrypt(tt.der, tt.cert, tt.key, tt.max)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Decrypt = %q, %v; want %v", got, err, tt.want)
			}
			t.Log(err)
		})
	}
}
