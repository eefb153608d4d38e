package ca_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"kurier.dev/kurier/address"
	"kurier.dev/kurier/pki"
	"kurier.dev/kurier/pki/ca"
	"kurier.dev/kurier/pki/pkitest"
)

func TestInit(t *testing.T) {
	root := fx.CA.Certificate()
	if !root.IsCA || root.KeyUsage&x509.KeyUsageCertSign == 0 || root.KeyUsage&x509.KeyUsageCRLSign == 0 {
		t.Errorf("root: IsCA %v, KeyUsage %b", root.IsCA, root.KeyUsage)
	}
	if root.Subject.CommonName != pkitest.CAName {
		t.Errorf("root CN = %q", root.Subject.CommonName)
	}
	assertP256(t, root.PublicKey)
	if d := root.NotAfter.Sub(root.NotBefore); d < 3650*24*time.Hour-time.Hour || d > 3660*24*time.Hour {
		t.Errorf("root validity %v, want 10 years", d)
	}
	pkitest.AssertMode(t, filepath.Join(fx.Dir, "ca", "ca-key.pem"), 0o600)

	t.Run("exists", func(t *testing.T) {
		if _, err := ca.Init(filepath.Join(fx.Dir, "ca"), "again"); !errors.Is(err, pki.ErrExists) {
			t.Fatalf("Init over an existing CA: %v, want ErrExists", err)
		}
	})
	t.Run("open", func(t *testing.T) {
		opened, err := ca.Open(filepath.Join(fx.Dir, "ca"))
		if err != nil {
			t.Fatal(err)
		}
		if !opened.Certificate().Equal(root) {
			t.Error("Open returned another root")
		}
	})
	t.Run("open with wrong key", func(t *testing.T) {
		dir := t.TempDir()
		pkitest.CopyFile(t, filepath.Join(fx.Dir, "ca", pki.CACertFile), filepath.Join(dir, pki.CACertFile))
		pkitest.CopyFile(t, filepath.Join(fx.Dir, "foreign-ca", "ca-key.pem"), filepath.Join(dir, "ca-key.pem"))
		if _, err := ca.Open(dir); err == nil {
			t.Fatal("Open with a foreign key succeeded")
		}
	})
	t.Run("open missing", func(t *testing.T) {
		if _, err := ca.Open(t.TempDir()); err == nil {
			t.Fatal("Open of an empty dir succeeded")
		}
	})
}

func TestCA_IssueNode(t *testing.T) {
	cert := fx.Node.Cert
	if diff := cmp.Diff(pkitest.Domains, cert.DNSNames); diff != "" {
		t.Errorf("DNS SANs (-want +got):\n%s", diff)
	}
	if cert.Subject.CommonName != "stadt.example" {
		t.Errorf("CN = %q", cert.Subject.CommonName)
	}
	if len(cert.EmailAddresses)+len(cert.IPAddresses)+len(cert.URIs) != 0 {
		t.Errorf("extra SANs: %v %v %v", cert.EmailAddresses, cert.IPAddresses, cert.URIs)
	}
	assertLeaf(t, cert, x509.KeyUsageDigitalSignature, x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageEmailProtection)
	assertP256(t, cert.PublicKey)
	if fx.Node.EncCert != nil || fx.Node.EncKey != nil {
		t.Error("node has an encryption certificate")
	}

	dir := filepath.Join(fx.Dir, "node")
	pkitest.AssertMode(t, dir, 0o700)
	pkitest.AssertMode(t, filepath.Join(dir, pki.KeyFile), 0o600)
	loaded, err := pki.LoadIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !loaded.Cert.Equal(cert) || len(loaded.Chain) != 0 || loaded.EncCert != nil || !loaded.Roots[0].Equal(fx.CA.Certificate()) {
		t.Error("LoadIdentity differs from what IssueNode returned")
	}

	for name, domains := range map[string][]string{
		"none":      nil,
		"uppercase": {"Stadt.example"},
		"one label": {"localhost"},
		"ip":        {"127.0.0.1"},
		"email":     {"a@stadt.example"},
		"twice":     {"stadt.example", "stadt.example"},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := fx.CA.IssueNode(t.TempDir(), domains); err == nil {
				t.Fatalf("IssueNode(%q) succeeded", domains)
			}
		})
	}
	t.Run("exists", func(t *testing.T) {
		if _, err := fx.CA.IssueNode(dir, []string{"stadt.example"}); !errors.Is(err, pki.ErrExists) {
			t.Fatalf("IssueNode over an identity: %v, want ErrExists", err)
		}
	})
}

