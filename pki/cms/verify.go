package cms

import (
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"time"

	"github.com/digitorus/pkcs7"
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
	// MaxSize caps the DER input; 0 means DefaultMaxSignedSize.
	MaxSize int
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
// certificate is embedded, a SHA-256 or stronger digest, a matching content
// digest and a valid signature, and a signer chain that p.Trust accepts at
// p.At for p.KeyUsages (which covers revocation). A detached signature is
// refused (use VerifyDetached).
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
	if p.Trust == nil {
		return nil, errors.New("policy has no Verifier")
	}
	if p.At.IsZero() {
		return nil, errors.New("policy has no verification time")
	}
	// With CurrentTime set pkcs7 takes its verifySignatureAtTime path, and
	// with Roots nil it skips its own chain check, which is done below
	// through p.Trust at p.At. pkcs7 still refuses a claimed signing time
	// outside the signer's validity.
	p7, signer, err := intact(der, content, detached, p.MaxSize, func(*x509.Certificate) time.Time { return p.At })
	if err != nil {
		return nil, err
	}
	var intermediates []*x509.Certificate
	for _, c := range p7.Certificates {
		if c != signer {
			intermediates = append(intermediates, c)
		}
	}
	chain, err := p.Trust.Verify(signer, intermediates, p.At, p.KeyUsages...)
	if err != nil {
		return nil, fmt.Errorf("%w: %q: %w", ErrUntrusted, signer.Subject, err)
	}
	return &Verified{Content: p7.Content, Signer: signer, Chain: chain, SigningTime: signingTime(p7)}, nil
}

// intact parses der and checks everything but the signer's chain: one
// signer with an embedded certificate, content attached or (detached)
// given, the algorithms and content type, and the signature and digest,
// verified as of at(signer).
func intact(der, content []byte, detached bool, maxSize int, at func(*x509.Certificate) time.Time) (*pkcs7.PKCS7, *x509.Certificate, error) {
	p7, err := parse(der, maxSize)
	if err != nil {
		return nil, nil, err
	}
	signer, err := onlySigner(p7)
	if err != nil {
		return nil, nil, err
	}
	if detached {
		if len(p7.Content) > 0 {
			return nil, nil, fmt.Errorf("%w: signature carries its content; use Verify", ErrMalformed)
		}
		if len(content) == 0 {
			return nil, nil, errors.New("no content to verify the signature over")
		}
		p7.Content = content
	} else if len(p7.Content) == 0 {
		return nil, nil, fmt.Errorf("%w: no content (a detached signature? use VerifyDetached)", ErrMalformed)
	}
	if err := checkAlgorithms(p7); err != nil {
		return nil, nil, err
	}
	if err := checkContentType(p7); err != nil {
		return nil, nil, err
	}
	err = protect(func() error { return p7.VerifyWithOpts(x509.VerifyOptions{CurrentTime: at(signer)}) })
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrSignature, err)
	}
	return p7, signer, nil
}

// CheckSignature checks only that attached SignedData der is intact: one
// signer whose certificate is embedded, SHA-256 or stronger, and a
// signature and content digest that match the content. It checks NOT who
// signed, nor any chain or time; never accept a signature on it alone. It
// lets a report tell "altered after signing" apart from problems with the
// signer, and learn the signed content's own time before the full Verify
// at that time.
func CheckSignature(der []byte) (*Verified, error) {
	// At the start of the signer's validity, so that only the mathematics
	// can fail.
	p7, signer, err := intact(der, nil, false, DefaultMaxSignedSize, func(c *x509.Certificate) time.Time { return c.NotBefore })
	if err != nil {
		return nil, fmt.Errorf("check signature: %w", err)
	}
	return &Verified{Content: p7.Content, Signer: signer, SigningTime: signingTime(p7)}, nil
}

// ParseSigned returns the content and the signer's certificate of DER
// SignedData WITHOUT VERIFYING ANYTHING: not the signature, not the digest,
// not the chain. It is for display only (showing what a refused message
// claims to be); never act on its result. Input is capped at
// DefaultMaxSignedSize.
func ParseSigned(der []byte) (*Verified, error) {
	p7, err := parse(der, DefaultMaxSignedSize)
	if err != nil {
		return nil, fmt.Errorf("parse signed data: %w", err)
	}
	signer, err := onlySigner(p7)
	if err != nil {
		return nil, fmt.Errorf("parse signed data: %w", err)
	}
	return &Verified{Content: p7.Content, Signer: signer, SigningTime: signingTime(p7)}, nil
}

// onlySigner returns the certificate named by the one SignerInfo.
func onlySigner(p7 *pkcs7.PKCS7) (*x509.Certificate, error) {
	switch n := len(p7.Signers); {
	case n == 0:
		return nil, fmt.Errorf("%w: no SignerInfo (not SignedData?)", ErrNoSigner)
	case n > 1:
		return nil, fmt.Errorf("%w: %d signers, want exactly one", ErrMalformed, n)
	}
	// GetOnlySigner matches the SignerInfo's issuer and serial against the
	// embedded certificates: the certificate we verify is the one that
	// signed.
	signer := p7.GetOnlySigner()
	if signer == nil {
		return nil, fmt.Errorf("%w: signer's certificate is not embedded", ErrNoSigner)
	}
	return signer, nil
}

// checkAlgorithms refuses digests below SHA-256 and signature algorithms
// bound to SHA-1. (pkcs7 would verify SHA-1 signatures, and Go's
// Certificate.CheckSignature accepts them too.)
func checkAlgorithms(p7 *pkcs7.PKCS7) error {
	si := p7.Signers[0]
	digest := si.DigestAlgorithm.Algorithm
	if !digest.Equal(pkcs7.OIDDigestAlgorithmSHA256) && !digest.Equal(pkcs7.OIDDigestAlgorithmSHA384) && !digest.Equal(pkcs7.OIDDigestAlgorithmSHA512) {
		return fmt.Errorf("%w: digest algorithm %s refused, want SHA-256 or stronger", ErrSignature, digest)
	}
	sig := si.DigestEncryptionAlgorithm.Algorithm
	for _, weak := range []asn1.ObjectIdentifier{
		pkcs7.OIDDigestAlgorithmECDSASHA1, pkcs7.OIDEncryptionAlgorithmRSASHA1,
		pkcs7.OIDDigestAlgorithmDSA, pkcs7.OIDDigestAlgorithmDSASHA1,
	} {
		if sig.Equal(weak) {
			return fmt.Errorf("%w: signature algorithm %s refused", ErrSignature, sig)
		}
	}
	return nil
}

// checkContentType checks the signed content-type attribute, which pkcs7
// leaves unchecked: Kurier signs plain data only.
func checkContentType(p7 *pkcs7.PKCS7) error {
	if len(p7.Signers[0].AuthenticatedAttributes) == 0 {
		return nil // signature directly over the content (openssl -noattr)
	}
	var ct asn1.ObjectIdentifier
	if err := p7.UnmarshalSignedAttribute(pkcs7.OIDAttributeContentType, &ct); err != nil {
		return fmt.Errorf("%w: signed attributes without a content type", ErrMalformed)
	}
	if !ct.Equal(pkcs7.OIDData) {
		return fmt.Errorf("%w: signed content type %s, want id-data", ErrMalformed, ct)
	}
	return nil
}

func signingTime(p7 *pkcs7.PKCS7) time.Time {
	var t time.Time
	if err := p7.UnmarshalSignedAttribute(pkcs7.OIDAttributeSigningTime, &t); err != nil {
		return time.Time{}
	}
	return t
}
