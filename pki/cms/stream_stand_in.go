package cms

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
)

// This file gives the streaming API its signatures by buffering: every
// writer holds what is written until Close and every reader reads its
// input whole first, through Sign, Encrypt, Decrypt and Verify. It has the
// API's outcomes but not its memory use; the streaming implementation
// replaces it.

// SignWriter returns a writer whose bytes become the attached id-data
// content of SignedData written to w, signed by s as Sign signs. Close
// writes the signature and fails on empty content; it does not close w.
func SignWriter(w io.Writer, s Signer) (io.WriteCloser, error) {
	if s.Cert == nil || s.Key == nil {
		return nil, errors.New("sign: signer needs a certificate and a key")
	}
	return &bufferedWriter{w: w, finish: func(content []byte) ([]byte, error) { return Sign(content, s) }}, nil
}

// EncryptWriter returns a writer whose bytes become the content of
// EnvelopedData written to w, encrypted to recipients as Encrypt does.
// Close writes the end of it; it does not close w.
func EncryptWriter(w io.Writer, recipients []*x509.Certificate) (io.WriteCloser, error) {
	if len(recipients) == 0 {
		return nil, errors.New("encrypt: no recipients")
	}
	for _, r := range recipients {
		if err := checkRecipient(r); err != nil {
			return nil, fmt.Errorf("encrypt: %w", err)
		}
	}
	return &bufferedWriter{w: w, finish: func(content []byte) ([]byte, error) { return Encrypt(content, recipients) }}, nil
}

// bufferedWriter collects content and writes finish(content) to w at
// Close.
type bufferedWriter struct {
	w      io.Writer
	buf    bytes.Buffer
	finish func([]byte) ([]byte, error)
	closed bool
}

func (b *bufferedWriter) Write(p []byte) (int, error) {
	if b.closed {
		return 0, errors.New("cms: write after close")
	}
	return b.buf.Write(p)
}

func (b *bufferedWriter) Close() error {
	if b.closed {
		return errors.New("cms: closed twice")
	}
	b.closed = true
	out, err := b.finish(b.buf.Bytes())
	b.buf = bytes.Buffer{}
	if err != nil {
		return err
	}
	_, err = b.w.Write(out)
	return err
}

// DecryptReader returns a reader of the content of the EnvelopedData read
// from r, for the recipient cert with key, as Decrypt opens it; more than
// max bytes of input are refused with ErrTooLarge.
func DecryptReader(r io.Reader, cert *x509.Certificate, key crypto.Decrypter, max int64) (io.Reader, error) {
	if max <= 0 {
		max = DefaultMaxSignedSize
	}
	der, err := readAtMost(r, max)
	if err != nil {
		return nil, fmt.Errorf("decrypt: %w", err)
	}
	content, err := Decrypt(der, cert, key, int(max))
	if err != nil {
		return nil, err
	}
	return bytes.NewReader(content), nil
}

// VerifyReader reads attached SignedData: Read yields its content, Verify
// checks it as Verify does.
type VerifyReader struct {
	content *bytes.Reader
	v       *Verified
	err     error
}

// NewVerifyReader reads SignedData from r, within p.MaxSize.
func NewVerifyReader(r io.Reader, p Policy) (*VerifyReader, error) {
	max := int64(p.MaxSize)
	if max <= 0 {
		max = DefaultMaxSignedSize
	}
	der, err := readAtMost(r, max)
	if err != nil {
		return nil, fmt.Errorf("verify signed data: %w", err)
	}
	v, err := Verify(der, p)
	if err != nil {
		return &VerifyReader{content: bytes.NewReader(nil), err: err}, nil
	}
	vr := &VerifyReader{content: bytes.NewReader(v.Content), v: v}
	v.Content = nil
	return vr, nil
}

// Read reads the content; after a failed verification it returns the
// failure.
func (v *VerifyReader) Read(b []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	return v.content.Read(b)
}

// Verify returns the signer of the content, or why it does not verify.
func (v *VerifyReader) Verify() (*Verified, error) {
	if v.err != nil {
		return nil, v.err
	}
	return v.v, nil
}

// readAtMost reads r whole, refusing more than max bytes.
func readAtMost(r io.Reader, max int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%w: more than %d bytes", ErrTooLarge, max)
	}
	return b, nil
}
