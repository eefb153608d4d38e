package cms

import (
	"bytes"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
)

// minRSABits is the smallest recipient key Encrypt accepts (BSI TR-02102).
const minRSABits = 3072

// Encrypt returns DER CMS EnvelopedData of content for every recipient:
// AES-256-CBC content encryption under a fresh key, that key transported to
// each recipient with RSAES-OAEP (SHA-256, MGF1 with SHA-256, no label; BSI
// TR-02102-1), which OpenSSL and Bouncy Castle read. Recipients must be
// RSA certificates of at least 3072 bits that allow key encipherment;
// Encrypt does not check that they are trusted, current or not revoked
// (callers verify them first, e.g. through a pki.TrustStore).
// EnvelopedData does not authenticate the sender: sign the content first.
// EncryptWriter does the same as a stream.
func Encrypt(content []byte, recipients []*x509.Certificate) ([]byte, error) {
	key, iv, infos, err := newContentKey(recipients)
	if err != nil {
		return nil, fmt.Errorf("encrypt: %w", err)
	}
	defer clear(key)
	ciphertext, err := sealCBC(key, iv, content)
	if err != nil {
		return nil, fmt.Errorf("encrypt: %w", err)
	}
	der, err := marshalEnveloped(infos, iv, ciphertext)
	if err != nil {
		return nil, fmt.Errorf("encrypt: %w", err)
	}
	return der, nil
}

// newContentKey checks the recipients and returns a fresh AES-256 key and
// IV, and the DER SET of recipient infos that transport the key to each
// with RSAES-OAEP SHA-256.
func newContentKey(recipients []*x509.Certificate) (key, iv, infos []byte, err error) {
	if len(recipients) == 0 {
		return nil, nil, nil, errors.New("no recipients")
	}
	for _, r := range recipients {
		if err := checkRecipient(r); err != nil {
			return nil, nil, nil, err
		}
	}
	key = make([]byte, 32) // AES-256
	iv = make([]byte, aes.BlockSize)
	rand.Read(key) // crypto/rand.Read never returns an error
	rand.Read(iv)
	encryptedKeys := make([][]byte, len(recipients))
	for i, r := range recipients {
		encryptedKeys[i], err = rsa.EncryptOAEP(sha256.New(), rand.Reader, r.PublicKey.(*rsa.PublicKey), key, nil)
		if err != nil {
			clear(key)
			return nil, nil, nil, fmt.Errorf("encrypt key for %q: %w", r.Subject, err)
		}
	}
	if infos, err = marshalRecipientInfos(recipients, encryptedKeys); err != nil {
		clear(key)
		return nil, nil, nil, err
	}
	return key, iv, infos, nil
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
// SignedData). Only DER is read (DecryptReader reads BER too, streaming),
// with every length checked and nothing after any structure; only AES-CBC content encryption (no DES, and no
// AES-GCM, which is not standard in EnvelopedData); and only two key
// transports: RSAES-OAEP with SHA-256, MGF1 with SHA-256 and no label, which
// Encrypt writes, and PKCS #1 v1.5, which Kurier wrote before and OpenSSL
// writes by default. OAEP with SHA-1 (the RSAES-OAEP-params defaults) is
// refused, as BSI TR-02102-1 asks.
//
// Every failure, including a panic on crafted input, is returned as an
// error wrapping ErrDecrypt (or ErrTooLarge), and ErrMalformed as well where
// the structure is wrong. Security-sensitive: PKCS #1 v1.5 keys are
// unwrapped with implicit rejection (RFC 3218 section 2.3.2), so a bad
// padding shows only as content that does not decrypt; the content is not
// authenticated by the encryption, so check the payload digest the sender
// signed before, and the signature inside after.
func Decrypt(der []byte, cert *x509.Certificate, key crypto.Decrypter, max int) ([]byte, error) {
	if max <= 0 {
		max = DefaultMaxSignedSize
	}
	if len(der) > max {
		return nil, fmt.Errorf("decrypt: %w: %d bytes, at most %d", ErrTooLarge, len(der), max)
	}
	rsaKey, err := decryptionKey(cert, key)
	if err != nil {
		return nil, fmt.Errorf("decrypt: %w", err)
	}
	var content []byte
	err = protect(func() (err error) {
		content, err = open(der, cert, rsaKey)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("decrypt for %q: %w: %w", cert.Subject, ErrDecrypt, err)
	}
	return content, nil
}

// decryptionKey checks that key is cert's RSA private key.
func decryptionKey(cert *x509.Certificate, key crypto.Decrypter) (*rsa.PrivateKey, error) {
	if cert == nil {
		return nil, fmt.Errorf("%w: no recipient certificate", ErrDecrypt)
	}
	rsaKey, ok := key.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%w: key is %T, want *rsa.PrivateKey", ErrDecrypt, key)
	}
	if !rsaKey.PublicKey.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("%w: key does not match certificate %q", ErrDecrypt, cert.Subject)
	}
	return rsaKey, nil
}

