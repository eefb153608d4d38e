package cms

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"hash"
	"io"
	"slices"
	"time"

	"golang.org/x/crypto/cryptobyte"
	casn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Signer is a certificate with its private key, and the intermediates to
// embed after it. Key may be any crypto.Signer, such as an HSM-backed one.
type Signer struct {
	Cert  *x509.Certificate
	Key   crypto.Signer
	Chain []*x509.Certificate
	// Now, if set, is the clock of the signing-time attribute; nil:
	// time.Now. The signing time is a claim, never evidence, so this only
	// lets a caller (or a test) say when it signs.
	Now func() time.Time
}

func (s Signer) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// Sign returns DER CMS SignedData with content attached, signed by s with
// SHA-256 (SHA-512 for Ed25519, as RFC 8419 asks) and carrying s.Cert and
// s.Chain. Signed attributes are content-type (id-data), signing-time
// (now, by s.Now if set) and message-digest, each once: OpenSSL rejects a
// duplicate. Keys may be ECDSA, RSA (PKCS #1 v1.5) or Ed25519.
func Sign(content []byte, s Signer) ([]byte, error) {
	return sign(content, s, false)
}

// SignDetached is Sign without the content in the result: the signature is
// over content, which travels separately.
func SignDetached(content []byte, s Signer) ([]byte, error) {
	return sign(content, s, true)
}

func sign(content []byte, s Signer, detached bool) ([]byte, error) {
	algs, err := signerAlgorithms(s)
	if err != nil {
		return nil, err
	}
	subject := s.Cert.Subject.CommonName
	// Verify cannot tell empty attached content from a detached signature,
	// and nothing Kurier signs is empty.
	if len(content) == 0 {
		return nil, fmt.Errorf("sign as %s: empty content", subject)
	}
	h := algs.hash.New()
	h.Write(content)
	tail, err := signedTail(s, algs, h.Sum(nil), s.now())
	if err != nil {
		return nil, fmt.Errorf("sign as %s: %w", subject, err)
	}
	var b cryptobyte.Builder
	b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) { // ContentInfo
		b.AddASN1ObjectIdentifier(oidSignedData)
		b.AddASN1(tag0.Constructed(), func(b *cryptobyte.Builder) {
			b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) { // SignedData
				b.AddBytes(algs.head)
				b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) { // EncapsulatedContentInfo
					b.AddASN1ObjectIdentifier(oidData)
					if !detached {
						b.AddASN1(tag0.Constructed(), func(b *cryptobyte.Builder) { b.AddASN1OctetString(content) })
					}
				})
				b.AddBytes(tail)
			})
		})
	})
	der, err := b.Bytes()
	if err != nil {
		return nil, fmt.Errorf("sign as %s: %w", subject, err)
	}
	return der, nil
}

// signerAlgs is how a Signer's key signs.
type signerAlgs struct {
	hash   crypto.Hash // of the content and of the signed attributes
	digest []byte      // DER AlgorithmIdentifier of hash
	sigAlg []byte      // DER AlgorithmIdentifier of the signature
	pure   bool        // the key signs the attributes themselves (Ed25519), not their hash
	head   []byte      // SignedData version and digestAlgorithms, DER
}

// signerAlgorithms checks s and picks its algorithms: SHA-2 algorithm
// identifiers without parameters (RFC 5754), RSA's with NULL (RFC 4055).
func signerAlgorithms(s Signer) (*signerAlgs, error) {
	if s.Cert == nil || s.Key == nil {
		return nil, errors.New("sign: signer needs a certificate and a key")
	}
	subject := s.Cert.Subject.CommonName
	if k, ok := s.Cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !k.Equal(s.Key.Public()) {
		return nil, fmt.Errorf("sign as %s: key does not match certificate", subject)
	}
	a := &signerAlgs{hash: crypto.SHA256, digest: algorithmID(oidSHA256, false)}
	switch s.Key.Public().(type) {
	case *ecdsa.PublicKey:
		a.sigAlg = algorithmID(oidECDSASHA256, false)
	case *rsa.PublicKey:
		a.sigAlg = algorithmID(oidRSASHA256, true)
	case ed25519.PublicKey:
		a.hash, a.digest, a.pure = crypto.SHA512, algorithmID(oidSHA512, false), true
		a.sigAlg = algorithmID(oidEd25519, false)
	default:
		return nil, fmt.Errorf("sign as %s: %T keys are not supported (ECDSA, RSA or Ed25519)", subject, s.Key.Public())
	}
	var b cryptobyte.Builder
	b.AddASN1Int64(1)
	b.AddASN1(casn1.SET, func(b *cryptobyte.Builder) { b.AddBytes(a.digest) })
	a.head = b.BytesOrPanic() // fixed input: cannot fail
	return a, nil
}

func algorithmID(oid asn1.ObjectIdentifier, null bool) []byte {
	var b cryptobyte.Builder
	b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(oid)
		if null {
			b.AddASN1NULL()
		}
	})
	return b.BytesOrPanic() // fixed input: cannot fail
}

// signedTail returns the DER fields of SignedData after the content:
// the certificates (s.Cert, then s.Chain) and the one SignerInfo, whose
// signed attributes carry digest, the content's, and the signing time at.
func signedTail(s Signer, algs *signerAlgs, digest []byte, at time.Time) ([]byte, error) {
	attrs := signedAttributes(digest, at)
	toSign := attrs
	opts := crypto.SignerOpts(crypto.Hash(0))
	if !algs.pure {
		h := algs.hash.New()
		h.Write(attrs)
		toSign, opts = h.Sum(nil), algs.hash
	}
	sig, err := s.Key.Sign(rand.Reader, toSign, opts)
	if err != nil {
		return nil, fmt.Errorf("sign attributes: %w", err)
	}
	var b cryptobyte.Builder
	b.AddASN1(tag0.Constructed(), func(b *cryptobyte.Builder) { // CertificateSet
		b.AddBytes(s.Cert.Raw)
		for _, c := range s.Chain {
			b.AddBytes(c.Raw)
		}
	})
	b.AddASN1(casn1.SET, func(b *cryptobyte.Builder) {
		b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) { // SignerInfo
			b.AddASN1Int64(1)
			b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) { // IssuerAndSerialNumber
				b.AddBytes(s.Cert.RawIssuer)
				b.AddASN1BigInt(s.Cert.SerialNumber)
			})
			b.AddBytes(algs.digest)
			// The attributes as signed, under [0] IMPLICIT.
			b.AddASN1(tag0.Constructed(), func(b *cryptobyte.Builder) { b.AddBytes(attrs[headerLen(attrs):]) })
			b.AddBytes(algs.sigAlg)
			b.AddASN1OctetString(sig)
		})
	})
	return b.Bytes()
}

// signedAttributes returns the DER SET OF content-type, signing-time and
// message-digest, sorted as DER sorts a SET OF. The signing time is
// UTCTime up to 2049 and GeneralizedTime after (RFC 5652 section 11.3).
func signedAttributes(digest []byte, at time.Time) []byte {
	at = at.UTC().Truncate(time.Second)
	attr := func(oid asn1.ObjectIdentifier, value func(*cryptobyte.Builder)) []byte {
		var b cryptobyte.Builder
		b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1ObjectIdentifier(oid)
			b.AddASN1(casn1.SET, value)
		})
		return b.BytesOrPanic() // fixed shapes: cannot fail
	}
	attrs := [][]byte{
		attr(oidAttributeContentType, func(b *cryptobyte.Builder) { b.AddASN1ObjectIdentifier(oidData) }),
		attr(oidAttributeSigningTime, func(b *cryptobyte.Builder) {
			if at.Year() >= 1950 && at.Year() < 2050 {
				b.AddASN1UTCTime(at)
			} else {
				b.AddASN1GeneralizedTime(at)
			}
		}),
		attr(oidAttributeMessageDigest, func(b *cryptobyte.Builder) { b.AddASN1OctetString(digest) }),
	}
	slices.SortFunc(attrs, bytes.Compare)
	var b cryptobyte.Builder
	b.AddASN1(casn1.SET, func(b *cryptobyte.Builder) {
		for _, a := range attrs {
			b.AddBytes(a)
		}
	})
	return b.BytesOrPanic() // fixed shapes: cannot fail
}

// chunkSize is the size of the OCTET STRING pieces that SignWriter and
// EncryptWriter write, and so what they hold in memory: a multiple of the
// AES block.
const chunkSize = 64 << 10

// eoc is the end-of-contents octets that close an indefinite length.
var eoc = []byte{0, 0}

// chunkWriter collects written bytes into pieces of chunkSize and writes
// each, with seal applied, as a primitive OCTET STRING to w; the first
// piece is preceded by head. Write errors are sticky.
type chunkWriter struct {
	w    io.Writer
	head []byte // written before the first piece; nil once written
	buf  []byte
	seal func([]byte) // transforms a full piece in place (encryption); may be nil
	err  error
}

func (c *chunkWriter) Write(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n := len(p)
	for len(p) > 0 {
		k := copy(c.buf[len(c.buf):chunkSize], p)
		c.buf, p = c.buf[:len(c.buf)+k], p[k:]
		if len(c.buf) == chunkSize {
			if err := c.flush(); err != nil {
				return n - len(p), err
			}
		}
	}
	return n, nil
}

