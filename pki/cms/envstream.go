package cms

import (
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"slices"

	"golang.org/x/crypto/cryptobyte"
	casn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// EncryptWriter returns a writer whose bytes become the content of a CMS
// EnvelopedData (ContentInfo) written to w as indefinite-length BER: the
// same recipient checks, key transport (RSAES-OAEP SHA-256) and
// AES-256-CBC as Encrypt, the encryptedContent as a constructed [0] of
// 64 KiB OCTET STRING pieces, so that memory stays at one piece whatever
// the size. Close writes the last padded block and the end-of-contents
// octets; it does not close w. Nothing reaches w before the first full
// piece or Close. OpenSSL reads the result (openssl cms -decrypt -inform
// DER), and so does DecryptReader (Decrypt, which reads DER only, does
// not). Like Encrypt, it does not authenticate the sender: sign first
// (SignWriter writing into it).
func EncryptWriter(w io.Writer, recipients []*x509.Certificate) (io.WriteCloser, error) {
	key, iv, infos, err := newContentKey(recipients)
	if err != nil {
		return nil, fmt.Errorf("encrypt: %w", err)
	}
	block, err := aes.NewCipher(key)
	clear(key)
	if err != nil {
		return nil, fmt.Errorf("encrypt: %w", err)
	}
	var head []byte
	head = append(head, 0x30, 0x80) // ContentInfo
	head = appendHeader(head, berTag(casn1.OBJECT_IDENTIFIER), len(derOID(oidEnvelopedData)), derOID(oidEnvelopedData))
	head = append(head, 0xa0, 0x80, 0x30, 0x80) // [0], EnvelopedData
	head = append(head, 0x02, 0x01, 0x00)       // version 0
	head = append(head, infos...)
	head = append(head, 0x30, 0x80) // EncryptedContentInfo
	head = appendHeader(head, berTag(casn1.OBJECT_IDENTIFIER), len(derOID(oidData)), derOID(oidData))
	head = append(head, aes256CBC(iv)...)
	head = append(head, 0xa0, 0x80) // [0] IMPLICIT OCTET STRING, in pieces
	cbc := cipher.NewCBCEncrypter(block, iv)
	return &encryptWriter{chunkWriter{
		w: w, head: head, buf: make([]byte, 0, chunkSize+aes.BlockSize),
		seal: func(b []byte) { cbc.CryptBlocks(b, b) },
	}}, nil
}

type encryptWriter struct{ chunkWriter }

// Close pads and writes the last piece and the ends: see EncryptWriter.
func (e *encryptWriter) Close() error {
	if e.err != nil {
		return e.err
	}
	// RFC 5652 section 6.3: 1 to 16 bytes, each the count.
	n := aes.BlockSize - len(e.buf)%aes.BlockSize
	for range n {
		e.buf = append(e.buf, byte(n))
	}
	if err := e.flush(); err != nil {
		return fmt.Errorf("encrypt: %w", err)
	}
	// [0], EncryptedContentInfo, EnvelopedData, [0], ContentInfo
	if err := e.writeEnd(slices.Concat(eoc, eoc, eoc, eoc, eoc)); err != nil {
		return fmt.Errorf("encrypt: %w", err)
	}
	return nil
}

// DecryptReader reads the EnvelopedData header and recipient infos from
// r, opens the content-encryption key with key (as Decrypt: cert's
// *rsa.PrivateKey, RSAES-OAEP SHA-256, or PKCS #1 v1.5 with implicit
// rejection), and returns a reader of the decrypted content. It reads DER
// (what Encrypt writes, and openssl cms -encrypt) and BER with indefinite
// lengths (EncryptWriter, openssl cms -encrypt -stream), with the
// algorithms Decrypt accepts and no others. Memory stays at a few buffers
// whatever the size.
//
// A structure or padding error, trailing data, or more than max content
// bytes (max <= 0: DefaultMaxSignedSize) is an error from Read wrapping
// ErrDecrypt and ErrMalformed or ErrTooLarge; a truncated input wraps
// io.ErrUnexpectedEOF as well, and other errors of r are wrapped as they
// come. Read returns io.EOF only after the whole structure was read
// intact, and never more than max bytes before it. When the content is
// SignedData, as Kurier seals it, max must allow for its overhead over the
// document: some KiB of certificates and signer info, and 5 bytes for each
// 64 KiB piece. Errors from
// DecryptReader itself wrap ErrDecrypt, and ErrMalformed where the
// structure is wrong.
//
// Security-sensitive: the content is not authenticated: CBC has no
// integrity, and a wrong PKCS #1 v1.5 key shows only as garbage and a
// padding error at the end. The signature inside is what proves it, so
// callers stage what Read returns until that signature verifies.
func DecryptReader(r io.Reader, cert *x509.Certificate, key crypto.Decrypter, max int64) (io.Reader, error) {
	if max <= 0 {
		max = DefaultMaxSignedSize
	}
	rsaKey, err := decryptionKey(cert, key)
	if err != nil {
		return nil, fmt.Errorf("decrypt: %w", err)
	}
	d := &decryptReader{b: newBERReader(r), max: max, subject: cert.Subject.String()}
	err = protect(func() error {
		env, err := readEnvelopedHeader(d.b, cert, &d.ct)
		if err != nil {
			return err
		}
		cek, err := unwrapKey(env, rsaKey)
		if err != nil {
			return err
		}
		defer clear(cek)
		block, err := aes.NewCipher(cek)
		if err != nil {
			return err
		}
		d.cbc = cipher.NewCBCDecrypter(block, env.iv)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("decrypt for %q: %w: %w", d.subject, ErrDecrypt, err)
	}
	if n := d.ct.declared(); n > max+aes.BlockSize {
		return nil, fmt.Errorf("decrypt for %q: %w: %w: encrypted content of %d bytes, at most %d of content", d.subject, ErrDecrypt, ErrTooLarge, n, max)
	}
	d.in = make([]byte, 0, 32<<10)
	return d, nil
}

// readEnvelopedHeader reads ContentInfo holding EnvelopedData from b up
// to the encrypted content, returns what cert's recipient info and the
// content cipher say, and sets *ct to the reader of the ciphertext. It
// refuses what parseEnveloped refuses.
func readEnvelopedHeader(b *berReader, cert *x509.Certificate, ct **stringReader) (*enveloped, error) {
	if err := b.enterExpected(berTag(casn1.SEQUENCE), "ContentInfo"); err != nil {
		return nil, err
	}
	oid, err := readOID(b, "content type")
	if err != nil {
		return nil, err
	}
	if !oid.Equal(oidEnvelopedData) {
		return nil, fmt.Errorf("%w: content type %s, want EnvelopedData", ErrMalformed, oidName(oid))
	}
	if err := b.enterExpected(berTag(tag0.Constructed()), "ContentInfo content"); err != nil {
		return nil, err
	}
	if err := b.enterExpected(berTag(casn1.SEQUENCE), "EnvelopedData"); err != nil {
		return nil, err
	}
	der, err := readSmall(b, casn1.INTEGER, "EnvelopedData version")
	if err != nil {
		return nil, err
	}
	var version int64
	if s := cryptobyte.String(der); !s.ReadASN1Integer(&version) || version < 0 || version > 4 {
		return nil, b.malformed("EnvelopedData version not 0 to 4")
	}
	h, err := b.expect(berTag(casn1.SET), "recipient infos (originator info is refused)")
	if err != nil {
		return nil, err
	}
	if der, err = b.readDER(h, maxHeaderElement); err != nil {
		return nil, err
	}
	var infos cryptobyte.String
	if s := cryptobyte.String(der); !s.ReadASN1(&infos, casn1.SET) {
		return nil, b.malformed("recipient infos not a SET")
	}
	transport, encryptedKey, err := findRecipient(infos, cert)
	if err != nil {
		return nil, err
	}
	if err := b.enterExpected(berTag(casn1.SEQUENCE), "EncryptedContentInfo"); err != nil {
		return nil, err
	}
	contentType, err := readSmall(b, casn1.OBJECT_IDENTIFIER, "encrypted content type")
	if err != nil {
		return nil, err
	}
	alg, err := readSmall(b, casn1.SEQUENCE, "content encryption algorithm")
	if err != nil {
		return nil, err
	}
	eci := cryptobyte.String(slices.Concat(contentType, alg))
	env, err := readContentCipher(&eci)
	if err != nil {
		return nil, err
	}
	env.transport, env.encryptedKey = transport, encryptedKey
	h, ok, err := b.next()
	if err != nil {
		return nil, err
	}
	if !ok || h.tag&^constructedBit != berTag(tag0) {
		return nil, b.malformed("encrypted content missing")
	}
	if *ct, err = newStringReader(b, h, berTag(casn1.OCTET_STRING)); err != nil {
		return nil, err
	}
	return env, nil
}

// finishEnveloped reads what follows the encrypted content: the ends of
// the EncryptedContentInfo, EnvelopedData (so no unprotected attributes)
// and ContentInfo, and the end of the input.
func finishEnveloped(b *berReader) error {
	for _, what := range []string{"encrypted content", "EnvelopedData (unprotected attributes are refused)", "EnvelopedData", "ContentInfo"} {
		if err := b.leave(what); err != nil {
			return err
		}
	}
	return b.expectEOF()
}

// decryptReader decrypts the ciphertext as it streams, always holding
// back the last block decrypted, which holds the padding if it is the
// last one.
type decryptReader struct {
	b       *berReader
	ct      *stringReader
	cbc     cipher.BlockMode
	in      []byte // ciphertext read, a partial block at its start between reads
	out     []byte // plaintext ready to return, in outBuf
	outBuf  []byte
	last    []byte // the block held back
	total   int64  // ciphertext bytes read
	max     int64
	subject string
	err     error // sticky; io.EOF at the end
}

func (d *decryptReader) Read(p []byte) (int, error) {
	for len(d.out) == 0 {
		if d.err != nil {
			return 0, d.err
		}
		if err := protect(d.fill); err != nil {
			if !errors.Is(err, io.EOF) {
				err = fmt.Errorf("decrypt for %q: %w: %w", d.subject, ErrDecrypt, err)
			}
			d.err = err
		}
	}
	n := copy(p, d.out)
	d.out = d.out[n:]
	return n, nil
}

// fill reads more ciphertext and decrypts what whole blocks it can, or
// at the end checks the structure and the padding; it returns io.EOF
// after the last plaintext.
func (d *decryptReader) fill() error {
	k := len(d.in)
	n, err := d.ct.Read(d.in[k:cap(d.in)])
	d.in = d.in[:k+n]
	d.total += int64(n)
	if d.total > d.max+aes.BlockSize {
		return fmt.Errorf("%w: content over %d bytes", ErrTooLarge, d.max)
	}
	if full := len(d.in) / aes.BlockSize * aes.BlockSize; full > 0 {
		d.cbc.CryptBlocks(d.in[:full], d.in[:full])
		d.outBuf = append(append(d.outBuf[:0], d.last...), d.in[:full-aes.BlockSize]...)
		d.out = d.outBuf
		d.last = append(d.last[:0], d.in[full-aes.BlockSize:full]...)
		d.in = d.in[:copy(d.in, d.in[full:])]
	}
	if err == nil {
		return nil
	}
	if !errors.Is(err, io.EOF) {
		return err // after what was decrypted: Read returns that first
	}
	if len(d.in) != 0 || len(d.last) == 0 {
		return fmt.Errorf("%w: encrypted content is %d bytes, not a non-zero multiple of the AES block", ErrMalformed, d.total)
	}
	if err := finishEnveloped(d.b); err != nil {
		return err
	}
	pad := int(d.last[aes.BlockSize-1])
	if pad < 1 || pad > aes.BlockSize || slices.ContainsFunc(d.last[aes.BlockSize-pad:], func(c byte) bool { return int(c) != pad }) {
		return fmt.Errorf("%w: content does not decrypt: bad padding (wrong key, or a corrupted envelope)", ErrMalformed)
	}
	if d.total-int64(pad) > d.max {
		return fmt.Errorf("%w: content over %d bytes", ErrTooLarge, d.max)
	}
	d.outBuf = append(append(d.outBuf[:0], d.out...), d.last[:aes.BlockSize-pad]...)
	d.out = d.outBuf
	d.last = nil
	d.err = io.EOF
	return nil
}
