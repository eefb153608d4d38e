package pki

import "errors"

// Sentinel errors, checked with errors.Is; the wrapping error says which
// certificate, file or serial is concerned.
var (
	// ErrRevoked means a certificate in the chain is on the CA's CRL.
	ErrRevoked = errors.New("certificate revoked")
	// ErrCRLStale means the CRL's NextUpdate has passed. Verification
	// refuses to go on with old revocation data; the operator must publish a
	// fresh CRL (`kurier pki crl`).
	ErrCRLStale = errors.New("crl is stale")
	// ErrExists means creating a CA, an identity, a participant's request
	// or a log key would overwrite existing keys or certificates.
	ErrExists = errors.New("already exists")
	// ErrBadCSR means a certificate signing request was refused: it does
	// not parse, its signature does not verify, or its key or address is
	// not one the CA certifies.
	ErrBadCSR = errors.New("certificate request refused")
	// ErrUnknownIdentity means a certificate is neither a well-formed
	// participant nor a well-formed node certificate.
	ErrUnknownIdentity = errors.New("unknown identity")
	// ErrNoCRL means a certificate's issuer has no CRL here, so its
	// revocation cannot be checked; such chains are refused.
	ErrNoCRL = errors.New("no CRL for the certificate's issuer")
)
