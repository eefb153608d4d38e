package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/cloudflare/cfssl/csr"
	"github.com/cloudflare/cfssl/initca"
	"github.com/cloudflare/cfssl/signer"
	"github.com/cloudflare/cfssl/signer/local"

	"kurier.dev/kurier/pki"
)

// Files of a CA directory besides its certificate, pki.CACertFile (see the
// package comment), and the PEM block types the CA writes.
const (
	caKeyFile      = "ca-key.pem"
	revokedFile    = "revoked.json"
	crlFile        = "crl.pem"
	crlNumberFile  = "crlnumber"
	pemCertificate = "CERTIFICATE"
	pemCRL         = "X509 CRL"
	pemCSR         = "CERTIFICATE REQUEST"
)

// caValidity is the root's lifetime: long enough that rolling the federation
// root is a rare, planned event, short enough to stay within BSI TR-02102's
// horizon for P-256.
const caValidity = "87600h" // 10 years

// caPathLen lets the root sign one level of intermediates, which the design
// allows for; it never signs them itself (see the profiles in issue.go).
const caPathLen = 1

// CA is the federation's certificate authority, kept in one directory (see
// the package comment for the layout). Its methods are safe for concurrent
// use within one process; two processes must not operate on the same CA
// directory at once (Revoke and WriteCRL read, then rewrite files).
type CA struct {
	dir    string
	cert   *x509.Certificate
	key    crypto.Signer
	signer *local.Signer

	mu sync.Mutex // serialises Revoke and WriteCRL (revoked.json, crlnumber, crl.pem)
}

// Init creates a new CA in dir: an ECDSA P-256 root certificate, valid
// for ten years, issued by cfssl's initca. It refuses with pki.ErrExists if
// dir/ca.pem is already there, so a second run cannot replace a root that
// the federation trusts.
func Init(dir, commonName string) (*CA, error) {
	if commonName == "" {
		return nil, fmt.Errorf("init ca in %s: empty common name", dir)
	}
	if pki.FileExists(filepath.Join(dir, pki.CACertFile)) {
		return nil, fmt.Errorf("init ca in %s: %w: %s", dir, pki.ErrExists, pki.CACertFile)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("init ca: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("init ca: generate key: %w", err)
	}
	req := &csr.CertificateRequest{
		CN: commonName,
		CA: &csr.CAConfig{Expiry: caValidity, PathLength: caPathLen},
	}
	certPEM, _, err := initca.NewFromSigner(req, key)
	if err != nil {
		return nil, fmt.Errorf("init ca %q: %w", commonName, err)
	}
	certs, err := pki.ParseCertificatesPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("init ca: parse root: %w", err)
	}
	// Key first: a crash in between leaves a key without ca.pem, and a retry
	// simply overwrites it; the other order would leave a root without a key.
	if err := pki.WriteKey(filepath.Join(dir, caKeyFile), key); err != nil {
		return nil, fmt.Errorf("init ca: %w", err)
	}
	if err := pki.WriteCertificatesPEM(filepath.Join(dir, pki.CACertFile), certs[0]); err != nil {
		return nil, fmt.Errorf("init ca: %w", err)
	}
	return newCA(dir, certs[0], key)
}

// Open loads the CA kept in dir and checks that its key matches its
// certificate.
func Open(dir string) (*CA, error) {
	certs, err := pki.LoadCertificates(filepath.Join(dir, pki.CACertFile))
	if err != nil {
		return nil, fmt.Errorf("open ca: %w", err)
	}
	if len(certs) != 1 {
		return nil, fmt.Errorf("open ca: %s holds %d certificates, want 1", pki.CACertFile, len(certs))
	}
	key, err := pki.LoadKey(filepath.Join(dir, caKeyFile))
	if err != nil {
		return nil, fmt.Errorf("open ca: %w", err)
	}
	return newCA(dir, certs[0], key)
}

func newCA(dir string, cert *x509.Certificate, key crypto.Signer) (*CA, error) {
	if !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("open ca %s: %s is not a CA certificate", dir, pki.CACertFile)
	}
	if !pki.PublicKeysEqual(cert.PublicKey, key.Public()) {
		return nil, fmt.Errorf("open ca %s: %s does not match %s", dir, caKeyFile, pki.CACertFile)
	}
	s, err := local.NewSigner(key, cert, signer.DefaultSigAlgo(key), signingPolicy())
	if err != nil {
		return nil, fmt.Errorf("open ca %s: signer: %w", dir, err)
	}
	return &CA{dir: dir, cert: cert, key: key, signer: s}, nil
}

// Certificate returns the CA's root certificate.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }
