package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cloudflare/cfssl/config"
	"github.com/cloudflare/cfssl/signer"

	"kurier.dev/kurier/address"
	"kurier.dev/kurier/pki"
)

// Signing profiles of the CA. Each names exactly the usages one kind of
// certificate needs; none may issue a CA certificate (cfssl would let a
// CSR with a CA extension through a path-length-0 issuer, so leaf profiles
// have no CA constraint and copy nothing but the public key from the CSR).
const (
	profileNode                  = "node"
	profileParticipantSigning    = "participant-signing"
	profileParticipantEncryption = "participant-encryption"
)

// leafValidity is the lifetime of node and participant certificates.
const leafValidity = 2 * 365 * 24 * time.Hour

func signingPolicy() *config.Signing {
	leaf := func(usages ...string) *config.SigningProfile {
		return &config.SigningProfile{
			Usage:        usages,
			Expiry:       leafValidity,
			ExpiryString: leafValidity.String(),
			CAConstraint: config.CAConstraint{IsCA: false},
			// Subject and SANs come from the SignRequest, which the CA builds
			// from validated names; the CSR contributes only its key.
			CSRWhitelist: &config.CSRWhitelist{PublicKey: true, PublicKeyAlgorithm: true, SignatureAlgorithm: true},
		}
	}
	return &config.Signing{
		Profiles: map[string]*config.SigningProfile{
			// Nodes sign evidence as CMS: emailProtection lets OpenSSL's
			// S/MIME purpose check accept it without -purpose any.
			profileNode:                  leaf("digital signature", "server auth", "client auth", "email protection"),
			profileParticipantSigning:    leaf("digital signature", "client auth", "email protection"),
			profileParticipantEncryption: leaf("key encipherment", "data encipherment", "email protection"),
		},
		// The default profile has no usages, so cfssl refuses to sign with
		// it: every certificate must name its profile.
		Default: &config.SigningProfile{Expiry: leafValidity, ExpiryString: leafValidity.String()},
	}
}

