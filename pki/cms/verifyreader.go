package cms

import (
	"crypto"
	"errors"
	"fmt"
	"hash"
	"io"
	"slices"
)

// VerifyReader reads attached-content SignedData from r (DER or BER,
// definite or indefinite lengths) in one pass, hashing the content as it
// streams, so that memory stays at a few buffers whatever the size. Read
// yields the content as it streams, UNVERIFIED: callers stage it and only
// use it after Verify returns nil. Verify reads the rest (draining unread
// content), and checks exactly what Verify checks (one signer with an
// embedded certificate, SHA-256 or stronger, content-type id-data,
// message digest and signature, chain through p.Trust at p.At for
// p.KeyUsages, p.MaxSize capping the content). Verified.Content is nil.
//
// One pass means the content is hashed before its SignerInfo is read:
// with the SHA-2 algorithms the SignedData's digestAlgorithms list (and
// SHA-256 always), as RFC 5652 section 5.1 intends; a signer whose digest
// algorithm is not among them is refused. A signature without signed
// attributes is verified from the digest, which ECDSA and RSA allow and
// Ed25519 and ML-DSA do not (Verify reads those).
type VerifyReader struct {
	p       Policy
	b       *berReader
	sd      *signedData
	content *stringReader
	hashes  []hash.Hash // for sd.digests
	n       int64
	err     error // sticky; io.EOF once the structure was read to its end
}

// NewVerifyReader reads r up to the content and returns the reader of it.
// Errors wrap ErrMalformed (not SignedData syntax, or a detached
// signature, which has no content to stream), ErrNoSigner (another
// content type), ErrTooLarge (content in one piece longer than
// p.MaxSize), or say what the policy lacks.
func NewVerifyReader(r io.Reader, p Policy) (*VerifyReader, error) {
	if err := p.check(); err != nil {
		return nil, fmt.Errorf("verify signed data: %w", err)
	}
	v := &VerifyReader{p: p, b: newBERReader(r)}
	err := protect(func() (err error) {
		v.sd, v.content, err = parseSignedBER(v.b)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("verify signed data: %w", err)
	}
	if v.content == nil {
		return nil, fmt.Errorf("verify signed data: %w: no content (a detached signature? use VerifyDetached)", ErrMalformed)
	}
	if n := v.content.declared(); n > int64(p.maxSize()) {
		return nil, fmt.Errorf("verify signed data: %w: content of %d bytes, at most %d", ErrTooLarge, n, p.maxSize())
	}
	if !slices.Contains(v.sd.digests, crypto.SHA256) {
		v.sd.digests = append(v.sd.digests, crypto.SHA256)
	}
	for _, h := range v.sd.digests {
		v.hashes = append(v.hashes, h.New())
	}
	return v, nil
}

// Read reads the content, unverified. After the last byte it reads the
// rest of the structure, and returns io.EOF only if that is intact;
// errors wrap ErrMalformed or ErrTooLarge (more than p.MaxSize bytes of
// content), or are r's.
func (v *VerifyReader) Read(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	var n int
	err := protect(func() (err error) {
		n, err = v.content.Read(p)
		return err
	})
	for _, h := range v.hashes {
		h.Write(p[:n])
	}
	if v.n += int64(n); v.n > int64(v.p.maxSize()) {
		v.err = fmt.Errorf("read signed data: %w: content over %d bytes", ErrTooLarge, v.p.maxSize())
		return 0, v.err
	}
	if errors.Is(err, io.EOF) {
		err = protect(func() error { return finishSignedBER(v.b, v.sd) })
		if err == nil {
			err = io.EOF
		}
	}
	if err != nil && !errors.Is(err, io.EOF) {
		err = fmt.Errorf("read signed data: %w", err)
	}
	v.err = err
	return n, err
}

// Verify reads what is left of the content and the structure, then checks
// the signature and the signer as Verify does. It returns the signer, its
// chain and the claimed signing time; the content is what Read returned.
// Errors wrap those of Verify.
func (v *VerifyReader) Verify() (*Verified, error) {
	if _, err := io.Copy(io.Discard, v); err != nil {
		return nil, err
	}
	if !errors.Is(v.err, io.EOF) {
		return nil, fmt.Errorf("verify signed data: %w", v.err)
	}
	sd := v.sd
	signer, err := sd.signerCert()
	if err != nil {
		return nil, fmt.Errorf("verify signed data: %w", err)
	}
	if v.n == 0 {
		return nil, fmt.Errorf("verify signed data: %w: empty content", ErrMalformed)
	}
	digestOf := func(h crypto.Hash) []byte {
		if i := slices.Index(sd.digests, h); i >= 0 {
			return v.hashes[i].Sum(nil)
		}
		return nil
	}
	if err := sd.check(signer, digestOf, nil); err != nil {
		return nil, fmt.Errorf("verify signed data: %w", err)
	}
	chain, err := sd.trust(signer, v.p)
	if err != nil {
		return nil, fmt.Errorf("verify signed data: %w", err)
	}
	return &Verified{Signer: signer, Chain: chain, SigningTime: sd.si.signingTime}, nil
}
