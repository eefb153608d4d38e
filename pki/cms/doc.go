// Package cms signs, verifies, encrypts and decrypts CMS (RFC 5652)
// messages with Kurier's verification policy. It reads and writes the
// structures itself, with cryptobyte and a small BER reader (ber.go), so
// that the policy is enforced where the bytes are read:
//
//   - digests are SHA-256 (SHA-512 for Ed25519), and verification refuses
//     SHA-1 and weaker, DSA and unknown algorithms;
//   - a signer's certificate chain is verified through the caller's
//     Verifier at the caller's time, never at the signing time the signer
//     claims (which would accept a back-dated signature by an expired
//     certificate) and never without a chain; a claimed signing time must
//     still fall within the signer's validity;
//   - exactly one signer, whose certificate is embedded, and content type
//     id-data, in the content info and in the signed attributes; the
//     signature over signed attributes is checked over their DER SET OF
//     encoding (tag 0x31), as RFC 5652 section 5.4 says;
//   - EnvelopedData is AES-CBC with RSAES-OAEP (SHA-256) key transport, as
//     BSI TR-02102-1 recommends; PKCS #1 v1.5 envelopes of earlier
//     messages still open, with implicit rejection;
//   - every length is checked against what holds it, nesting is bounded,
//     input sizes are capped, and nothing after a structure is accepted.
//
// Two ways to use it. Sign, Verify, Encrypt and Decrypt take and return
// whole byte slices: right for evidence and envelopes, which are small and
// verified at high rates (DER SignedData is parsed in place, with no
// conversion pass). SignWriter, EncryptWriter, DecryptReader and VerifyReader stream a
// payload in 64 KiB pieces, so sealing and opening a document take memory
// independent of its size; they write indefinite-length BER, as openssl
// cms -stream does, and read DER and BER alike. What a DecryptReader or a
// VerifyReader yields is not authenticated until VerifyReader.Verify
// returns nil: callers stage it.
package cms