// IssueNode creates a node identity in dir: an ECDSA P-256 key and a
// certificate for server and client authentication whose DNS SANs are
// domains (CN = the first domain), valid for two years. It writes
// dir/cert.pem, dir/key.pem (0600) and dir/ca.pem, and refuses with
// pki.ErrExists rather than replace an existing identity's files.
func (ca *CA) IssueNode(dir string, domains []string) (*pki.Identity, error) {
	if len(domains) == 0 {
		return nil, fmt.Errorf("issue node in %s: no domains", dir)
	}
	for i, d := range domains {
		if err := address.CheckDomain(d); err != nil {
			return nil, fmt.Errorf("issue node %s: %w", d, err)
		}
		if slices.Contains(domains[:i], d) {
			return nil, fmt.Errorf("issue node %s: domain listed twice", d)
		}
	}
	if err := pki.PrepareIdentityDir(dir, pki.CertFile, pki.KeyFile); err != nil {
		return nil, fmt.Errorf("issue node %s: %w", domains[0], err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("issue node %s: generate key: %w", domains[0], err)
	}
	cert, err := ca.issue(key, profileNode, domains[0], domains)
	if err != nil {
		return nil, fmt.Errorf("issue node %s: %w", domains[0], err)
	}
	// Check what cfssl produced against what we asked for: it decides the
	// SAN type of each host itself.
	p, err := pki.PeerOf(cert)
	if err != nil || p.Kind != pki.KindNode || !slices.Equal(p.Domains, domains) {
		return nil, fmt.Errorf("issue node %s: issued certificate has the wrong shape (%v): %v", domains[0], p, err)
	}
	id := &pki.Identity{Cert: cert, Key: key, Roots: []*x509.Certificate{ca.cert}}
	if err := id.Write(dir); err != nil {
		return nil, fmt.Errorf("issue node %s: %w", domains[0], err)
	}
	return id, nil
}

// IssueParticipant creates a participant identity in dir with two
// certificates, each with exactly one email SAN and CN = addr, kept apart
// as OSCI and the DVDV do:
//
//   - signing (cert.pem, key.pem): ECDSA P-256, client auth and email
//     protection, for mutual TLS and signatures;
//   - encryption (enc-cert.pem, enc-key.pem): RSA-3072, key and data
//     encipherment and email protection, which senders encrypt to.
//
// It also writes dir/ca.pem. Keys are 0600, a new dir 0700. It refuses with
// pki.ErrExists rather than replace an existing identity's files.
func (ca *CA) IssueParticipant(dir string, addr string) (*pki.Identity, error) {
	if _, err := address.Parse(addr); err != nil {
		return nil, fmt.Errorf("issue participant: %w", err)
	}
	key, encKey, err := pki.NewParticipantKeys(dir)
	if err != nil {
		return nil, fmt.Errorf("issue participant %s: %w", addr, err)
	}
	cert, err := ca.issue(key, profileParticipantSigning, addr, []string{addr})
	if err != nil {
		return nil, fmt.Errorf("issue participant %s: signing certificate: %w", addr, err)
	}
	if err := checkParticipantCert(cert, addr, false); err != nil {
		return nil, fmt.Errorf("issue participant %s: %w", addr, err)
	}
	encCert, err := ca.issue(encKey, profileParticipantEncryption, addr, []string{addr})
	if err != nil {
		return nil, fmt.Errorf("issue participant %s: encryption certificate: %w", addr, err)
	}
	if err := checkParticipantCert(encCert, addr, true); err != nil {
		return nil, fmt.Errorf("issue participant %s: %w", addr, err)
	}
	id := &pki.Identity{
		Cert: cert, Key: key,
		EncCert: encCert, EncKey: encKey,
		Roots: []*x509.Certificate{ca.cert},
	}
	if err := id.Write(dir); err != nil {
		return nil, fmt.Errorf("issue participant %s: %w", addr, err)
	}
	return id, nil
}

// checkParticipantCert checks what cfssl produced against what the CA
// asked for: it decides the SAN type of each host itself. A signing
// certificate must read as the participant addr (pki.PeerOf); an encryption
// certificate, which has no client auth, must carry addr as its one SAN.
func checkParticipantCert(cert *x509.Certificate, addr string, encryption bool) error {
	if encryption {
		if !slices.Equal(cert.EmailAddresses, []string{addr}) || len(cert.DNSNames)+len(cert.IPAddresses)+len(cert.URIs) > 0 {
			return errors.New("issued encryption certificate has the wrong SANs")
		}
		return nil
	}
	if p, err := pki.PeerOf(cert); err != nil || p.Kind != pki.KindParticipant || p.Address != addr {
		return fmt.Errorf("issued certificate has the wrong shape (%v): %v", p, err)
	}
	return nil
}

// issue has cfssl sign a certificate for key under profile. The CSR is
// ours, made only to carry the key to cfssl; subject and SANs are set by
// the SignRequest.
func (ca *CA) issue(key crypto.Signer, profile, cn string, hosts []string) (*x509.Certificate, error) {
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}, key)
	if err != nil {
		return nil, fmt.Errorf("create csr: %w", err)
	}
	csrPEM := pem.EncodeToMemory(&pem.Block{Type: pemCSR, Bytes: csrDER})
	return ca.sign(csrPEM, key.Public(), profile, cn, hosts)
}

// sign has cfssl sign the CSR csrPEM, whose key is pub, under profile. The
// profiles' CSR whitelist takes only the key from the CSR; subject and
// SANs are set by the SignRequest. It checks the result: signed by this
// CA, not a CA, and for pub.
func (ca *CA) sign(csrPEM []byte, pub crypto.PublicKey, profile, cn string, hosts []string) (*x509.Certificate, error) {
	// A leaf must not outlive its root: chains would fail on that day anyway.
	notAfter := time.Now().Add(leafValidity).UTC()
	if notAfter.After(ca.cert.NotAfter) {
		notAfter = ca.cert.NotAfter
	}
	certPEM, err := ca.signer.Sign(signer.SignRequest{
		Hosts:    hosts,
		Request:  string(csrPEM),
		Subject:  &signer.Subject{CN: cn},
		Profile:  profile,
		NotAfter: notAfter,
	})
	if err != nil {
		return nil, fmt.Errorf("sign with profile %s: %w", profile, err)
	}
	certs, err := pki.ParseCertificatesPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("parse issued certificate: %w", err)
	}
	cert := certs[0]
	if cert.IsCA || cert.CheckSignatureFrom(ca.cert) != nil || !pki.PublicKeysEqual(cert.PublicKey, pub) {
		return nil, fmt.Errorf("issued certificate for %s failed the CA's own checks", cn)
	}
	return cert, nil
}
