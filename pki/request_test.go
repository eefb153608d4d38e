package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"kurier.dev/kurier/address"
	"kurier.dev/kurier/pki/cms"
)

// makeCSR returns a PEM CSR for key built from tmpl, as any tool could
// make it.
func makeCSR(t *testing.T, tmpl *x509.CertificateRequest, key crypto.Signer) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemCSR, Bytes: der})
}

func newP256(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func parseRequest(t *testing.T, data []byte) *Request {
	t.Helper()
	r, err := ParseRequest(data)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestParticipantRequest_RoundTrip(t *testing.T) {
	const addr = "bob@stadt.example"
	dir := filepath.Join(t.TempDir(), "bob")
	files, err := NewParticipantRequest(dir, addr)
	if err != nil {
		t.Fatal(err)
	}
	if files.CSR != filepath.Join(dir, csrFile) || files.EncCSR != filepath.Join(dir, encCSRFile) {
		t.Errorf("NewParticipantRequest = %+v", files)
	}
	assertMode(t, dir, 0o700)
	assertMode(t, filepath.Join(dir, keyFile), 0o600)
	assertMode(t, filepath.Join(dir, encKeyFile), 0o600)
	if _, err := NewParticipantRequest(dir, addr); !errors.Is(err, ErrExists) {
		t.Errorf("second NewParticipantRequest: %v, want ErrExists", err)
	}

	// Only the CSRs travel to the CA, which writes into a folder of its
	// own; the participant puts the certificates beside its keys.
	var reqs []*Request
	for _, f := range []string{files.CSR, files.EncCSR} {
		r, err := LoadRequest(f)
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
	issued, err := fx.ca.IssueRequests(caOut, reqs...)
	if err != nil {
		t.Fatal(err)
	}
	if len(issued) != 2 {
		t.Fatalf("issued %d certificates", len(issued))
	}
	for _, f := range []string{certFile, encCertFile, caCertFile} {
		copyFile(t, filepath.Join(caOut, f), filepath.Join(dir, f))
	}
	id, err := LoadIdentity(dir)
	if err != nil {
		t.Fatalf("the participant's folder is no identity: %v", err)
	}
	// The same profiles as certificates whose keys the CA made.
	assertLeaf(t, id.Cert, x509.KeyUsageDigitalSignature, x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageEmailProtection)
	assertLeaf(t, id.EncCert, x509.KeyUsageKeyEncipherment|x509.KeyUsageDataEncipherment, x509.ExtKeyUsageEmailProtection)
	if p, err := id.Peer(); err != nil || !cmp.Equal(p, Peer{Kind: KindParticipant, Address: addr}) {
		t.Errorf("Peer() = %v, %v", p, err)
	}
	if !slices.Equal(id.EncCert.EmailAddresses, []string{addr}) || !id.Roots[0].Equal(fx.ca.Certificate()) {
		t.Errorf("encryption SANs %v, roots %v", id.EncCert.EmailAddresses, id.Roots)
	}

	// It signs, under the CA's trust with its CRL, and can be encrypted to.
	signed, err := cms.Sign([]byte("Schriftsatz"), cms.Signer{Cert: id.Cert, Key: id.Key})
	if err != nil {
		t.Fatal(err)
	}
	v, err := cms.Verify(signed, cms.Policy{Trust: newTrustStore(t), At: time.Now(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}})
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
		key := newP256(t)
		if err := writeKey(filepath.Join(dir, keyFile), key); err != nil {
			t.Fatal(err)
		}
		r := parseRequest(t, makeCSR(t, &x509.CertificateRequest{Subject: pkix.Name{CommonName: addr}}, key))
		if _, err := fx.ca.IssueRequests(dir, r); err != nil {
			t.Fatal(err)
		}
		id, err := LoadIdentity(dir)
		if err != nil {
			t.Fatal(err)
		}
		if id.EncCert != nil || !publicKeysEqual(id.Cert.PublicKey, key.Public()) {
			t.Error("identity from one signing CSR differs")
		}
		if _, err := fx.ca.IssueRequests(dir, r); !errors.Is(err, ErrExists) {
			t.Errorf("issuing into a folder with cert.pem: %v, want ErrExists", err)
		}
	})
}

func TestHostile_RequestBrokenSignature(t *testing.T) {
	const addr = "alice@stadt.example"
	good := makeCSR(t, &x509.CertificateRequest{Subject: pkix.Name{CommonName: addr}}, newP256(t))
	block, _ := pem.Decode(good)
	for name, tamper := range map[string]func(der []byte){
		// The last byte is in the signature value.
		"signature": func(der []byte) { der[len(der)-1] ^= 1 },
		// Another address in the signed part: the key's owner never
		// asked for it.
		"subject": func(der []byte) {
			i := bytes.Index(der, []byte("alice"))
			copy(der[i:], "mallo")
		},
	} {
		t.Run(name, func(t *testing.T) {
			der := bytes.Clone(block.Bytes)
			tamper(der)
			data := pem.EncodeToMemory(&pem.Block{Type: pemCSR, Bytes: der})
			_, err := ParseRequest(data)
			if !errors.Is(err, ErrBadCSR) || !strings.Contains(err.Error(), "signature does not verify") {
				t.Fatalf("ParseRequest of a CSR with a broken signature: %v, want ErrBadCSR for its signature", err)
			}
		})
	}
}

func TestHostile_RequestAsksForMore(t *testing.T) {
	const addr = "alice@stadt.example"
	key := newP256(t)
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
	csr := makeCSR(t, &x509.CertificateRequest{
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
	r := parseRequest(t, csr)
	if r.Address != addr || r.Encryption {
		t.Fatalf("request: %+v", r)
	}
	issued, err := fx.ca.IssueRequests(t.TempDir(), r)
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
	if !publicKeysEqual(cert.PublicKey, key.Public()) {
		t.Error("the certificate is not for the request's key")
	}
}

func TestHostile_RequestBadAddress(t *testing.T) {
	key := newP256(t)
	for _, bad := range []string{"", "alice", "Alice@stadt.example", "alice@Stadt.example", "alice@localhost", "a b@stadt.example", "Alice <alice@stadt.example>"} {
		t.Run(bad, func(t *testing.T) {
			csr := makeCSR(t, &x509.CertificateRequest{Subject: pkix.Name{CommonName: bad}, EmailAddresses: []string{"alice@stadt.example"}}, key)
			_, err := ParseRequest(csr)
			if !errors.Is(err, ErrBadCSR) || !errors.Is(err, address.ErrInvalid) {
				t.Fatalf("ParseRequest(CN %q): %v, want ErrBadCSR and address.ErrInvalid", bad, err)
			}
		})
	}
}

func TestHostile_RequestKey(t *testing.T) {
	const addr = "alice@stadt.example"
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsa2048, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	for name, key := range map[string]crypto.Signer{"P-384": p384, "Ed25519": ed, "RSA-2048": rsa2048} {
		t.Run(name, func(t *testing.T) {
			csr := makeCSR(t, &x509.CertificateRequest{Subject: pkix.Name{CommonName: addr}}, key)
			if _, err := ParseRequest(csr); !errors.Is(err, ErrBadCSR) {
				t.Fatalf("ParseRequest of a %s CSR: %v, want ErrBadCSR", name, err)
			}
		})
	}
}

func TestHostile_RequestFile(t *testing.T) {
	csr := makeCSR(t, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "alice@stadt.example"}}, newP256(t))
	for name, data := range map[string][]byte{
		"empty":       nil,
		"certificate": pem.EncodeToMemory(&pem.Block{Type: pemCertificate, Bytes: fx.ca.Certificate().Raw}),
		"two CSRs":    append(bytes.Clone(csr), csr...),
		"garbage DER": pem.EncodeToMemory(&pem.Block{Type: pemCSR, Bytes: []byte("not DER")}),
		"too large":   append(bytes.Clone(csr), bytes.Repeat([]byte("\n"), maxCSRFile)...),
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "csr.pem")
			if err := os.WriteFile(path, data, 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := LoadRequest(path); !errors.Is(err, ErrBadCSR) {
				t.Fatalf("LoadRequest: %v, want ErrBadCSR", err)
			}
		})
	}
}

