package cms_test

import (
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/digitorus/pkcs7"

	"kurier.dev/kurier/pki"
	"kurier.dev/kurier/pki/ca"
	"kurier.dev/kurier/pki/cms"
)

// The trust store of nodes and clients is what Policy.Trust takes.
var _ cms.Verifier = (*pki.TrustStore)(nil)

// fx holds the certificates every test uses, issued once for the package
// (RSA-3072 keys take about a second each), in parallel.
var fx struct {
	dir     string // identities live in dir/<name>
	caDir   string
	ca      *ca.CA
	trust   *pki.TrustStore // with the CA's CRL, which lists revoked
	alice   *pki.Identity   // participant
	bob     *pki.Identity   // participant
	revoked *pki.Identity   // participant, revoked before the CRL was written
	foreign *pki.Identity   // participant of another CA with the same name
	node    *pki.Identity   // node: no emailProtection EKU
}

func TestMain(m *testing.M) {
	// Envelopes sealed as Kurier sealed them before RSAES-OAEP come from
	// pkcs7.Encrypt with this cipher.
	pkcs7.ContentEncryptionAlgorithm = pkcs7.EncryptionAlgorithmAES256CBC
	os.Exit(func() int {
		dir, err := os.MkdirTemp("", "kurier-cms-test-")
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
	fx.caDir = filepath.Join(dir, "ca")
	var err error
	if fx.ca, err = ca.Init(fx.caDir, "Kurier Test CA"); err != nil {
		return err
	}
	foreignCA, err := ca.Init(filepath.Join(dir, "foreign-ca"), "Kurier Test CA")
	if err != nil {
		return err
	}
	jobs := []struct {
		dst *(*pki.Identity)
		f   func() (*pki.Identity, error)
	}{
		{&fx.alice, func() (*pki.Identity, error) {
			return fx.ca.IssueParticipant(filepath.Join(dir, "alice"), "alice@stadt.example")
		}},
		{&fx.bob, func() (*pki.Identity, error) {
			return fx.ca.IssueParticipant(filepath.Join(dir, "bob"), "bob@amtsgericht.example")
		}},
		{&fx.revoked, func() (*pki.Identity, error) {
			return fx.ca.IssueParticipant(filepath.Join(dir, "revoked"), "revoked@stadt.example")
		}},
		{&fx.foreign, func() (*pki.Identity, error) {
			return foreignCA.IssueParticipant(filepath.Join(dir, "foreign"), "alice@stadt.example")
		}},
		{&fx.node, func() (*pki.Identity, error) {
			return fx.ca.IssueNode(filepath.Join(dir, "node"), []string{"stadt.example"})
		}},
	}
	var wg sync.WaitGroup
	errs := make([]error, len(jobs))
	for i, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			*j.dst, errs[i] = j.f()
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if err := fx.ca.Revoke(fx.revoked.Cert.SerialNumber, 1); err != nil {
		return err
	}
	crl, err := fx.ca.WriteCRL(time.Hour)
	if err != nil {
		return err
	}
	fx.trust, err = pki.NewTrustStore([]*x509.Certificate{fx.ca.Certificate()}, crl)
	return err
}

func signerOf(id *pki.Identity) cms.Signer {
	return cms.Signer{Cert: id.Cert, Key: id.Key, Chain: id.Chain}
}

// participantPolicy is what a node applies to a participant's signature.
func participantPolicy() cms.Policy {
	return cms.Policy{Trust: fx.trust, At: time.Now(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}}
}
