package cms

import (
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"

	"github.com/digitorus/pkcs7"
)

// pkcs7 keeps the content cipher in a package variable that defaults to
// DES. Set it once, here, before anything can call Encrypt; setting it per
// call would race with concurrent callers.
func init() {
	pkcs7.ContentEncryptionAlgorithm = pkcs7.EncryptionAlgorithmAES256CBC
}

// minRSABits is the smallest recipient key Encrypt accepts (BSI TR-02102).
const minRSABits = 3072

// Encrypt returns DER CMS EnvelopedData of content for every recipient:
// AES-256-CBC content encryption, the key transported to each recipient
// with RSA (PKCS #1 v1.5, the form OpenSSL and every CMS implementation
// read). Recipients must be RSA certificates of at least 3072 bits that
// allow key encipherment; Encrypt does not check that they are trusted,
// current or not revoked (callers verify them first, e.g. through a
// pki.TrustStore). EnvelopedData does not authenticate the sender: sign
// the content first.
func Encrypt(content []byte, recipients []*x509.Certificate) ([]byte, error) {
	if len(recipients) == 0 {
		return nil, errors.New("encrypt: no recipients")
	}
	for _, r := range recipients {
		if err := checkRecipient(r); err != nil {
			return nil, fmt.Errorf("encrypt: %w", err)
		}
	}
	der, err := pkcs7.Encrypt(content, recipients)
	if err != nil {
		return nil, fmt.Errorf("encrypt: %w", err)
	}
	return der, nil
}

func checkRecipient(cert *x509.Certificate) error {
	if cert == nil {
		return errors.New("nil recipient certificate")
	}
	pub, ok := cert.PublicKey.(*rsa.PublicKey)
	if !ok {
		return fmt.Errorf("recipient %q has a %T key; only RSA recipients are supported", cert.Subject, cert.PublicKey)
	}
	if n := pub.N.BitLen(); n < minRSABits {
		return fmt.Errorf("recipient %q has an RSA-%d key, at least RSA-%d is required", cert.Subject, n, minRSABits)
	}
	if cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageKeyEncipherment == 0 {
		return fmt.Errorf("recipient %q: certificate does not allow key encipherment (a signing certificate?)", cert.Subject)
	}
	return nil
}

// Decrypt returns the content of DER EnvelopedData for the recipient cert,
// whose private key is key (an *rsa.PrivateKey; other decrypters are
// refused). Input longer than max bytes is refused before parsing (max <= 0:
// DefaultMaxSignedSize, enough for a payload that is itself a capped
// SignedData). Only AES-CBC content encryption is accepted (no DES, and no
// AES-GCM, which is not standard in EnvelopedData), and only DER input.
//
// Every failure, including a panic inside pkcs7 on crafted padding, is
// returned as an error wrapping ErrDecrypt (or ErrTooLarge). The content
// is not authenticated by the encryption: verify the signature inside.
func Decrypt(der []byte, cert *x509.Certificate, key crypto.Decrypter, max int) ([]byte, error) {
	if max <= 0 {
		max = DefaultMaxSignedSize
	}
	if len(der) > max {
		return nil, fmt.Errorf("decrypt: %w: %d bytes, at most %d", ErrTooLarge, len(der), max)
	}
	if cert == nil {
		return nil, fmt.Errorf("decrypt: %w: no recipient certificate", ErrDecrypt)
	}
	rsaKey, ok := key.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("decrypt: %w: key is %T, want *rsa.PrivateKey", ErrDecrypt, key)
	}
	if !rsaKey.PublicKey.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("decrypt: %w: key does not match certificate %q", ErrDecrypt, cert.Subject)
	}
	if err := checkContentCipher(der); err != nil {
		return nil, fmt.Errorf("decrypt: %w: %w", ErrDecrypt, err)
	}
	p7, err := parse(der, max)
	if err != nil {
		return nil, fmt.Errorf("decrypt: %w: %w", ErrDecrypt, err)
	}
	var content []byte
	err = protect(func() (err error) {
		content, err = p7.Decrypt(cert, rsaKey)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("decrypt for %q: %w: %v", cert.Subject, ErrDecrypt, err)
	}
	return content, nil
}

// The start of EnvelopedData (RFC 5652), as far as needed to read the
// content cipher. pkcs7 does not expose it, prints to stdout on one it
// does not know, and would accept DES.
type contentInfoPeek struct {
	ContentType asn1.ObjectIdentifier
	Content     asn1.RawValue `asn1:"explicit,tag:0"`
}

type envelopedDataPeek struct {
	Version        int
	OriginatorInfo asn1.RawValue `asn1:"optional,tag:0"`
	RecipientInfos asn1.RawValue
	EncryptedInfo  struct {
		ContentType asn1.ObjectIdentifier
		Algorithm   pkix.AlgorithmIdentifier
	}
}

func checkContentCipher(der []byte) error {
	var ci contentInfoPeek
	rest, err := asn1.Unmarshal(der, &ci)
	if err != nil || len(rest) > 0 {
		return fmt.Errorf("%w: not DER ContentInfo", ErrMalformed)
	}
	if !ci.ContentType.Equal(pkcs7.OIDEnvelopedData) {
		return fmt.Errorf("%w: content type %s, want EnvelopedData", ErrMalformed, ci.ContentType)
	}
	var ed envelopedDataPeek
	if _, err := asn1.Unmarshal(ci.Content.Bytes, &ed); err != nil {
		return fmt.Errorf("%w: EnvelopedData: %v", ErrMalformed, err)
	}
	alg := ed.EncryptedInfo.Algorithm.Algorithm
	if !alg.Equal(pkcs7.OIDEncryptionAlgorithmAES256CBC) && !alg.Equal(pkcs7.OIDEncryptionAlgorithmAES128CBC) {
		return fmt.Errorf("content cipher %s refused, want AES-CBC", alg)
	}
	return nil
}
