package cms_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/digitorus/pkcs7"

	"kurier.dev/kurier/pki"
	"kurier.dev/kurier/pki/cms"
)

var document = []byte(`{"version": 1, "type": "Delivery", "message_id": "0193"}`)

func TestSign_roundTrip(t *testing.T) {
	before := time.Now().Add(-time.Second)
	t.Run("attached", func(t *testing.T) {
		der, err := cms.Sign(document, signerOf(fx.alice))
		if err != nil {
			t.Fatal(err)
		}
		v, err := cms.Verify(der, participantPolicy())
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(v.Content, document) {
			t.Errorf("content %q", v.Content)
		}
		if !v.Signer.Equal(fx.alice.Cert) {
			t.Errorf("signer %s", v.Signer.Subject)
		}
		if len(v.Chain) != 2 || !v.Chain[1].Equal(fx.ca.Certificate()) {
			t.Errorf("chain of %d", len(v.Chain))
		}
		if v.SigningTime.Before(before.Truncate(time.Second)) || v.SigningTime.After(time.Now()) {
			t.Errorf("signing time %v", v.SigningTime)
		}
		if _, err := cms.VerifyDetached(der, document, participantPolicy()); !errors.Is(err, cms.ErrMalformed) {
			t.Errorf("VerifyDetached(attached) = %v, want ErrMalformed", err)
		}
	})
	t.Run("signer's clock", func(t *testing.T) {
		// Signer.Now dates the signing-time attribute, for Sign and
		// SignWriter alike, to the second.
		at := time.Now().Add(time.Minute).Truncate(time.Second).UTC() // within the certificate's validity
		s := signerOf(fx.alice)
		s.Now = func() time.Time { return at.Add(700 * time.Millisecond) }
		der, err := cms.Sign(document, s)
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		sw, err := cms.SignWriter(&buf, s)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := sw.Write(document); err != nil {
			t.Fatal(err)
		}
		if err := sw.Close(); err != nil {
			t.Fatal(err)
		}
		for name, der := range map[string][]byte{"Sign": der, "SignWriter": buf.Bytes()} {
			v, err := cms.Verify(der, participantPolicy())
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if !v.SigningTime.Equal(at) {
				t.Errorf("%s: signing time %v, want %v", name, v.SigningTime, at)
			}
		}
	})
	t.Run("detached", func(t *testing.T) {
		der, err := cms.SignDetached(document, signerOf(fx.alice))
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(der, document) {
			t.Error("detached signature contains the content")
		}
		v, err := cms.VerifyDetached(der, document, participantPolicy())
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(v.Content, document) || !v.Signer.Equal(fx.alice.Cert) {
			t.Error("wrong result")
		}
		if _, err := cms.Verify(der, participantPolicy()); !errors.Is(err, cms.ErrMalformed) {
			t.Errorf("Verify(detached) = %v, want ErrMalformed", err)
		}
		if _, err := cms.VerifyDetached(der, []byte("another document"), participantPolicy()); !errors.Is(err, cms.ErrSignature) {
			t.Errorf("VerifyDetached(other content) = %v, want ErrSignature", err)
		}
	})
	t.Run("node signer", func(t *testing.T) {
		der, err := cms.Sign(document, signerOf(fx.node))
		if err != nil {
			t.Fatal(err)
		}
		p := participantPolicy()
		p.KeyUsages = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		if _, err := cms.Verify(der, p); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("parse without verification", func(t *testing.T) {
		der, err := cms.Sign(document, signerOf(fx.foreign))
		if err != nil {
			t.Fatal(err)
		}
		v, err := cms.ParseSigned(der)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(v.Content, document) || !v.Signer.Equal(fx.foreign.Cert) || v.Chain != nil {
			t.Error("wrong result")
		}
	})
}

func TestSign_refused(t *testing.T) {
	for name, s := range map[string]cms.Signer{
		"no key":        {Cert: fx.alice.Cert},
		"no cert":       {Key: fx.alice.Key},
		"key mismatch":  {Cert: fx.alice.Cert, Key: fx.bob.Key},
		"enc cert, key": {Cert: fx.alice.EncCert, Key: fx.alice.Key},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := cms.Sign(document, s); err == nil {
				t.Fatal("Sign succeeded")
			}
		})
	}
	if _, err := cms.Sign(nil, signerOf(fx.alice)); err == nil {
		t.Error("Sign(empty) succeeded")
	}
}

