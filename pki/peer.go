package pki

import (
	"crypto/x509"
	"fmt"
	"slices"
	"strings"

	"kurier.dev/kurier/address"
)

// Kind says what a certificate speaks for.
type Kind int

// The kinds of peer. The zero Kind is no peer at all.
const (
	KindParticipant Kind = iota + 1
	KindNode
)

// String returns "participant" or "node".
func (k Kind) String() string {
	switch k {
	case KindParticipant:
		return "participant"
	case KindNode:
		return "node"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Peer is who a certificate speaks for, taken from the certificate alone
// and never from anything a caller sends.
type Peer struct {
	Kind    Kind
	Address string   // participant: its address, the one email SAN
	Domains []string // node: the domains it serves, its DNS SANs
}

// String returns "participant local@domain" or "node domain[,domain...]",
// for logs and error messages.
func (p Peer) String() string {
	switch p.Kind {
	case KindParticipant:
		return "participant " + p.Address
	case KindNode:
		return "node " + strings.Join(p.Domains, ",")
	}
	return "unknown peer"
}

// Serves reports whether p is a node that serves domain.
func (p Peer) Serves(domain string) bool {
	return p.Kind == KindNode && slices.Contains(p.Domains, domain)
}

// PeerOf returns who cert speaks for. It checks the shape only; that the
// certificate is trusted, current and not revoked is the TrustStore's
// business, and callers must have verified it first.
//
// A participant certificate has exactly one email SAN holding a valid
// address, no DNS, IP or URI SAN, and the client-auth EKU (it is the
// participant's TLS certificate). A node certificate has one or more DNS
// SANs holding valid domains, no email, IP or URI SAN, and both the
// server-auth and client-auth EKUs. CA certificates and anything else are
// refused; every error wraps ErrUnknownIdentity and names the problem.
func PeerOf(cert *x509.Certificate) (Peer, error) {
	if cert == nil {
		return Peer{}, fmt.Errorf("%w: no certificate", ErrUnknownIdentity)
	}
	if cert.IsCA {
		return Peer{}, fmt.Errorf("%w: %q is a CA certificate", ErrUnknownIdentity, cert.Subject)
	}
	switch {
	case len(cert.EmailAddresses) > 0:
		return participantOf(cert)
	case len(cert.DNSNames) > 0:
		return nodeOf(cert)
	}
	return Peer{}, fmt.Errorf("%w: %q has neither an email nor a DNS SAN", ErrUnknownIdentity, cert.Subject)
}

func participantOf(cert *x509.Certificate) (Peer, error) {
	fail := func(format string, args ...any) (Peer, error) {
		return Peer{}, fmt.Errorf("%w: participant certificate %q: %s", ErrUnknownIdentity, cert.Subject, fmt.Sprintf(format, args...))
	}
	if n := len(cert.EmailAddresses); n != 1 {
		return fail("%d email SANs, want exactly one", n)
	}
	if len(cert.DNSNames)+len(cert.IPAddresses)+len(cert.URIs) > 0 {
		return fail("has DNS, IP or URI SANs besides the email SAN")
	}
	addr := cert.EmailAddresses[0]
	if _, err := address.Parse(addr); err != nil {
		return fail("%v", err)
	}
	if !slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
		return fail("no client-auth EKU (an encryption certificate?)")
	}
	return Peer{Kind: KindParticipant, Address: addr}, nil
}

func nodeOf(cert *x509.Certificate) (Peer, error) {
	fail := func(format string, args ...any) (Peer, error) {
		return Peer{}, fmt.Errorf("%w: node certificate %q: %s", ErrUnknownIdentity, cert.Subject, fmt.Sprintf(format, args...))
	}
	if len(cert.IPAddresses)+len(cert.URIs) > 0 {
		return fail("has IP or URI SANs")
	}
	for _, d := range cert.DNSNames {
		if err := address.CheckDomain(d); err != nil {
			return fail("%v", err)
		}
	}
	if !slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageServerAuth) || !slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
		return fail("needs both the server-auth and client-auth EKUs")
	}
	return Peer{Kind: KindNode, Domains: slices.Clone(cert.DNSNames)}, nil
}
