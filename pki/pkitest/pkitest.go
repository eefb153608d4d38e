// Package pkitest builds a small federation PKI for tests: a CA, one node
// for two domains, three participants, a revoked participant and one from a
// foreign CA, all issued by package pki itself. RSA-3072 encryption keys
// take a second each to generate, so tests build one per package (in
// TestMain) and share it.
package pkitest

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"kurier.dev/kurier/pki"
	"kurier.dev/kurier/pki/cms"
	"kurier.dev/kurier/tlog"
)

// Addresses and domains of the test federation.
const (
	Agency = "poststelle@stadt.example"
	Court  = "eingang@amtsgericht.example"
	Other  = "buergeramt@stadt.example"
)

// Domains are the domains the test node serves.
var Domains = []string{"stadt.example", "amtsgericht.example"}

// PKI is a test federation on disk.
type PKI struct {
	Dir  string
	CA   *pki.CA
	Node *pki.Identity
	// IDs holds the participants Agency, Court and Other by address; their
	// identity folders are Dir/<address>.
	IDs map[string]*pki.Identity
	// Revoked is a second identity of Agency whose certificate is on the CRL.
	Revoked *pki.Identity
	// Foreign is an identity of Agency issued by another CA.
	Foreign *pki.Identity
	// CRL is the CA's current CRL file.
	CRL string
	// LogKey and LogVKey are the node's checkpoint signing key and its
	// verifier key, named tlog.Origin of the first of Domains.
	LogKey, LogVKey string
}

// New creates the federation in dir.
func New(dir string) (*PKI, error) {
	ca, err := pki.InitCA(filepath.Join(dir, "ca"), "Kurier Test CA")
	if err != nil {
		return nil, fmt.Errorf("pkitest: %w", err)
	}
	p := &PKI{Dir: dir, CA: ca, IDs: map[string]*pki.Identity{}}
	if p.Node, err = ca.IssueNode(filepath.Join(dir, "node"), Domains); err != nil {
		return nil, fmt.Errorf("pkitest: %w", err)
	}
	for _, a := range []string{Agency, Court, Other} {
		if p.IDs[a], err = ca.IssueParticipant(p.IdentityDir(a), a); err != nil {
			return nil, fmt.Errorf("pkitest: %w", err)
		}
	}
	if p.Revoked, err = ca.IssueParticipant(filepath.Join(dir, "revoked"), Agency); err != nil {
		return nil, fmt.Errorf("pkitest: %w", err)
	}
	if err := ca.Revoke(p.Revoked.Cert.SerialNumber, 1); err != nil {
		return nil, fmt.Errorf("pkitest: %w", err)
	}
	if p.CRL, err = ca.WriteCRL(24 * time.Hour); err != nil {
		return nil, fmt.Errorf("pkitest: %w", err)
	}
	if p.LogKey, p.LogVKey, err = tlog.GenerateKey(tlog.Origin(Domains[0])); err != nil {
		return nil, fmt.Errorf("pkitest: %w", err)
	}
	foreign, err := pki.InitCA(filepath.Join(dir, "foreign-ca"), "Foreign CA")
	if err != nil {
		return nil, fmt.Errorf("pkitest: %w", err)
	}
	if p.Foreign, err = foreign.IssueParticipant(filepath.Join(dir, "foreign"), Agency); err != nil {
		return nil, fmt.Errorf("pkitest: %w", err)
	}
	return p, nil
}

// IdentityDir returns the identity folder of a participant in IDs.
func (p *PKI) IdentityDir(addr string) string { return filepath.Join(p.Dir, addr) }

// Trust returns a trust store over the CA and its CRL.
func (p *PKI) Trust() (*pki.TrustStore, error) {
	return pki.NewTrustStore(p.Node.Roots, p.CRL)
}

// Signer returns an identity's signing certificate and key.
func Signer(id *pki.Identity) cms.Signer {
	return cms.Signer{Cert: id.Cert, Key: id.Key, Chain: id.Chain}
}

// Main is a TestMain for packages that share one federation: it builds it
// in a temporary folder, stores it in *fx, runs the tests, removes the
// folder and exits with the tests' status.
func Main(m *testing.M, fx **PKI) {
	dir, err := os.MkdirTemp("", "kurier-pkitest")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	p, err := New(dir)
	if err != nil {
		os.RemoveAll(dir)
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	*fx = p
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
