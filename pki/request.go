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
	"os"
	"path/filepath"
	"slices"

	"kurier.dev/kurier/address"
)

// Certificate signing requests let participants keep their private keys
// on their own machines: NewParticipantRequest makes the keys and the
// CSRs there, the CA checks and signs the CSRs (ParseRequest,
// IssueRequests), and the certificates it hands back complete the
// participant's identity folder.

// maxCSRFile caps a CSR file: a P-256 or RSA-4096 CSR is under 2 KiB.
const maxCSRFile = 64 << 10

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
// with enc-csr.pem, the same key types IssueParticipant makes. Each CSR
// names addr as its subject's common name and as its email SAN. Keys are
// 0600, a new dir 0700; only the CSRs go to the CA, whose IssueRequests
// returns cert.pem, enc-cert.pem and ca.pem for dir. It refuses with
// ErrExists rather than replace a key or certificate in dir.
func NewParticipantRequest(dir, addr string) (ParticipantRequest, error) {
	if _, err := address.Parse(addr); err != nil {
		return ParticipantRequest{}, fmt.Errorf("participant request: %w", err)
	}
	if err := prepareIdentityDir(dir, certFile, keyFile, encCertFile, encKeyFile); err != nil {
		return ParticipantRequest{}, fmt.Errorf("participant request %s: %w", addr, err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return ParticipantRequest{}, fmt.Errorf("participant request %s: generate key: %w", addr, err)
	}
	encKey, err := rsa.GenerateKey(rand.Reader, encKeyBits)
	if err != nil {
		return ParticipantRequest{}, fmt.Errorf("participant request %s: generate encryption key: %w", addr, err)
	}
	r := ParticipantRequest{CSR: filepath.Join(dir, csrFile), EncCSR: filepath.Join(dir, encCSRFile)}
	// Keys first: a CSR on disk always has its key beside it.
	for _, f := range []struct {
		key       crypto.Signer
		keyPath   string
		csrPath   string
		signature x509.SignatureAlgorithm
	}{
		{encKey, filepath.Join(dir, encKeyFile), r.EncCSR, x509.SHA256WithRSA},
		{key, filepath.Join(dir, keyFile), r.CSR, x509.ECDSAWithSHA256},
	} {
		if err := writeKey(f.keyPath, f.key); err != nil {
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
		if err := writeFileAtomic(f.csrPath, pem.EncodeToMemory(&pem.Block{Type: pemCSR, Bytes: der}), 0o644); err != nil {
			return ParticipantRequest{}, fmt.Errorf("participant request %s: %w", addr, err)
		}
	}
	return r, nil
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
// SANs, key usages, CA status, any extension) is ignored: IssueRequests
// takes only the key and the address.
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

// IssuedCert is a certificate IssueRequests wrote.
type IssuedCert struct {
	Path       string
	Cert       *x509.Certificate
	Encryption bool
}

// IssueRequests signs one participant's requests, checked by ParseRequest
// (a signing one, an encryption one, or both), and writes the certificates
// into dir as an identity folder holds them: cert.pem for the signing key,
// enc-cert.pem for the encryption key, and ca.pem, unless dir already
// holds this CA's ca.pem. The certificates get the same profiles as
// IssueParticipant's, with the request's address as their one SAN and
// common name; from the CSRs only their keys and that address are taken.
// Once dir also holds the participant's key.pem and enc-key.pem,
// LoadIdentity loads it.
//
// It refuses with ErrExists rather than replace a certificate in dir, and
// refuses requests that name different addresses, two requests of the same
// kind, a key file in dir that does not belong to its request, a
// certificate in dir for another address, and a ca.pem of another CA.
func (ca *CA) IssueRequests(dir string, reqs ...*Request) ([]IssuedCert, error) {
	if err := checkRequests(dir, reqs); err != nil {
		return nil, fmt.Errorf("issue requests into %s: %w", dir, err)
	}
	addr := reqs[0].Address
	writeRoot, err := ca.needsRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("issue requests for %s: %w", addr, err)
	}
	var out []IssuedCert
	for _, r := range reqs {
		profile, file := profileParticipantSigning, certFile
		if r.Encryption {
			profile, file = profileParticipantEncryption, encCertFile
		}
		csrPEM := pem.EncodeToMemory(&pem.Block{Type: pemCSR, Bytes: r.csr.Raw})
		cert, err := ca.sign(csrPEM, r.csr.PublicKey, profile, addr, []string{addr})
		if err != nil {
			return nil, fmt.Errorf("issue request for %s: %w", addr, err)
		}
		if err := checkParticipantCert(cert, addr, r.Encryption); err != nil {
			return nil, fmt.Errorf("issue request for %s: %w", addr, err)
		}
		out = append(out, IssuedCert{Path: filepath.Join(dir, file), Cert: cert, Encryption: r.Encryption})
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("issue requests for %s: %w", addr, err)
	}
	// As Identity.write: enc-cert.pem, ca.pem, and cert.pem last, so that
	// a folder with a signing certificate has its trust anchor too.
	slices.SortFunc(out, func(a, b IssuedCert) int { return cmpBool(b.Encryption, a.Encryption) })
	for _, c := range out {
		if !c.Encryption && writeRoot {
			if err := WriteCertificatesPEM(filepath.Join(dir, caCertFile), ca.cert); err != nil {
				return nil, fmt.Errorf("issue requests for %s: %w", addr, err)
			}
			writeRoot = false
		}
		data := pem.EncodeToMemory(&pem.Block{Type: pemCertificate, Bytes: c.Cert.Raw})
		if err := writeFileExclusive(c.Path, data, 0o644); err != nil {
			return nil, fmt.Errorf("issue requests for %s: %w", addr, err)
		}
	}
	if writeRoot {
		if err := WriteCertificatesPEM(filepath.Join(dir, caCertFile), ca.cert); err != nil {
			return nil, fmt.Errorf("issue requests for %s: %w", addr, err)
		}
	}
	return out, nil
}

// cmpBool orders false before true.
func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}

// checkRequests checks that reqs are one participant's, at most one of
// each kind, and fit what dir already holds.
func checkRequests(dir string, reqs []*Request) error {
	if len(reqs) == 0 {
		return errors.New("no certificate request")
	}
	var kinds [2]int
	for _, r := range reqs {
		if r == nil || r.csr == nil {
			return errors.New("a request not made by ParseRequest")
		}
		if r.Address != reqs[0].Address {
			return fmt.Errorf("%w: requests for %s and %s; one participant at a time", ErrBadCSR, reqs[0].Address, r.Address)
		}
		if r.Encryption {
			kinds[1]++
		} else {
			kinds[0]++
		}
	}
	if kinds[0] > 1 || kinds[1] > 1 {
		return fmt.Errorf("%w: two requests for the same kind of key; give one signing and one encryption request", ErrBadCSR)
	}
	for _, r := range reqs {
		cert, key, other := certFile, keyFile, encCertFile
		if r.Encryption {
			cert, key, other = encCertFile, encKeyFile, certFile
		}
		if exists(filepath.Join(dir, cert)) {
			return fmt.Errorf("%w: %s", ErrExists, filepath.Join(dir, cert))
		}
		// In the participant's own folder, the key beside the request
		// must be the one it certifies.
		if keyPath := filepath.Join(dir, key); exists(keyPath) {
			k, err := loadKey(keyPath)
			if err != nil {
				return err
			}
			if !publicKeysEqual(k.Public(), r.csr.PublicKey) {
				return fmt.Errorf("%w: %s is not the key of the request for it", ErrBadCSR, keyPath)
			}
		}
		if otherPath := filepath.Join(dir, other); exists(otherPath) {
			certs, err := LoadCertificates(otherPath)
			if err != nil {
				return err
			}
			if !slices.Equal(certs[0].EmailAddresses, []string{r.Address}) {
				return fmt.Errorf("%w: %s is for %v, the request for %s", ErrBadCSR, otherPath, certs[0].EmailAddresses, r.Address)
			}
		}
	}
	return nil
}

// needsRoot reports whether dir lacks ca.pem, and refuses one that holds
// anything but this CA's certificate.
func (ca *CA) needsRoot(dir string) (bool, error) {
	path := filepath.Join(dir, caCertFile)
	if !exists(path) {
		return true, nil
	}
	roots, err := LoadCertificates(path)
	if err != nil {
		return false, err
	}
	if len(roots) != 1 || !roots[0].Equal(ca.cert) {
		return false, fmt.Errorf("%s holds another CA's certificate; give the certificates another folder (-o)", path)
	}
	return false, nil
}
