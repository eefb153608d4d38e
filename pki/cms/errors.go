package cms

import "errors"

// DefaultMaxSignedSize caps CMS input (16 MiB) when a Policy or a Decrypt
// call gives no limit of its own.
const DefaultMaxSignedSize = 16 << 20

// Sentinel errors, checked with errors.Is; the wrapping error carries the
// detail.
var (
	// ErrTooLarge means the input exceeds the size cap; it was not parsed.
	ErrTooLarge = errors.New("cms input too large")
	// ErrMalformed means the input is not the CMS structure expected.
	ErrMalformed = errors.New("malformed cms")
	// ErrNoSigner means the SignedData has no signer, or no certificate for
	// it.
	ErrNoSigner = errors.New("no signer")
	// ErrSignature means the signature or the content digest does not
	// verify, or uses an algorithm the policy refuses.
	ErrSignature = errors.New("bad signature")
	// ErrUntrusted means the signature is sound but the signer's
	// certificate did not pass the Verifier (unknown CA, expired, revoked,
	// wrong usage); the Verifier's own error is wrapped as well.
	ErrUntrusted = errors.New("signer not trusted")
	// ErrDecrypt means the EnvelopedData could not be decrypted with the
	// given key, or uses a cipher or key transport the policy refuses.
	ErrDecrypt = errors.New("cannot decrypt")
)
