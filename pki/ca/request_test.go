package ca_test

import (
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"kurier.dev/kurier/pki"
	"kurier.dev/kurier/pki/cms"
	"kurier.dev/kurier/pki/pkitest"
)

func TestParticipantRequest_RoundTrip(t *testing.T) {
	const addr = "bob@stadt.example"
	dir := filepath.Join(t.TempDir(), "bob")
	files, err := pki.NewParticipantRequest(dir, addr)
	if err != nil {
		t.Fatal(err)
	}
	if files.CSR != filepath.Join(dir, "csr.pem") || files.EncCSR != filepath.Join(dir, "enc-csr.pem") {
		t.Errorf("NewParticipantRequest = %+v", files)
	}
	pkitest.AssertMode(t, dir, 0o700)
	pkitest.AssertMode(t, filepath.Join(dir, pki.KeyFile), 0o600)
	pkitest.AssertMode(t, filepath.Join(dir, pki.EncKeyFile), 0o600)
	if _, err := pki.NewParticipantRequest(dir, addr); !errors.Is(err, pki.ErrExists) {
		t.Errorf("second NewParticipantRequest: %v, want ErrExists", err)
	}

	// Only the CSRs travel to the CA, which writes into a folder of its
	// own; the participant puts the certificates beside its keys.
	var reqs []*pki.Request
	for _, f := range []string{files.CSR, files.EncCSR} {
		r, err := pki.LoadRequest(f)
		if err != nil {
			t.Fatal(err)
		}
		if r.Address != addr {
			t.Errorf("%s: address %q", f, r.Address)
		}
		reqs = append(reqs, r)
	}
	if reqs[0].Encryption || !reqs[1].Encryption {
		t.Errorf("kinds: signing %v, encryption %v", reqs[0].Encryption, reqs[1].Encryption)
	}
	caOut := t.TempDir()
	issued, err := fx.CA.IssueRequests(caOut, reqs...)
	if err != nil {
		t.Fatal(err)
	}
	if len(issued) != 2 {
		t.Fatalf("issued %d certificates", len(issued))
	}
	for _, f := range []string{pki.CertFile, pki.EncCertFile, pki.CACertFile} {
		pkitest.CopyFile(t, filepath.Join(caOut, f), filepath.Join(dir, f))
	}
	id, err := pki.LoadIdentity(dir)
	if err != nil {
		t.Fatalf("the participant's folder is no identity: %v", err)
	}
	// The same profiles as certificates whose keys the CA made.
	assertLeaf(t, id.Cert, x509.KeyUsageDigitalSignature, x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageEmailProtection)
	assertLeaf(t, id.EncCert, x509.KeyUsageKeyEncipherment|x509.KeyUsageDataEncipherment, x509.ExtKeyUsageEmailProtection)
	if p, err := id.Peer(); err != nil || !cmp.Equal(p, pki.Peer{Kind: pki.KindParticipant, Address: addr}) {
		t.Errorf("Peer() = %v, %v", p, err)
	}
	if !slices.Equal(id.EncCert.EmailAddresses, []string{addr}) || !id.Roots[0].Equal(fx.CA.Certificate()) {
		t.Errorf("encryption SANs %v, roots %v", id.EncCert.EmailAddresses, id.Roots)
	}

	// It signs, under the CA's trust with its CRL, and can be encrypted to.
	signed, err := cms.Sign([]byte("Schriftsatz"), cms.Signer{Cert: id.Cert, Key: id.Key})
	if err != nil {
		t.Fatal(err)
	}
	trust, err := fx.Trust()
	if err != nil {
		t.Fatal(err)
	}
	v, err := cms.Verify(signed, cms.Policy{Trust: trust, At: time.Now(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}})
	if err != nil {
		t.Fatalf("verify a signature of the CSR-made identity: %v", err)
	}
	if !v.Signer.Equal(id.Cert) || string(v.Content) != "Schriftsatz" {
		t.Errorf("verified signer %s, content %q", v.Signer.Subject, v.Content)
	}
	sealed, err := cms.Encrypt([]byte("vertraulich"), []*x509.Certificate{id.EncCert})
	if err != nil {
		t.Fatal(err)
	}
	if plain, err := cms.Decrypt(sealed, id.EncCert, id.EncKey, 1<<20); err != nil || string(plain) != "vertraulich" {
		t.Errorf("decrypt: %q, %v", plain, err)
	}

	t.Run("beside the CSRs", func(t *testing.T) {
		// The CA may also write into the participant's folder itself
		// (without the keys it is the same): the keys there must fit.
		dir := t.TempDir()
		key := pkitest.NewP256(t)
		if err := pki.WriteKey(filepath.Join(dir, pki.KeyFile), key); err != nil {
			t.Fatal(err)
		}
		r := pkitest.ParseRequest(t, pkitest.CSR(t, &x509.CertificateRequest{Subject: pkix.Name{CommonName: addr}}, key))
		if _, err := fx.CA.IssueRequests(dir, r); err != nil {
			t.Fatal(err)
		}
		id, err := pki.LoadIdentity(dir)
		if err != nil {
			t.Fatal(err)
		}
		if id.EncCert != nil || !pki.PublicKeysEqual(id.Cert.PublicKey, key.Public()) {
			t.Error("identity from one signing CSR differs")
		}
		if _, err := fx.CA.IssueRequests(dir, r); !errors.Is(err, pki.ErrExists) {
			t.Errorf("issuing into a folder with cert.pem: %v, want ErrExists", err)
		}
	})
}