// open parses der, unwraps cert's copy of the content-encryption key with
// key, and decrypts the content.
func open(der []byte, cert *x509.Certificate, key *rsa.PrivateKey) ([]byte, error) {
	env, err := parseEnveloped(der, cert)
	if err != nil {
		return nil, err
	}
	cek, err := unwrapKey(env, key)
	if err != nil {
		return nil, err
	}
	defer clear(cek)
	return openCBC(cek, env.iv, env.ciphertext)
}

// unwrapKey returns the content-encryption key of env, unwrapped with key.
func unwrapKey(env *enveloped, key *rsa.PrivateKey) ([]byte, error) {
	cek := make([]byte, env.keyLen)
	switch env.transport {
	case transportOAEPSHA256:
		k, err := rsa.DecryptOAEP(sha256.New(), nil, key, env.encryptedKey, nil)
		if err != nil {
			return nil, fmt.Errorf("unwrap RSAES-OAEP content-encryption key: %w", err)
		}
		defer clear(k)
		if len(k) != env.keyLen {
			return nil, fmt.Errorf("content-encryption key is %d bytes, the content cipher needs %d", len(k), env.keyLen)
		}
		copy(cek, k)
	case transportPKCS1v15:
		// A random key stands in when the padding is bad, in constant
		// time: no Bleichenbacher oracle, only content that fails below.
		rand.Read(cek)
		//lint:ignore SA1019 envelopes that Kurier sealed before RSAES-OAEP must still open
		if err := rsa.DecryptPKCS1v15SessionKey(nil, key, env.encryptedKey, cek); err != nil {
			return nil, fmt.Errorf("unwrap PKCS #1 v1.5 content-encryption key: %w", err)
		}
	default:
		return nil, fmt.Errorf("key transport %d unknown", env.transport) // the parsers return none other
	}
	return cek, nil
}

// sealCBC pads content as RFC 5652 section 6.3 says and encrypts it with
// AES-CBC under key and iv.
func sealCBC(key, iv, content []byte) ([]byte, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	n := aes.BlockSize - len(content)%aes.BlockSize // 1 to 16
	out := make([]byte, len(content)+n)
	copy(out, content)
	for i := len(content); i < len(out); i++ {
		out[i] = byte(n)
	}
	cipher.NewCBCEncrypter(block, iv).CryptBlocks(out, out)
	return out, nil
}

// openCBC decrypts ciphertext (a non-empty multiple of the block size) with
// AES-CBC under key and iv and removes the padding, which must be 1 to 16
// bytes of its own length.
func openCBC(key, iv, ciphertext []byte) ([]byte, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	out := make([]byte, len(ciphertext))
	cipher.NewCBCDecrypter(block, iv).CryptBlocks(out, ciphertext)
	n := int(out[len(out)-1])
	if n < 1 || n > aes.BlockSize || !bytes.Equal(out[len(out)-n:], bytes.Repeat([]byte{byte(n)}, n)) {
		clear(out)
		return nil, errors.New("content does not decrypt: bad padding (wrong key, or a corrupted envelope)")
	}
	return out[:len(out)-n], nil
}
