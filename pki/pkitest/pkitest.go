// Package pkitest builds a small federation PKI for tests: a CA, one node
// for two domains, three participants, a revoked participant and one from a
// foreign CA, all issued by the project's own CA (package pki/ca). RSA-3072
// encryption keys take a second each to generate, so tests build one per
// package (in TestMain) and share it. It also holds the helpers that tests
// of requests and identity folders share (CSR, CopyFile, AssertMode).
package pkitest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"kurier.dev/kurier/pki"
	"kurier.dev/kurier/pki/ca"
	"kurier.dev/kurier/pki/cms"
	"kurier.dev/kurier/tlog"
)

// Addresses and domains of the test federation.
const (
	Agency = "poststelle@stadt.example"
	Court  = "eingang@amtsgericht.example"
	Other  = "buergeramt@stadt.example"
)

// CAName is the common name of the test federation's CA.
const CAName = "Kurier Test CA"

// Domains are the domains the test node serves.
var Domains = []string{"stadt.example", "amtsgericht.example"}

// PKI is a test federation on disk.
type PKI struct {
	Dir  string
	CA   *ca.CA
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
	authority, err := ca.Init(filepath.Join(dir, "ca"), CAName)
	if err != nil {
		return nil, fmt.Errorf("pkitest: %w", err)
	}
	p := &PKI{Dir: dir, CA: authority, IDs: map[string]*pki.Identity{}}
	if p.Node, err = authority.IssueNode(filepath.Join(dir, "node"), Domains); err != nil {
		return nil, fmt.Errorf("pkitest: %w", err)
	}
	for _, a := range []string{Agency, Court, Other} {
		if p.IDs[a], err = authority.IssueParticipant(p.IdentityDir(a), a); err != nil {
			return nil, fmt.Errorf("pkitest: %w", err)
		}
	}
	if p.Revoked, err = authority.IssueParticipant(filepath.Join(dir, "revoked"), Agency); err != nil {
		return nil, fmt.Errorf("pkitest: %w", err)
	}
	if err := authority.Revoke(p.Revoked.Cert.SerialNumber, 1); err != nil {
		return nil, fmt.Errorf("pkitest: %w", err)
	}
	if p.CRL, err = authority.WriteCRL(24 * time.Hour); err != nil {
		return nil, fmt.Errorf("pkitest: %w", err)
	}
	if p.LogKey, p.LogVKey, err = tlog.GenerateKey(tlog.Origin(Domains[0])); err != nil {
		return nil, fmt.Errorf("pkitest: %w", err)
	}
	foreign, err := ca.Init(filepath.Join(dir, "foreign-ca"), "Foreign CA")
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

// NewP256 returns a new ECDSA P-256 key, the kind of signing key the CA
// certifies.
func NewP256(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// CSR returns a PEM certificate signing request for key built from tmpl,
// as any tool could make it.
func CSR(t testing.TB, tmpl *x509.CertificateRequest, key crypto.Signer) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

// ParseRequest returns the request in the PEM data, which
// pki.ParseRequest must accept.
func ParseRequest(t testing.TB, data []byte) *pki.Request {
	t.Helper()
	r, err := pki.ParseRequest(data)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// CopyFile copies the file from to to (0600), as an operator moves a
// certificate, key or CRL between folders.
func CopyFile(t testing.TB, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// AssertMode fails t unless path has the permission bits want: keys are
// 0600 and new identity folders 0700.
func AssertMode(t testing.TB, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("%s: mode %o, want %o", path, got, want)
	}
}