func TestCA_IssueParticipant(t *testing.T) {
	const addr = pkitest.Agency
	id := fx.IDs[addr]

	sig := id.Cert
	if diff := cmp.Diff([]string{addr}, sig.EmailAddresses); diff != "" {
		t.Errorf("signing cert email SANs (-want +got):\n%s", diff)
	}
	if len(sig.DNSNames)+len(sig.IPAddresses)+len(sig.URIs) != 0 {
		t.Errorf("signing cert has other SANs: %v %v %v", sig.DNSNames, sig.IPAddresses, sig.URIs)
	}
	if sig.Subject.CommonName != addr {
		t.Errorf("CN = %q", sig.Subject.CommonName)
	}
	assertLeaf(t, sig, x509.KeyUsageDigitalSignature, x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageEmailProtection)
	assertP256(t, sig.PublicKey)

	enc := id.EncCert
	if diff := cmp.Diff([]string{addr}, enc.EmailAddresses); diff != "" {
		t.Errorf("encryption cert email SANs (-want +got):\n%s", diff)
	}
	if len(enc.DNSNames) != 0 || enc.Subject.CommonName != addr {
		t.Errorf("encryption cert: DNS %v, CN %q", enc.DNSNames, enc.Subject.CommonName)
	}
	assertLeaf(t, enc, x509.KeyUsageKeyEncipherment|x509.KeyUsageDataEncipherment, x509.ExtKeyUsageEmailProtection)
	if pub, ok := enc.PublicKey.(*rsa.PublicKey); !ok || pub.N.BitLen() != 3072 {
		t.Errorf("encryption key %T, want RSA-3072", enc.PublicKey)
	}
	if _, ok := id.EncKey.(*rsa.PrivateKey); !ok {
		t.Errorf("EncKey is %T", id.EncKey)
	}
	if sig.SerialNumber.Cmp(enc.SerialNumber) == 0 {
		t.Error("both certificates have the same serial")
	}

	dir := fx.IdentityDir(pkitest.Agency)
	for _, f := range []string{pki.KeyFile, pki.EncKeyFile} {
		pkitest.AssertMode(t, filepath.Join(dir, f), 0o600)
	}
	loaded, err := pki.LoadIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !loaded.Cert.Equal(sig) || !loaded.EncCert.Equal(enc) {
		t.Error("LoadIdentity differs from what IssueParticipant returned")
	}
	if p, err := loaded.Peer(); err != nil || !cmp.Equal(p, pki.Peer{Kind: pki.KindParticipant, Address: addr}) {
		t.Errorf("Peer() = %v, %v", p, err)
	}

	for _, bad := range []string{"", "Alice@stadt.example", "alice@Stadt.example", "alice", "alice@localhost", "a b@stadt.example", "Alice <alice@stadt.example>"} {
		t.Run("invalid "+bad, func(t *testing.T) {
			if _, err := fx.CA.IssueParticipant(t.TempDir(), bad); !errors.Is(err, address.ErrInvalid) {
				t.Fatalf("IssueParticipant(%q): %v, want address.ErrInvalid", bad, err)
			}
		})
	}
	t.Run("exists", func(t *testing.T) {
		// The node dir has cert.pem: refused before any key is generated.
		if _, err := fx.CA.IssueParticipant(filepath.Join(fx.Dir, "node"), "x@stadt.example"); !errors.Is(err, pki.ErrExists) {
			t.Fatalf("IssueParticipant over an identity: %v, want ErrExists", err)
		}
	})
}

func assertLeaf(t *testing.T, cert *x509.Certificate, ku x509.KeyUsage, eku ...x509.ExtKeyUsage) {
	t.Helper()
	if cert.IsCA || !cert.BasicConstraintsValid {
		t.Errorf("%s: IsCA %v, BasicConstraintsValid %v", cert.Subject, cert.IsCA, cert.BasicConstraintsValid)
	}
	if cert.KeyUsage != ku {
		t.Errorf("%s: KeyUsage %b, want %b", cert.Subject, cert.KeyUsage, ku)
	}
	if diff := cmp.Diff(eku, cert.ExtKeyUsage); diff != "" {
		t.Errorf("%s: EKU (-want +got):\n%s", cert.Subject, diff)
	}
	if cert.SignatureAlgorithm != x509.ECDSAWithSHA256 {
		t.Errorf("%s: signature algorithm %v", cert.Subject, cert.SignatureAlgorithm)
	}
	if err := cert.CheckSignatureFrom(fx.CA.Certificate()); err != nil {
		t.Errorf("%s: %v", cert.Subject, err)
	}
	if d := cert.NotAfter.Sub(time.Now()); d < 729*24*time.Hour || d > 731*24*time.Hour {
		t.Errorf("%s: expires in %v, want 2 years", cert.Subject, d)
	}
}

func assertP256(t *testing.T, pub any) {
	t.Helper()
	if k, ok := pub.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
		t.Errorf("key %T, want ECDSA P-256", pub)
	}
}