func TestHostile_RequestAsksForMore(t *testing.T) {
	const addr = "alice@stadt.example"
	key := pkitest.NewP256(t)
	ext := func(id asn1.ObjectIdentifier, v any) pkix.Extension {
		der, err := asn1.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return pkix.Extension{Id: id, Critical: true, Value: der}
	}
	type basicConstraints struct {
		IsCA       bool `asn1:"optional"`
		MaxPathLen int  `asn1:"optional,default:-1"`
	}
	evil, _ := url.Parse("https://evil.example/")
	csr := pkitest.CSR(t, &x509.CertificateRequest{
		Subject: pkix.Name{
			CommonName: addr, Organization: []string{"Bundesamt"}, OrganizationalUnit: []string{"Root"},
		},
		EmailAddresses: []string{addr, "mallory@stadt.example"},
		DNSNames:       []string{"stadt.example", "evil.example"},
		IPAddresses:    []net.IP{net.IPv4(127, 0, 0, 1)},
		URIs:           []*url.URL{evil},
		ExtraExtensions: []pkix.Extension{
			ext(asn1.ObjectIdentifier{2, 5, 29, 19}, basicConstraints{IsCA: true, MaxPathLen: 3}),
			ext(asn1.ObjectIdentifier{2, 5, 29, 37}, []asn1.ObjectIdentifier{
				{1, 3, 6, 1, 5, 5, 7, 3, 1}, // serverAuth
				{1, 3, 6, 1, 5, 5, 7, 3, 3}, // codeSigning
				{2, 5, 29, 37, 0},           // anyExtendedKeyUsage
			}),
			ext(asn1.ObjectIdentifier{2, 5, 29, 15}, asn1.BitString{Bytes: []byte{0x06}, BitLength: 7}), // keyCertSign, cRLSign
			ext(asn1.ObjectIdentifier{1, 2, 3, 4}, "whatever"),
		},
	}, key)
	r := pkitest.ParseRequest(t, csr)
	if r.Address != addr || r.Encryption {
		t.Fatalf("request: %+v", r)
	}
	issued, err := fx.CA.IssueRequests(t.TempDir(), r)
	if err != nil {
		t.Fatal(err)
	}
	cert := issued[0].Cert
	if cert.IsCA || cert.MaxPathLen > 0 {
		t.Errorf("IsCA %v, MaxPathLen %d", cert.IsCA, cert.MaxPathLen)
	}
	if !slices.Equal(cert.EmailAddresses, []string{addr}) || len(cert.DNSNames)+len(cert.IPAddresses)+len(cert.URIs) != 0 {
		t.Errorf("SANs: email %v, DNS %v, IP %v, URI %v", cert.EmailAddresses, cert.DNSNames, cert.IPAddresses, cert.URIs)
	}
	if got := cert.Subject.String(); got != "CN="+addr {
		t.Errorf("subject %q", got)
	}
	assertLeaf(t, cert, x509.KeyUsageDigitalSignature, x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageEmailProtection)
	if len(cert.UnknownExtKeyUsage) != 0 {
		t.Errorf("unknown EKUs %v", cert.UnknownExtKeyUsage)
	}
	standard := []string{"2.5.29.14", "2.5.29.35", "2.5.29.15", "2.5.29.37", "2.5.29.19", "2.5.29.17"}
	for _, e := range cert.Extensions {
		if !slices.Contains(standard, e.Id.String()) {
			t.Errorf("extension %s came along", e.Id)
		}
	}
	if !pki.PublicKeysEqual(cert.PublicKey, key.Public()) {
		t.Error("the certificate is not for the request's key")
	}
}