func TestHostile_IssueRequestsMismatch(t *testing.T) {
	key := newP256(t)
	req := func(addr string, key crypto.Signer) *Request {
		return parseRequest(t, makeCSR(t, &x509.CertificateRequest{Subject: pkix.Name{CommonName: addr}}, key))
	}
	alice, bob := req("alice@stadt.example", key), req("bob@stadt.example", newP256(t))
	t.Run("two participants", func(t *testing.T) {
		if _, err := fx.ca.IssueRequests(t.TempDir(), alice, bob); !errors.Is(err, ErrBadCSR) {
			t.Fatalf("%v, want ErrBadCSR", err)
		}
	})
	t.Run("two signing keys", func(t *testing.T) {
		if _, err := fx.ca.IssueRequests(t.TempDir(), alice, req("alice@stadt.example", newP256(t))); !errors.Is(err, ErrBadCSR) {
			t.Fatalf("%v, want ErrBadCSR", err)
		}
	})
	t.Run("another key in the folder", func(t *testing.T) {
		dir := t.TempDir()
		if err := writeKey(filepath.Join(dir, keyFile), newP256(t)); err != nil {
			t.Fatal(err)
		}
		if _, err := fx.ca.IssueRequests(dir, alice); !errors.Is(err, ErrBadCSR) {
			t.Fatalf("%v, want ErrBadCSR", err)
		}
		if exists(filepath.Join(dir, certFile)) {
			t.Error("a certificate was written")
		}
	})
	t.Run("another participant's certificate in the folder", func(t *testing.T) {
		dir := t.TempDir()
		copyFile(t, filepath.Join(fx.dir, "alice", encCertFile), filepath.Join(dir, encCertFile))
		if _, err := fx.ca.IssueRequests(dir, bob); !errors.Is(err, ErrBadCSR) {
			t.Fatalf("%v, want ErrBadCSR", err)
		}
	})
	t.Run("another CA's ca.pem", func(t *testing.T) {
		dir := t.TempDir()
		copyFile(t, filepath.Join(fx.foreignCA.dir, caCertFile), filepath.Join(dir, caCertFile))
		if _, err := fx.ca.IssueRequests(dir, alice); err == nil {
			t.Fatal("issued into a folder trusting another CA")
		}
		if exists(filepath.Join(dir, certFile)) {
			t.Error("a certificate was written")
		}
	})
	t.Run("none", func(t *testing.T) {
		if _, err := fx.ca.IssueRequests(t.TempDir()); err == nil {
			t.Fatal("IssueRequests of nothing succeeded")
		}
	})
}