// flush writes what is buffered as one piece.
func (c *chunkWriter) flush() error {
	if c.err != nil {
		return c.err
	}
	if c.seal != nil {
		c.seal(c.buf)
	}
	out := appendLength(append(c.head, 0x04), int64(len(c.buf)))
	if _, err := c.w.Write(out); err != nil {
		c.err = err
		return err
	}
	c.head = nil
	if _, err := c.w.Write(c.buf); err != nil {
		c.err = err
		return err
	}
	c.buf = c.buf[:0]
	return nil
}

// writeEnd writes head if nothing was written yet, then tail.
func (c *chunkWriter) writeEnd(tail []byte) error {
	if c.err != nil {
		return c.err
	}
	if _, err := c.w.Write(append(c.head, tail...)); err != nil {
		c.err = err
		return err
	}
	c.head = nil
	c.err = errors.New("cms writer closed")
	return nil
}

// SignWriter returns a writer whose bytes become the attached id-data
// content of a CMS SignedData (ContentInfo) written to w as
// indefinite-length BER, the content as a constructed OCTET STRING of
// 64 KiB pieces, hashed (SHA-256; SHA-512 for Ed25519) as it streams, so
// that memory stays at one piece whatever the size. Close writes the
// certificates (s.Cert, s.Chain) and the one SignerInfo (signed attributes
// content-type, signing-time, message-digest, as Sign writes them) and the
// end-of-contents octets; Close does not close w. Nothing reaches w before
// the first full piece or Close, and empty content is refused at Close (as
// Sign refuses it), with nothing written. The signer is checked here.
// OpenSSL reads the result (openssl cms -verify -inform DER), and so do
// Verify and VerifyReader.
func SignWriter(w io.Writer, s Signer) (io.WriteCloser, error) {
	algs, err := signerAlgorithms(s)
	if err != nil {
		return nil, err
	}
	var head []byte
	head = append(head, 0x30, 0x80) // ContentInfo
	head = appendHeader(head, berTag(casn1.OBJECT_IDENTIFIER), len(derOID(oidSignedData)), derOID(oidSignedData))
	head = append(head, 0xa0, 0x80, 0x30, 0x80) // [0], SignedData
	head = append(head, algs.head...)
	head = append(head, 0x30, 0x80) // EncapsulatedContentInfo
	head = appendHeader(head, berTag(casn1.OBJECT_IDENTIFIER), len(derOID(oidData)), derOID(oidData))
	head = append(head, 0xa0, 0x80, 0x24, 0x80) // [0], OCTET STRING in pieces
	return &signWriter{
		chunkWriter: chunkWriter{w: w, head: head, buf: make([]byte, 0, chunkSize)},
		s:           s, algs: algs, h: algs.hash.New(),
	}, nil
}

type signWriter struct {
	chunkWriter
	s    Signer
	algs *signerAlgs
	h    hash.Hash
	n    int64
}

func (sw *signWriter) Write(p []byte) (int, error) {
	n, err := sw.chunkWriter.Write(p)
	sw.h.Write(p[:n])
	sw.n += int64(n)
	return n, err
}

// Close writes the rest of the SignedData: see SignWriter.
func (sw *signWriter) Close() error {
	if sw.err != nil {
		return sw.err
	}
	subject := sw.s.Cert.Subject.CommonName
	if sw.n == 0 {
		sw.err = fmt.Errorf("sign as %s: empty content", subject)
		return sw.err
	}
	if len(sw.buf) > 0 {
		if err := sw.flush(); err != nil {
			return fmt.Errorf("sign as %s: %w", subject, err)
		}
	}
	tail, err := signedTail(sw.s, sw.algs, sw.h.Sum(nil), sw.s.now())
	if err != nil {
		sw.err = fmt.Errorf("sign as %s: %w", subject, err)
		return sw.err
	}
	end := slices.Concat(eoc, eoc, eoc, tail, eoc, eoc, eoc) // pieces, [0], EncapsulatedContentInfo; SignedData, [0], ContentInfo
	if err := sw.writeEnd(end); err != nil {
		return fmt.Errorf("sign as %s: %w", subject, err)
	}
	return nil
}

// derOID returns the contents of the DER encoding of oid.
func derOID(oid asn1.ObjectIdentifier) []byte {
	var b cryptobyte.Builder
	b.AddASN1ObjectIdentifier(oid)
	der := b.BytesOrPanic() // valid constant OIDs: cannot fail
	return der[2:]
}
