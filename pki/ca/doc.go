// Package ca runs the federation's certificate authority, on cfssl: it
// creates the CA (Init) and opens it (Open), issues node and participant
// certificates (IssueNode, IssueParticipant), also from the certificate
// signing requests of participants that keep their keys on their own
// machines (IssueRequests, after pki.ParseRequest), revokes certificates
// (Revoke) and writes the CRLs that every verifier needs (WriteCRL).
//
// Only the CA operator's tool and development setups link this package:
// participants and nodes load identities, verify peers and check
// revocation with package pki, which does not depend on cfssl. This is the
// only package that imports cfssl.
//
// A CA directory holds:
//
//	ca.pem        the root certificate, which identity folders carry as ca.pem
//	ca-key.pem    the root's private key (0600), PKCS#8 PEM
//	revoked.json  every revocation so far (Revoke)
//	crl.pem       the current CRL (WriteCRL), and crlnumber, its number
//
// Issued identities are written in pki's identity directory layout, so
// that pki.LoadIdentity reads them. Errors wrap pki.ErrExists where an
// identity or CA would be overwritten and pki.ErrBadCSR where a request is
// refused.
package ca
