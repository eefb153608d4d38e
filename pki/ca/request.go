package ca

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"kurier.dev/kurier/pki"
)

// Participants that keep their keys on their own machines send only
// certificate signing requests (pki.NewParticipantRequest); the CA checks
// them (pki.ParseRequest) and signs them here, and the certificates it
// hands back complete the participant's identity folder.

// IssuedCert is a certificate IssueRequests wrote.
type IssuedCert struct {
	Path       string
	Cert       *x509.Certificate
	Encryption bool
}

// IssueRequests signs one participant's requests, checked by pki.ParseRequest
// (a signing one, an encryption one, or both), and writes the certificates
// into dir as an identity folder holds them: cert.pem for the signing key,
// enc-cert.pem for the encryption key, and ca.pem, unless dir already
// holds this CA's ca.pem. The certificates get the same profiles as
// IssueParticipant's, with the request's address as their one SAN and
// common name; from the CSRs only their keys and that address are taken.
// Once dir also holds the participant's key.pem and enc-key.pem,
// pki.LoadIdentity loads it.
//
// It refuses with pki.ErrExists rather than replace a certificate in dir, and
// refuses requests that name different addresses, two requests of the same
// kind, a key file in dir that does not belong to its request, a
// certificate in dir for another address, and a ca.pem of another CA.
func (ca *CA) IssueRequests(dir string, reqs ...*pki.Request) ([]IssuedCert, error) {
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
		profile, file := profileParticipantSigning, pki.CertFile
		if r.Encryption {
			profile, file = profileParticipantEncryption, pki.EncCertFile
		}
		csrPEM := pem.EncodeToMemory(&pem.Block{Type: pemCSR, Bytes: r.CSR().Raw})
		cert, err := ca.sign(csrPEM, r.CSR().PublicKey, profile, addr, []string{addr})
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
	// As Identity.Write: enc-cert.pem, ca.pem, and cert.pem last, so that
	// a folder with a signing certificate has its trust anchor too.
	slices.SortFunc(out, func(a, b IssuedCert) int { return cmpBool(b.Encryption, a.Encryption) })
	for _, c := range out {
		if !c.Encryption && writeRoot {
			if err := pki.WriteCertificatesPEM(filepath.Join(dir, pki.CACertFile), ca.cert); err != nil {
				return nil, fmt.Errorf("issue requests for %s: %w", addr, err)
			}
			writeRoot = false
		}
		data := pem.EncodeToMemory(&pem.Block{Type: pemCertificate, Bytes: c.Cert.Raw})
		if err := pki.WriteFileExclusive(c.Path, data, 0o644); err != nil {
			return nil, fmt.Errorf("issue requests for %s: %w", addr, err)
		}
	}
	if writeRoot {
		if err := pki.WriteCertificatesPEM(filepath.Join(dir, pki.CACertFile), ca.cert); err != nil {
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
func checkRequests(dir string, reqs []*pki.Request) error {
	if len(reqs) == 0 {
		return errors.New("no certificate request")
	}
	var kinds [2]int
	for _, r := range reqs {
		if r == nil || r.CSR() == nil {
			return errors.New("a request not made by ParseRequest")
		}
		if r.Address != reqs[0].Address {
			return fmt.Errorf("%w: requests for %s and %s; one participant at a time", pki.ErrBadCSR, reqs[0].Address, r.Address)
		}
		if r.Encryption {
			kinds[1]++
		} else {
			kinds[0]++
		}
	}
	if kinds[0] > 1 || kinds[1] > 1 {
		return fmt.Errorf("%w: two requests for the same kind of key; give one signing and one encryption request", pki.ErrBadCSR)
	}
	for _, r := range reqs {
		cert, key, other := pki.CertFile, pki.KeyFile, pki.EncCertFile
		if r.Encryption {
			cert, key, other = pki.EncCertFile, pki.EncKeyFile, pki.CertFile
		}
		if pki.FileExists(filepath.Join(dir, cert)) {
			return fmt.Errorf("%w: %s", pki.ErrExists, filepath.Join(dir, cert))
		}
		// In the participant's own folder, the key beside the request
		// must be the one it certifies.
		if keyPath := filepath.Join(dir, key); pki.FileExists(keyPath) {
			k, err := pki.LoadKey(keyPath)
			if err != nil {
				return err
			}
			if !pki.PublicKeysEqual(k.Public(), r.CSR().PublicKey) {
				return fmt.Errorf("%w: %s is not the key of the request for it", pki.ErrBadCSR, keyPath)
			}
		}
		if otherPath := filepath.Join(dir, other); pki.FileExists(otherPath) {
			certs, err := pki.LoadCertificates(otherPath)
			if err != nil {
				return err
			}
			if !slices.Equal(certs[0].EmailAddresses, []string{r.Address}) {
				return fmt.Errorf("%w: %s is for %v, the request for %s", pki.ErrBadCSR, otherPath, certs[0].EmailAddresses, r.Address)
			}
		}
	}
	return nil
}

// needsRoot reports whether dir lacks ca.pem, and refuses one that holds
// anything but this CA's certificate.
func (ca *CA) needsRoot(dir string) (bool, error) {
	path := filepath.Join(dir, pki.CACertFile)
	if !pki.FileExists(path) {
		return true, nil
	}
	roots, err := pki.LoadCertificates(path)
	if err != nil {
		return false, err
	}
	if len(roots) != 1 || !roots[0].Equal(ca.cert) {
		return false, fmt.Errorf("%s holds another CA's certificate; give the certificates another folder (-o)", path)
	}
	return false, nil
}
