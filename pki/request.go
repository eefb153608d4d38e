package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"

	"kurier.dev/kurier/address"
)

// Certificate signing requests let participants keep their private keys
// on their own machines: NewParticipantRequest makes the keys and the
// CSRs there, the CA checks and signs the CSRs (ParseRequest, then
// ca.CA.IssueRequests), and the certificates it hands back complete the
// participant's identity folder.

// maxCSRFile caps a CSR file: a P-256 or RSA-4096 CSR is under 2 KiB.
const maxCSRFile = 64 << 10

// encKeyBits is the RSA size of participants' encryption keys: BSI
// TR-02102 asks for at least 3072 bits.
const encKeyBits = 3072

// Key sizes a participant's encryption key may have: BSI TR-02102's
// minimum, up to a size whose decryption cost is still bounded.
const (
	minEncKeyBits = encKeyBits
	maxEncKeyBits = 4096
)

// ParticipantRequest names the files NewParticipantRequest wrote.
type ParticipantRequest struct {
	// CSR is dir/csr.pem, the request for the signing certificate
	// (cert.pem), for the key in dir/key.pem.
	CSR string
	// EncCSR is dir/enc-csr.pem, the request for the encryption
	// certificate (enc-cert.pem), for the key in dir/enc-key.pem.
	EncCSR string
}

// NewParticipantRequest makes, on the participant's own machine, the keys
// of a participant identity in dir and a certificate signing request for
// each: key.pem (ECDSA P-256) with csr.pem, and enc-key.pem (RSA-3072)
// with enc-csr.pem, the same key types the CA makes (NewParticipantKeys).
// Each CSR names addr as its subject's common name and as its email SAN.
// Keys are 0600, a new dir 0700; only the CSRs go to the CA, whose
// IssueRequests (package pki/ca) returns cert.pem, enc-cert.pem and ca.pem
// for dir. It refuses with
// ErrExists rather than replace a key or certificate in dir.
func NewParticipantRequest(dir, addr string) (ParticipantRequest, error) {
	if _, err := address.Parse(addr); err != nil {
		return ParticipantRequest{}, fmt.Errorf("participant request: %w", err)
	}
	key, encKey, err := NewParticipantKeys(dir)
	if err != nil {
		return ParticipantRequest{}, fmt.Errorf("participant request %s: %w", addr, err)
	}
	r := ParticipantRequest{CSR: filepath.Join(dir, csrFile), EncCSR: filepath.Join(dir, encCSRFile)}
	// Keys first: a CSR on disk always has its key beside it.
	for _, f := range []struct {
		key       crypto.Signer
		keyPath   string
		csrPath   string
		signature x509.SignatureAlgorithm
	}{
		{encKey, filepath.Join(dir, EncKeyFile), r.EncCSR, x509.SHA256WithRSA},
		{key, filepath.Join(dir, KeyFile), r.CSR, x509.ECDSAWithSHA256},
	} {
		if err := WriteKey(f.keyPath, f.key); err != nil {
			return ParticipantRequest{}, fmt.Errorf("participant request %s: %w", addr, err)
		}
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
			Subject:            pkix.Name{CommonName: addr},
			EmailAddresses:     []string{addr},
			SignatureAlgorithm: f.signature,
		}, f.key)
		if err != nil {
			return ParticipantRequest{}, fmt.Errorf("participant request %s: create csr: %w", addr, err)
		}
		if err := WriteFileAtomic(f.csrPath, pem.EncodeToMemory(&pem.Block{Type: pemCSR, Bytes: der}), 0o644); err != nil {
			return ParticipantRequest{}, fmt.Errorf("participant request %s: %w", addr, err)
		}
	}
	return r, nil
}

