// Package pki is Kurier's public-key infrastructure: the federation CA (on
// cfssl), the identities that participants and nodes hold, the trust store
// with the CA's revocation list, and the TLS configurations that every
// connection uses.
//
// Who a peer is comes from its certificate alone (PeerOf): a participant
// certificate carries exactly one email SAN, the participant's address; a
// node certificate carries the node's domains as DNS SANs. Every
// verification in a node and in a client goes through a TrustStore, which
// fails closed: a missing, forged or stale CRL is an error, never "not
// revoked".
//
// Files on disk:
//
//	CA directory:        ca.pem, ca-key.pem (0600), revoked.json, crl.pem, crlnumber
//	identity directory:  cert.pem, key.pem (0600), ca.pem, and for participants
//	                     enc-cert.pem, enc-key.pem (0600); for nodes the
//	                     transparency-log key log.key (0600) and log.vkey
//	                     (WriteLogKey); csr.pem and enc-csr.pem where a
//	                     participant made its own keys (NewParticipantRequest)
//
// A participant's keys are made either by the CA (IssueParticipant, for
// development) or on the participant's own machine, with only the
// certificate signing requests going to the CA (NewParticipantRequest,
// ParseRequest, CA.IssueRequests).
//
// Private keys are PKCS#8 PEM. This is the only package that imports cfssl.
package pki