func TestVerify_refused(t *testing.T) {
	good, err := cms.Sign(document, signerOf(fx.alice))
	if err != nil {
		t.Fatal(err)
	}
	sign := func(id *pki.Identity) []byte {
		der, err := cms.Sign(document, signerOf(id))
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	tamperedContent := bytes.Clone(good)
	i := bytes.Index(tamperedContent, []byte("Delivery"))
	tamperedContent[i] = 'd'
	tamperedSig := bytes.Clone(good)
	tamperedSig[len(tamperedSig)-3] ^= 0x01 // inside the ECDSA signature value

	tests := map[string]struct {
		der    []byte
		policy func(*cms.Policy)
		want   error
	}{
		"tampered content":   {tamperedContent, nil, cms.ErrSignature},
		"tampered signature": {tamperedSig, nil, cms.ErrSignature},
		"foreign CA":         {sign(fx.foreign), nil, cms.ErrUntrusted},
		"revoked":            {sign(fx.revoked), nil, pki.ErrRevoked},
		"missing EKU":        {good, func(p *cms.Policy) { p.KeyUsages = []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning} }, cms.ErrUntrusted},
		"too large":          {good, func(p *cms.Policy) { p.MaxSize = len(good) - 1 }, cms.ErrTooLarge},
		"expired at time":    {good, func(p *cms.Policy) { p.At = fx.alice.Cert.NotAfter.Add(time.Hour) }, cms.ErrUntrusted},
		"no time":            {good, func(p *cms.Policy) { p.At = time.Time{} }, nil},
		"no verifier":        {good, func(p *cms.Policy) { p.Trust = nil }, nil},
		"two signers":        {twoSigners(t), nil, cms.ErrMalformed},
		"sha1":               {signSHA1(t), nil, cms.ErrSignature},
		"not signed data":    {encryptTo(t, fx.bob), nil, cms.ErrNoSigner},
		"empty":              {nil, nil, cms.ErrMalformed},
		"garbage":            {[]byte{0x30, 0x03, 0x02, 0x01, 0x01}, nil, cms.ErrMalformed},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			p := participantPolicy()
			if tt.policy != nil {
				tt.policy(&p)
			}
			v, err := cms.Verify(tt.der, p)
			if err == nil {
				t.Fatalf("Verify succeeded: %+v", v)
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("Verify = %v, want %v", err, tt.want)
			}
		})
	}
}

// TestVerify_backdated is the attack pkcs7's VerifyWithChain falls for: a
// certificate that has expired, and a signature whose signing-time
// attribute claims a moment within its validity.
func TestVerify_backdated(t *testing.T) {
	caKey := loadCAKey(t)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	// Validity within the root's (which is minutes old), ended a minute ago.
	now := time.Now()
	notBefore, notAfter := fx.ca.Certificate().NotBefore.Add(time.Minute), now.Add(-time.Minute)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(now.UnixNano()),
		Subject:               pkix.Name{CommonName: "old@stadt.example"},
		EmailAddresses:        []string{"old@stadt.example"},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageEmailProtection},
		BasicConstraintsValid: true,
	}
	certDER, err := x509.CreateCertificate(rand.Reader, tmpl, fx.ca.Certificate(), key.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(certDER)
	if err != nil {
		t.Fatal(err)
	}
	sd, err := pkcs7.NewSignedData(document)
	if err != nil {
		t.Fatal(err)
	}
	sd.SetDigestAlgorithm(pkcs7.OIDDigestAlgorithmSHA256)
	claimed := notBefore.Add(notAfter.Sub(notBefore) / 2).UTC()
	err = sd.AddSigner(cert, key, pkcs7.SignerInfoConfig{
		ExtraSignedAttributes: []pkcs7.Attribute{{Type: pkcs7.OIDAttributeSigningTime, Value: claimed}},
	})
	if err != nil {
		t.Fatal(err)
	}
	der, err := sd.Finish()
	if err != nil {
		t.Fatal(err)
	}

	// The pitfall, documented: pkcs7 alone accepts this.
	p7, err := pkcs7.Parse(der)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(fx.ca.Certificate())
	if err := p7.VerifyWithChain(roots); err != nil {
		t.Logf("pkcs7.VerifyWithChain no longer accepts back-dated signatures: %v", err)
	} else {
		t.Log("pkcs7.VerifyWithChain accepts the back-dated signature (known pitfall)")
	}

	v, err := cms.Verify(der, participantPolicy())
	if !errors.Is(err, cms.ErrUntrusted) {
		t.Fatalf("Verify(back-dated, expired) = %+v, %v; want ErrUntrusted", v, err)
	}
}

func loadCAKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(fx.caDir, "ca-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return key.(*ecdsa.PrivateKey)
}

func twoSigners(t testing.TB) []byte {
	t.Helper()
	sd, err := pkcs7.NewSignedData(document)
	if err != nil {
		t.Fatal(err)
	}
	sd.SetDigestAlgorithm(pkcs7.OIDDigestAlgorithmSHA256)
	for _, id := range []*pki.Identity{fx.alice, fx.bob} {
		if err := sd.AddSigner(id.Cert, id.Key, pkcs7.SignerInfoConfig{}); err != nil {
			t.Fatal(err)
		}
	}
	der, err := sd.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func signSHA1(t *testing.T) []byte {
	t.Helper()
	sd, err := pkcs7.NewSignedData(document) // SHA-1 is pkcs7's default
	if err != nil {
		t.Fatal(err)
	}
	if err := sd.AddSigner(fx.alice.Cert, fx.alice.Key, pkcs7.SignerInfoConfig{}); err != nil {
		t.Fatal(err)
	}
	der, err := sd.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func BenchmarkSign(b *testing.B) {
	content := bytes.Repeat([]byte("k"), 1024)
	s := signerOf(fx.alice)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := cms.Sign(content, s); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerify(b *testing.B) {
	content := bytes.Repeat([]byte("k"), 1024)
	der, err := cms.Sign(content, signerOf(fx.alice))
	if err != nil {
		b.Fatal(err)
	}
	p := participantPolicy()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := cms.Verify(der, p); err != nil {
			b.Fatal(err)
		}
	}
}

func TestCheckSignature(t *testing.T) {
	good, err := cms.Sign(document, signerOf(fx.alice))
	if err != nil {
		t.Fatal(err)
	}
	// Intact, whoever signed: a foreign CA's signature is intact too.
	for name, der := range map[string][]byte{"ours": good, "foreign": func() []byte {
		d, err := cms.Sign(document, signerOf(fx.foreign))
		if err != nil {
			t.Fatal(err)
		}
		return d
	}()} {
		v, err := cms.CheckSignature(der)
		if err != nil || !bytes.Equal(v.Content, document) {
			t.Errorf("%s: CheckSignature = %v", name, err)
		}
	}
	tampered := bytes.Clone(good)
	tampered[bytes.Index(tampered, []byte("Delivery"))] = 'd'
	if _, err := cms.CheckSignature(tampered); !errors.Is(err, cms.ErrSignature) {
		t.Errorf("CheckSignature(tampered) = %v, want ErrSignature", err)
	}
	if _, err := cms.CheckSignature(signSHA1(t)); err == nil {
		t.Error("CheckSignature accepted SHA-1")
	}
	detached, err := cms.SignDetached(document, signerOf(fx.alice))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cms.CheckSignature(detached); !errors.Is(err, cms.ErrMalformed) {
		t.Errorf("CheckSignature(detached) = %v, want ErrMalformed", err)
	}
}
