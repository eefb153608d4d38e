package cms

import (
	"crypto/x509"
	"fmt"

	"golang.org/x/crypto/cryptobyte"
)

// ParseEnveloped runs the EnvelopedData parser alone, for the fuzz target,
// and returns an error starting "invariant" when what it accepted breaks a
// promise Decrypt relies on.
func ParseEnveloped(der []byte, cert *x509.Certificate) error {
	env, err := parseEnveloped(der, cert)
	if err != nil {
		return err
	}
	switch {
	case env.transport != transportOAEPSHA256 && env.transport != transportPKCS1v15:
		return fmt.Errorf("invariant: key transport %d", env.transport)
	case env.keyLen != 16 && env.keyLen != 32:
		return fmt.Errorf("invariant: key length %d", env.keyLen)
	case len(env.iv) != 16:
		return fmt.Errorf("invariant: IV of %d bytes", len(env.iv))
	case len(env.ciphertext) == 0 || len(env.ciphertext)%16 != 0:
		return fmt.Errorf("invariant: ciphertext of %d bytes", len(env.ciphertext))
	}
	return nil
}

// KeyTransportOf runs the key encryption algorithm parser alone on the
// contents of an AlgorithmIdentifier, for the fuzz target.
func KeyTransportOf(alg []byte) error {
	_, err := keyTransportOf(cryptobyte.String(alg))
	return err
}
