package cms

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/digitorus/pkcs7"
)

// Signer is a certificate with its private key, and the intermediates to
// embed after it. Key may be any crypto.Signer, such as an HSM-backed one.
type Signer struct {
	Cert  *x509.Certificate
	Key   crypto.Signer
	Chain []*x509.Certificate
}

// Sign returns DER CMS SignedData with content attached, signed by s with
// SHA-256 and carrying s.Cert and s.Chain. Signed attributes are
// content-type, message-digest and signing-time (added by pkcs7; adding one
// of our own would duplicate it, which OpenSSL rejects).
func Sign(content []byte, s Signer) ([]byte, error) {
	return sign(content, s, false)
}

// SignDetached is Sign without the content in the result: the signature is
// over content, which travels separately.
func SignDetached(content []byte, s Signer) ([]byte, error) {
	return sign(content, s, true)
}

func sign(content []byte, s Signer, detached bool) ([]byte, error) {
	if s.Cert == nil || s.Key == nil {
		return nil, errors.New("sign: signer needs a certificate and a key")
	}
	subject := s.Cert.Subject.CommonName
	if k, ok := s.Cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !k.Equal(s.Key.Public()) {
		return nil, fmt.Errorf("sign as %s: key does not match certificate", subject)
	}
	// Verify cannot tell empty attached content from a detached signature,
	// and nothing Kurier signs is empty.
	if len(content) == 0 {
		return nil, fmt.Errorf("sign as %s: empty content", subject)
	}
	sd, err := pkcs7.NewSignedData(content)
	if err != nil {
		return nil, fmt.Errorf("sign as %s: %w", subject, err)
	}
	sd.SetDigestAlgorithm(pkcs7.OIDDigestAlgorithmSHA256)
	if err := sd.AddSignerChain(s.Cert, s.Key, s.Chain, pkcs7.SignerInfoConfig{}); err != nil {
		return nil, fmt.Errorf("sign as %s: %w", subject, err)
	}
	if detached {
		sd.Detach()
	}
	der, err := sd.Finish()
	if err != nil {
		return nil, fmt.Errorf("sign as %s: %w", subject, err)
	}
	return der, nil
}
