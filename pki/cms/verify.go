package cms

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/subtle"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"time"
)

// Verifier verifies a certificate chain at a given time for the given
// extended key usages, revocation included, and returns the chain.
// *pki.TrustStore is the Verifier of every node and client.
type Verifier interface {
	Verify(cert *x509.Certificate, intermediates []*x509.Certificate, at time.Time, usages ...x509.ExtKeyUsage) ([]*x509.Certificate, error)
}

// Policy is what Verify requires of a signature besides the cryptography.
type Policy struct {
	// Trust verifies the signer's chain; required.
	Trust Verifier
	// At is the time the chain must be valid at: now, or a time the caller
	// can prove (a log entry's). Required; never the signer's claimed time.
	At time.Time
	// KeyUsages are the EKUs the signer's chain must allow, e.g.
	// x509.ExtKeyUsageEmailProtection for participants. None: any.
	KeyUsages []x509.ExtKeyUsage
	// MaxSize caps the DER input (of Verify), or the content (of a
	// VerifyReader); 0 means DefaultMaxSignedSize.
	MaxSize int
}

func (p *Policy) check() error {
	if p.Trust == nil {
		return errors.New("policy has no Verifier")
	}
	if p.At.IsZero() {
		return errors.New("policy has no verification time")
	}
	return nil
}

func (p *Policy) maxSize() int {
	if p.MaxSize <= 0 {
		return DefaultMaxSignedSize
	}
	return p.MaxSize
}

// Verified is a verified signature: the content and who signed it.
type Verified struct {
	Content     []byte
	Signer      *x509.Certificate
	Chain       []*x509.Certificate // from Signer to a root; nil from ParseSigned
	SigningTime time.Time           // as claimed by the signer; zero if absent. Not evidence of anything.
}

// Verify checks DER SignedData with attached content against p and returns
// the content and its signer. It requires exactly one signer whose
// certificate is embedded, a SHA-256 or stronger digest, content type
// id-data, a matching content digest and a valid signature, a claimed
// signing time (if any) within the signer's validity, and a signer chain
// that p.Trust accepts at p.At for p.KeyUsages (which covers revocation).
// A detached signature is refused (use VerifyDetached). BER (indefinite
// lengths, content in pieces) is read as well, as a VerifyReader reads it.
//
// Errors wrap ErrTooLarge, ErrMalformed, ErrNoSigner, ErrSignature or
// ErrUntrusted (with the Verifier's error, e.g. pki.ErrRevoked).
// Security-sensitive: this is the gate for every signed envelope and every
// evidence.
func Verify(der []byte, p Policy) (*Verified, error) {
	v, err := verify(der, nil, false, p)
	if err != nil {
		return nil, fmt.Errorf("verify signed data: %w", err)
	}
	return v, nil
}

// VerifyDetached is Verify for a detached signature der over content.
// SignedData with embedded content is refused, so that what was verified is
// always the content the caller holds.
func VerifyDetached(der, content []byte, p Policy) (*Verified, error) {
	v, err := verify(der, content, true, p)
	if err != nil {
		return nil, fmt.Errorf("verify detached signature: %w", err)
	}
	return v, nil
}

func verify(der, content []byte, detached bool, p Policy) (*Verified, error) {
	if err := p.check(); err != nil {
		return nil, err
	}
	sd, signer, err := intact(der, content, detached, p.maxSize())
	if err != nil {
		return nil, err
	}
	chain, err := sd.trust(signer, p)
	if err != nil {
		return nil, err
	}
	return &Verified{Content: sd.content, Signer: signer, Chain: chain, SigningTime: sd.si.signingTime}, nil
}

// trust verifies signer's chain through p.Trust at p.At, with the other
// embedded certificates as intermediates; never at the signing time the
// signer claims, which would let an expired certificate sign back-dated.
func (s *signedData) trust(signer *x509.Certificate, p Policy) ([]*x509.Certificate, error) {
	var intermediates []*x509.Certificate
	for _, c := range s.certs {
		if c != signer {
			intermediates = append(intermediates, c)
		}
	}
	chain, err := p.Trust.Verify(signer, intermediates, p.At, p.KeyUsages...)
	if err != nil {
		return nil, fmt.Errorf("%w: %q: %w", ErrUntrusted, signer.Subject, err)
	}
	return chain, nil
}

