// Package pki is what every participant and node needs of Kurier's
// public-key infrastructure: the identities they hold, who a peer is, the
// trust store with the CA's revocation list, the TLS configurations that
// every connection uses, and participants' certificate signing requests.
// Running the CA itself (issuing, revoking, writing CRLs) is package
// pki/ca, the only one that links cfssl; nothing here depends on it.
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
//	                     (package pki/ca)
//	identity directory:  cert.pem, key.pem (0600), ca.pem, and for participants
//	                     enc-cert.pem, enc-key.pem (0600); for nodes the
//	                     transparency-log key log.key (0600) and log.vkey
//	                     (WriteLogKey); csr.pem and enc-csr.pem where a
//	                     participant made its own keys (NewParticipantRequest)
//
// A participant's keys are made either by the CA (ca.CA.IssueParticipant,
// for development) or on the participant's own machine, with only the
// certificate signing requests going to the CA (NewParticipantRequest,
// ParseRequest, ca.CA.IssueRequests).
//
// Private keys are PKCS#8 PEM. The file helpers exported here
// (WriteFileAtomic, WriteKey, PrepareIdentityDir, ...) exist so that
// package pki/ca writes identities exactly as LoadIdentity reads them.
package pki
