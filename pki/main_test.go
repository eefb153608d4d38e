package pki_test

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"kurier.dev/kurier/pki"
	"kurier.dev/kurier/pki/ca"
	"kurier.dev/kurier/pki/pkitest"
)

// fx holds what the tests share: generating RSA-3072 keys takes a second
// each, so the CA and the identities are made once for the package, in
// parallel. Tests must not revoke fx identities: they make their own
// (issueNode, issueTLSParticipant) to revoke.
var fx struct {
	dir       string
	ca        *ca.CA
	caKey     crypto.Signer // the CA's key, to make what the CA would never issue
	crl       string        // the CA's crl.pem, rewritten by each WriteCRL
	alice     *pki.Identity // participant
	node      *pki.Identity // node for stadt.example and kreis.example
	foreignCA *ca.CA        // another CA with the same name as ca
	foreign   *pki.Identity // node issued by foreignCA for stadt.example
}

const caName = "Kurier Test CA"

func TestMain(m *testing.M) {
	os.Exit(func() int {
		dir, err := os.MkdirTemp("", "kurier-pki-test-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		if err := setupFixture(dir); err != nil {
			fmt.Fprintln(os.Stderr, "fixture:", err)
			return 1
		}
		return m.Run()
	}())
}

func setupFixture(dir string) error {
	fx.dir = dir
	var err error
	if fx.ca, err = ca.Init(filepath.Join(dir, "ca"), caName); err != nil {
		return err
	}
	if fx.caKey, err = pki.LoadKey(filepath.Join(dir, "ca", "ca-key.pem")); err != nil {
		return err
	}
	if fx.foreignCA, err = ca.Init(filepath.Join(dir, "foreign-ca"), caName); err != nil {
		return err
	}
	var wg sync.WaitGroup
	errs := make([]error, 3)
	run := func(i int, f func() error) {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = f() }()
	}
	run(0, func() (err error) {
		fx.alice, err = fx.ca.IssueParticipant(filepath.Join(dir, "alice"), "alice@stadt.example")
		return err
	})
	run(1, func() (err error) {
		fx.node, err = fx.ca.IssueNode(filepath.Join(dir, "node"), []string{"stadt.example", "kreis.example"})
		return err
	})
	run(2, func() (err error) {
		fx.foreign, err = fx.foreignCA.IssueNode(filepath.Join(dir, "foreign-node"), []string{"stadt.example"})
		return err
	})
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	fx.crl, err = fx.ca.WriteCRL(time.Hour)
	return err
}

// makeCert issues a certificate from tmpl with the CA's key directly,
// bypassing the profiles, to produce shapes the CA would never issue.
func makeCert(t *testing.T, tmpl *x509.Certificate) *x509.Certificate {
	t.Helper()
	key := pkitest.NewP256(t)
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber = serial.Add(serial, big.NewInt(1))
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore = time.Now().Add(-time.Hour)
	}
	if tmpl.NotAfter.IsZero() {
		tmpl.NotAfter = time.Now().Add(time.Hour)
	}
	tmpl.BasicConstraintsValid = true
	der, err := x509.CreateCertificate(rand.Reader, tmpl, fx.ca.Certificate(), key.Public(), fx.caKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// newTrustStore returns a store over the test CA's current crl.pem that
// notices a rewritten CRL at once.
func newTrustStore(t *testing.T) *pki.TrustStore {
	t.Helper()
	ts, err := pki.NewTrustStore([]*x509.Certificate{fx.ca.Certificate()}, fx.crl)
	if err != nil {
		t.Fatal(err)
	}
	ts.SetRecheck(0)
	return ts
}

// issueNode issues a throwaway node identity (ECDSA only, fast).
func issueNode(t *testing.T, authority *ca.CA, domains ...string) *pki.Identity {
	t.Helper()
	id, err := authority.IssueNode(t.TempDir(), domains)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// issueTLSParticipant issues a participant's signing certificate through
// the CA's real profile, from a CSR, but without the RSA encryption
// certificate, which TLS tests do not need and which is slow to generate.
func issueTLSParticipant(t *testing.T, addr string) *pki.Identity {
	t.Helper()
	key := pkitest.NewP256(t)
	r := pkitest.ParseRequest(t, pkitest.CSR(t, &x509.CertificateRequest{Subject: pkix.Name{CommonName: addr}}, key))
	issued, err := fx.ca.IssueRequests(t.TempDir(), r)
	if err != nil {
		t.Fatal(err)
	}
	return &pki.Identity{Cert: issued[0].Cert, Key: key, Roots: []*x509.Certificate{fx.ca.Certificate()}}
}