// intact parses der and checks everything but the signer's chain: one
// signer with an embedded certificate, content attached or (detached)
// given, the algorithms and content type, and the signature and digest.
// The content returned is the caller's (detached) or a copy.
func intact(der, content []byte, detached bool, maxSize int) (*signedData, *x509.Certificate, error) {
	sd, err := parse(der, maxSize)
	if err != nil {
		return nil, nil, err
	}
	signer, err := sd.signerCert()
	if err != nil {
		return nil, nil, err
	}
	if detached {
		if len(sd.content) > 0 {
			return nil, nil, fmt.Errorf("%w: signature carries its content; use Verify", ErrMalformed)
		}
		if len(content) == 0 {
			return nil, nil, errors.New("no content to verify the signature over")
		}
		sd.content = content
	} else if len(sd.content) == 0 {
		return nil, nil, fmt.Errorf("%w: no content (a detached signature? use VerifyDetached)", ErrMalformed)
	}
	digestOf := func(h crypto.Hash) []byte {
		d := h.New()
		d.Write(sd.content)
		return d.Sum(nil)
	}
	if err := sd.check(signer, digestOf, sd.content); err != nil {
		return nil, nil, err
	}
	if !detached {
		sd.content = bytes.Clone(sd.content) // not a slice of the caller's der
	}
	return sd, signer, nil
}

// check checks the SignerInfo against signer's key and the content, whose
// digest digestOf returns (nil for a hash not computed). content is the
// content itself, or nil when it was streamed.
func (s *signedData) check(signer *x509.Certificate, digestOf func(crypto.Hash) []byte, content []byte) error {
	si := s.si
	h := hashOf(si.digestOID)
	if h == 0 {
		return fmt.Errorf("%w: digest algorithm %s refused, want SHA-256 or stronger", ErrSignature, oidName(si.digestOID))
	}
	alg, err := signatureAlgorithm(si.sigOID, si.sigParams, h)
	if err != nil {
		return err
	}
	if !s.contentType.Equal(oidData) {
		return fmt.Errorf("%w: content type %s, want id-data", ErrMalformed, oidName(s.contentType))
	}
	if !si.hasAttrs { // a signature directly over the content (openssl -noattr)
		if content != nil {
			err = signer.CheckSignature(alg, content, si.signature)
		} else {
			err = checkDigestSignature(signer, alg, digestOf, si.signature)
		}
		if err != nil {
			return fmt.Errorf("%w: %v", ErrSignature, err)
		}
		return nil
	}
	if si.contentType == nil {
		return fmt.Errorf("%w: signed attributes without a content type", ErrMalformed)
	}
	if !si.contentType.Equal(oidData) {
		return fmt.Errorf("%w: signed content type %s, want id-data", ErrMalformed, oidName(si.contentType))
	}
	if si.digest == nil {
		return fmt.Errorf("%w: signed attributes without a message digest", ErrSignature)
	}
	d := digestOf(h)
	if d == nil {
		return fmt.Errorf("%w: signer's digest algorithm %s is not among the SignedData's digest algorithms", ErrSignature, oidName(si.digestOID))
	}
	if subtle.ConstantTimeCompare(d, si.digest) != 1 {
		return fmt.Errorf("%w: message digest does not match the content", ErrSignature)
	}
	if t := si.signingTime; !t.IsZero() && (t.After(signer.NotAfter) || t.Before(signer.NotBefore)) {
		return fmt.Errorf("%w: signing time %s is outside the signer's validity %s to %s", ErrSignature,
			t.Format(time.RFC3339), signer.NotBefore.Format(time.RFC3339), signer.NotAfter.Format(time.RFC3339))
	}
	if err := signer.CheckSignature(alg, si.attrs, si.signature); err != nil {
		return fmt.Errorf("%w: %v", ErrSignature, err)
	}
	return nil
}

