// Package cms signs, verifies, encrypts and decrypts CMS (PKCS #7)
// messages with Kurier's verification policy, on github.com/digitorus/pkcs7.
// It is the only package that imports pkcs7, whose defaults are unsafe for
// our use and are fixed here once:
//
//   - digests are SHA-256 (pkcs7 defaults to SHA-1), and verification
//     refuses SHA-1 and weaker;
//   - content encryption is AES-256-CBC (pkcs7 defaults to DES), set once
//     in init because pkcs7 keeps it in a package variable;
//   - a signer's certificate chain is verified through the caller's
//     Verifier at the caller's time, never at the signing time the signer
//     claims (pkcs7's VerifyWithChain would accept a back-dated signature
//     by an expired certificate) and never without a chain (pkcs7's Verify);
//   - panics inside pkcs7 on crafted input are recovered, and input sizes
//     are capped before parsing.
//
// Everything here handles whole byte slices, as pkcs7 does: callers cap what
// they read.
package cms
