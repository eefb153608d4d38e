package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"kurier.dev/kurier/address"
)

func TestInitCA(t *testing.T) {
	root := fx.ca.Certificate()
	if !root.IsCA || root.KeyUsage&x509.KeyUsageCertSign == 0 || root.KeyUsage&x509.KeyUsageCRLSign == 0 {
		t.Errorf("root: IsCA %v, KeyUsage %b", root.IsCA, root.KeyUsage)
	}
	if root.Subject.CommonName != caName {
		t.Errorf("root CN = %q", root.Subject.CommonName)
	}
	assertP256(t, root.PublicKey)
	if d := root.NotAfter.Sub(root.NotBefore); d < 3650*24*time.Hour-time.Hour || d > 3660*24*time.Hour {
		t.Errorf("root validity %v, want 10 years", d)
	}
	assertMode(t, filepath.Join(fx.ca.dir, caKeyFile), 0o600)

	t.Run("exists", func(t *testing.T) {
		if _, err := InitCA(fx.ca.dir, "again"); !errors.Is(err, ErrExists) {
			t.Fatalf("InitCA over an existing CA: %v, want ErrExists", err)
		}
	})
	t.Run("open", func(t *testing.T) {
		ca, err := OpenCA(fx.ca.dir)
		if err != nil {
			t.Fatal(err)
		}
		if !ca.Certificate().Equal(root) {
			t.Error("OpenCA returned another root")
		}
	})
	t.Run("open with wrong key", func(t *testing.T) {
		dir := t.TempDir()
		copyFile(t, filepath.Join(fx.ca.dir, caCertFile), filepath.Join(dir, caCertFile))
		copyFile(t, filepath.Join(fx.foreignCA.dir, caKeyFile), filepath.Join(dir, caKeyFile))
		if _, err := OpenCA(dir); err == nil {
			t.Fatal("OpenCA with a foreign key succeeded")
		}
	})
	t.Run("open missing", func(t *testing.T) {
		if _, err := OpenCA(t.TempDir()); err == nil {
			t.Fatal("OpenCA of an empty dir succeeded")
		}
	})
}

func TestCA_IssueNode(t *testing.T) {
	cert := fx.node.Cert
	if diff := cmp.Diff([]string{"stadt.example", "kreis.example"}, cert.DNSNames); diff != "" {
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
	if fx.node.EncCert != nil || fx.node.EncKey != nil {
		t.Error("node has an encryption certificate")
	}

	dir := filepath.Join(fx.dir, "node")
	assertMode(t, dir, 0o700)
	assertMode(t, filepath.Join(dir, keyFile), 0o600)
	loaded, err := LoadIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !loaded.Cert.Equal(cert) || len(loaded.Chain) != 0 || loaded.EncCert != nil || !loaded.Roots[0].Equal(fx.ca.Certificate()) {
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
			if _, err := fx.ca.IssueNode(t.TempDir(), domains); err == nil {
				t.Fatalf("IssueNode(%q) succeeded", domains)
			}
		})
	}
	t.Run("exists", func(t *testing.T) {
		if _, err := fx.ca.IssueNode(dir, []string{"stadt.example"}); !errors.Is(err, ErrExists) {
			t.Fatalf("IssueNode over an identity: %v, want ErrExists", err)
		}
	})
}

func TestCA_IssueParticipant(t *testing.T) {
	const addr = "alice@stadt.example"
	id := fx.alice

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

	dir := filepath.Join(fx.dir, "alice")
	for _, f := range []string{keyFile, encKeyFile} {
		assertMode(t, filepath.Join(dir, f), 0o600)
	}
	loaded, err := LoadIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !loaded.Cert.Equal(sig) || !loaded.EncCert.Equal(enc) {
		t.Error("LoadIdentity differs from what IssueParticipant returned")
	}
	if p, err := loaded.Peer(); err != nil || !cmp.Equal(p, Peer{Kind: KindParticipant, Address: addr}) {
		t.Errorf("Peer() = %v, %v", p, err)
	}

	for _, bad := range []string{"", "Alice@stadt.example", "alice@Stadt.example", "alice", "alice@localhost", "a b@stadt.example", "Alice <alice@stadt.example>"} {
		t.Run("invalid "+bad, func(t *testing.T) {
			if _, err := fx.ca.IssueParticipant(t.TempDir(), bad); !errors.Is(err, address.ErrInvalid) {
				t.Fatalf("IssueParticipant(%q): %v, want address.ErrInvalid", bad, err)
			}
		})
	}
	t.Run("exists", func(t *testing.T) {
		// The node dir has cert.pem: refused before any key is generated.
		if _, err := fx.ca.IssueParticipant(filepath.Join(fx.dir, "node"), "x@stadt.example"); !errors.Is(err, ErrExists) {
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
	if err := cert.CheckSignatureFrom(fx.ca.Certificate()); err != nil {
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

func assertMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("%s: mode %o, want %o", path, got, want)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, 0o600); err != nil {
		t.Fatal(err)
	}
}