// NewParticipantKeys makes dir ready for a new participant identity
// (PrepareIdentityDir: created 0700, ErrExists if it holds a key or
// certificate already) and generates the participant's two keys: key, ECDSA
// P-256, for signing and TLS, and encKey, RSA-3072, for encryption. It
// writes nothing; the caller stores the keys.
func NewParticipantKeys(dir string) (key *ecdsa.PrivateKey, encKey *rsa.PrivateKey, err error) {
	if err := PrepareIdentityDir(dir, CertFile, KeyFile, EncCertFile, EncKeyFile); err != nil {
		return nil, nil, err
	}
	if key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	if encKey, err = rsa.GenerateKey(rand.Reader, encKeyBits); err != nil {
		return nil, nil, fmt.Errorf("generate encryption key: %w", err)
	}
	return key, encKey, nil
}

// Request is a participant's certificate signing request that
// ParseRequest accepted.
type Request struct {
	// Address is the participant's address: the CSR's subject common name.
	Address string
	// Encryption is true for an RSA encryption key (which becomes
	// enc-cert.pem), false for an ECDSA P-256 signing key (cert.pem).
	Encryption bool
	csr        *x509.CertificateRequest
}

// CSR returns the parsed certificate signing request, whose signature
// ParseRequest verified; nil for a Request not made by ParseRequest.
func (r *Request) CSR() *x509.CertificateRequest { return r.csr }

// LoadRequest reads and checks the CSR in the PEM file at path (see
// ParseRequest).
func LoadRequest(path string) (*Request, error) {
	data, err := readFileMax(path, maxCSRFile)
	var pathErr *fs.PathError
	if errors.As(err, &pathErr) {
		return nil, fmt.Errorf("load request: %w", err) // not there, not readable: no judgement of the CSR
	}
	if err != nil {
		return nil, fmt.Errorf("load request: %w: %w", ErrBadCSR, err)
	}
	r, err := ParseRequest(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return r, nil
}

// ParseRequest checks one PEM certificate signing request of a
// participant: its own signature must verify (so whoever made it holds the
// key), its key must be ECDSA P-256 (a signing key) or RSA of 3072 to 4096
// bits with exponent 65537 (an encryption key), and its subject common
// name must be a valid participant address. Errors wrap ErrBadCSR.
//
// Security: the CSR proves possession of its key, not the right to the
// address; the CA operator must know that the request comes from that
// participant. Everything else a CSR may ask for (other subject fields,
// SANs, key usages, CA status, any extension) is ignored: the CA's
// IssueRequests takes only the key and the address.
func ParseRequest(data []byte) (*Request, error) {
	if len(data) > maxCSRFile {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrBadCSR, len(data), maxCSRFile)
	}
	block, rest := pem.Decode(data)
	if block == nil || (block.Type != pemCSR && block.Type != "NEW CERTIFICATE REQUEST") {
		return nil, fmt.Errorf("%w: no PEM %q block", ErrBadCSR, pemCSR)
	}
	if next, _ := pem.Decode(rest); next != nil {
		return nil, fmt.Errorf("%w: more than one PEM block; give one CSR per file", ErrBadCSR)
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: its signature does not verify with the key it carries (damaged, or not made with that key): %w", ErrBadCSR, err)
	}
	r := &Request{Address: csr.Subject.CommonName, csr: csr}
	switch k := csr.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return nil, fmt.Errorf("%w: signing key on curve %s; Kurier accepts ECDSA P-256", ErrBadCSR, k.Curve.Params().Name)
		}
	case *rsa.PublicKey:
		if n := k.N.BitLen(); n < minEncKeyBits || n > maxEncKeyBits || k.E != 65537 {
			return nil, fmt.Errorf("%w: RSA-%d key with exponent %d; Kurier accepts encryption keys of %d to %d bits with exponent 65537",
				ErrBadCSR, n, k.E, minEncKeyBits, maxEncKeyBits)
		}
		r.Encryption = true
	default:
		return nil, fmt.Errorf("%w: %T key; Kurier accepts ECDSA P-256 signing keys and RSA encryption keys", ErrBadCSR, csr.PublicKey)
	}
	if _, err := address.Parse(r.Address); err != nil {
		return nil, fmt.Errorf("%w: subject common name must be the participant's address: %w", ErrBadCSR, err)
	}
	return r, nil
}
