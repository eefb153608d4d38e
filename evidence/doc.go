// Package evidence defines what a Kurier evidence is and how it is built,
// signed, parsed and verified.
//
// An evidence is a UTF-8 JSON statement about one event in a message's life
// (see Statement), carried as attached CMS SignedData (DER) and signed by its
// issuer: a node, or the recipient for an Acknowledgement or a Rejection.
// Anyone can check one without Kurier:
//
//	openssl cms -verify -inform DER -in 01-SubmissionAcceptance.p7m -CAfile ca.pem
//
// Evidence about one recipient's copy of a message forms a chain: each
// statement names the SHA-256 of the previous evidence's DER file, and the
// order of types follows the state machine in Allowed. The JSON is written
// in one canonical form, so a statement's bytes have one reading.
package evidence