// signatureAlgorithm maps a SignerInfo's signatureAlgorithm and digest to
// what x509 verifies. SHA-1 and DSA are refused (x509 itself would still
// check some SHA-1 signatures), and so is RSA-PSS, which no Kurier signer
// writes. RSA and id-ecPublicKey name no hash of their own and take the
// digest algorithm's, as RFC 5652 section 5.5 and RFC 5753 allow.
func signatureAlgorithm(oid asn1.ObjectIdentifier, params []byte, h crypto.Hash) (x509.SignatureAlgorithm, error) {
	i := 0 // SHA-256; h is one of the three
	switch h {
	case crypto.SHA384:
		i = 1
	case crypto.SHA512:
		i = 2
	}
	byDigest := func(algs [3]x509.SignatureAlgorithm) x509.SignatureAlgorithm { return algs[i] }
	ecdsaAlgs := [3]x509.SignatureAlgorithm{x509.ECDSAWithSHA256, x509.ECDSAWithSHA384, x509.ECDSAWithSHA512}
	rsaAlgs := [3]x509.SignatureAlgorithm{x509.SHA256WithRSA, x509.SHA384WithRSA, x509.SHA512WithRSA}
	for _, a := range []struct {
		oid  asn1.ObjectIdentifier
		alg  x509.SignatureAlgorithm
		null bool // parameters may be NULL
	}{
		{oidECDSASHA256, x509.ECDSAWithSHA256, false},
		{oidECDSASHA384, x509.ECDSAWithSHA384, false},
		{oidECDSASHA512, x509.ECDSAWithSHA512, false},
		{oidECPublicKey, byDigest(ecdsaAlgs), true},
		{oidRSA, byDigest(rsaAlgs), true},
		{oidRSASHA256, byDigest(rsaAlgs), true},
		{oidRSASHA384, byDigest(rsaAlgs), true},
		{oidRSASHA512, byDigest(rsaAlgs), true},
		{oidEd25519, x509.PureEd25519, false},
		{oidMLDSA44, x509.MLDSA44, false},
		{oidMLDSA65, x509.MLDSA65, false},
		{oidMLDSA87, x509.MLDSA87, false},
	} {
		if !oid.Equal(a.oid) {
			continue
		}
		if len(params) != 0 && !(a.null && nullOrAbsent(params)) {
			return 0, fmt.Errorf("%w: signature algorithm %s with parameters", ErrSignature, oidName(oid))
		}
		return a.alg, nil
	}
	return 0, fmt.Errorf("%w: signature algorithm %s refused", ErrSignature, oidName(oid))
}

// checkDigestSignature verifies a signature made directly over content
// that was streamed, from its digest: possible for ECDSA and RSA
// PKCS #1 v1.5, which sign a hash, and not for Ed25519 or ML-DSA, which
// sign the message itself.
func checkDigestSignature(signer *x509.Certificate, alg x509.SignatureAlgorithm, digestOf func(crypto.Hash) []byte, sig []byte) error {
	var h crypto.Hash
	switch alg {
	case x509.ECDSAWithSHA256, x509.SHA256WithRSA:
		h = crypto.SHA256
	case x509.ECDSAWithSHA384, x509.SHA384WithRSA:
		h = crypto.SHA384
	case x509.ECDSAWithSHA512, x509.SHA512WithRSA:
		h = crypto.SHA512
	default:
		return fmt.Errorf("a %s signature without signed attributes cannot be verified as it streams; use Verify", alg)
	}
	d := digestOf(h)
	if d == nil {
		return fmt.Errorf("content not hashed with %s: it is not among the SignedData's digest algorithms", h)
	}
	switch pub := signer.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if alg == x509.ECDSAWithSHA256 || alg == x509.ECDSAWithSHA384 || alg == x509.ECDSAWithSHA512 {
			if !ecdsa.VerifyASN1(pub, d, sig) {
				return errors.New("ECDSA verification failure")
			}
			return nil
		}
	case *rsa.PublicKey:
		if alg == x509.SHA256WithRSA || alg == x509.SHA384WithRSA || alg == x509.SHA512WithRSA {
			return rsa.VerifyPKCS1v15(pub, h, d, sig)
		}
	}
	return fmt.Errorf("signature algorithm %s does not fit the signer's %T key", alg, signer.PublicKey)
}

// CheckSignature checks only that attached SignedData der is intact: one
// signer whose certificate is embedded, SHA-256 or stronger, and a
// signature and content digest that match the content. It checks NOT who
// signed, nor any chain or time; never accept a signature on it alone. It
// lets a report tell "altered after signing" apart from problems with the
// signer, and learn the signed content's own time before the full Verify
// at that time.
func CheckSignature(der []byte) (*Verified, error) {
	sd, signer, err := intact(der, nil, false, DefaultMaxSignedSize)
	if err != nil {
		return nil, fmt.Errorf("check signature: %w", err)
	}
	return &Verified{Content: sd.content, Signer: signer, SigningTime: sd.si.signingTime}, nil
}

// ParseSigned returns the content and the signer's certificate of DER
// SignedData WITHOUT VERIFYING ANYTHING: not the signature, not the digest,
// not the chain. It is for display only (showing what a refused message
// claims to be); never act on its result. Input is capped at
// DefaultMaxSignedSize.
func ParseSigned(der []byte) (*Verified, error) {
	sd, err := parse(der, DefaultMaxSignedSize)
	if err != nil {
		return nil, fmt.Errorf("parse signed data: %w", err)
	}
	signer, err := sd.signerCert()
	if err != nil {
		return nil, fmt.Errorf("parse signed data: %w", err)
	}
	return &Verified{Content: bytes.Clone(sd.content), Signer: signer, SigningTime: sd.si.signingTime}, nil
}