func TestHostile_IssueRequestsMismatch(t *testing.T) {
	key := pkitest.NewP256(t)
	req := func(addr string, key crypto.Signer) *pki.Request {
		return pkitest.ParseRequest(t, pkitest.CSR(t, &x509.CertificateRequest{Subject: pkix.Name{CommonName: addr}}, key))
	}
	alice, bob := req("alice@stadt.example", key), req("bob@stadt.example", pkitest.NewP256(t))
	t.Run("two participants", func(t *testing.T) {
		if _, err := fx.CA.IssueRequests(t.TempDir(), alice, bob); !errors.Is(err, pki.ErrBadCSR) {
			t.Fatalf("%v, want ErrBadCSR", err)
		}
	})
	t.Run("two signing keys", func(t *testing.T) {
		if _, err := fx.CA.IssueRequests(t.TempDir(), alice, req("alice@stadt.example", pkitest.NewP256(t))); !errors.Is(err, pki.ErrBadCSR) {
			t.Fatalf("%v, want ErrBadCSR", err)
		}
	})
	t.Run("another key in the folder", func(t *testing.T) {
		dir := t.TempDir()
		if err := pki.WriteKey(filepath.Join(dir, pki.KeyFile), pkitest.NewP256(t)); err != nil {
			t.Fatal(err)
		}
		if _, err := fx.CA.IssueRequests(dir, alice); !errors.Is(err, pki.ErrBadCSR) {
			t.Fatalf("%v, want ErrBadCSR", err)
		}
		if pki.FileExists(filepath.Join(dir, pki.CertFile)) {
			t.Error("a certificate was written")
		}
	})
	t.Run("another participant's certificate in the folder", func(t *testing.T) {
		dir := t.TempDir()
		pkitest.CopyFile(t, filepath.Join(fx.IdentityDir(pkitest.Agency), pki.EncCertFile), filepath.Join(dir, pki.EncCertFile))
		if _, err := fx.CA.IssueRequests(dir, bob); !errors.Is(err, pki.ErrBadCSR) {
			t.Fatalf("%v, want ErrBadCSR", err)
		}
	})
	t.Run("another CA's ca.pem", func(t *testing.T) {
		dir := t.TempDir()
		pkitest.CopyFile(t, filepath.Join(fx.Dir, "foreign-ca", "ca.pem"), filepath.Join(dir, pki.CACertFile))
		if _, err := fx.CA.IssueRequests(dir, alice); err == nil {
			t.Fatal("issued into a folder trusting another CA")
		}
		if pki.FileExists(filepath.Join(dir, pki.CertFile)) {
			t.Error("a certificate was written")
		}
	})
	t.Run("none", func(t *testing.T) {
		if _, err := fx.CA.IssueRequests(t.TempDir()); err == nil {
			t.Fatal("IssueRequests of nothing succeeded")
		}
	})
}
