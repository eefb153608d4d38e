// Package cms signs, verifies, encrypts and decrypts CMS (PKCS #7)
// messages with Kurier's verification policy. SignedData is built and read
// on github.com/digitorus/pkcs7; it is the only package that imports pkcs7,
// whose defaults are unsafe for our use and are fixed here once:
//
//   - digests are SHA-256 (pkcs7 defaults to SHA-1), and verification
//     refuses SHA-1 and weaker;
//   - a signer's certificate chain is verified through the caller's
//     Verifier at the caller's time, never at the signing time the signer
//     claims (pkcs7's VerifyWithChain would accept a back-dated signature
//     by an expired certificate) and never without a chain (pkcs7's Verify);
//   - panics inside pkcs7 on crafted input are recovered, and input sizes
//     are capped before parsing.
//
// EnvelopedData is built and read here (enveloped.go), because pkcs7
// transports content keys with RSA PKCS #1 v1.5 only: Encrypt writes
// AES-256-CBC content with RSAES-OAEP (SHA-256) key transport, as BSI
// TR-02102-1 recommends; Decrypt reads that and the PKCS #1 v1.5 envelopes
// of earlier messages, in DER only.
//
// Everything here handles whole byte slices, as pkcs7 does: callers cap what
// they read.
package cms
