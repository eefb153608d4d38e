package pki_test

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net"
	"net/url"
	"testing"

	"github.com/google/go-cmp/cmp"

	"kurier.dev/kurier/pki"
)

func TestPeerOf(t *testing.T) {
	tests := map[string]struct {
		cert *x509.Certificate
		want pki.Peer
	}{
		"participant": {fx.alice.Cert, pki.Peer{Kind: pki.KindParticipant, Address: "alice@stadt.example"}},
		"node":        {fx.node.Cert, pki.Peer{Kind: pki.KindNode, Domains: []string{"stadt.example", "kreis.example"}}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := pki.PeerOf(tt.cert)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("PeerOf (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPeerOf_badShapes(t *testing.T) {
	mail := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageEmailProtection}
	tls := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	tests := map[string]*x509.Certificate{
		"nil":                   nil,
		"encryption cert":       fx.alice.EncCert,
		"ca":                    fx.ca.Certificate(),
		"no SAN":                {Subject: pkix.Name{CommonName: "alice@stadt.example"}, ExtKeyUsage: mail},
		"two emails":            {EmailAddresses: []string{"a@stadt.example", "b@stadt.example"}, ExtKeyUsage: mail},
		"email and DNS":         {EmailAddresses: []string{"a@stadt.example"}, DNSNames: []string{"stadt.example"}, ExtKeyUsage: append(mail, x509.ExtKeyUsageServerAuth)},
		"email and URI":         {EmailAddresses: []string{"a@stadt.example"}, URIs: []*url.URL{{Scheme: "https", Host: "stadt.example"}}, ExtKeyUsage: mail},
		"uppercase address":     {EmailAddresses: []string{"Alice@stadt.example"}, ExtKeyUsage: mail},
		"participant no client": {EmailAddresses: []string{"a@stadt.example"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}},
		"node no client auth":   {DNSNames: []string{"stadt.example"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}},
		"node no server auth":   {DNSNames: []string{"stadt.example"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}},
		"node bad domain":       {DNSNames: []string{"*.stadt.example"}, ExtKeyUsage: tls},
		"node with IP":          {DNSNames: []string{"stadt.example"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: tls},
		"IP only":               {IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: tls},
	}
	for name, cert := range tests {
		t.Run(name, func(t *testing.T) {
			if cert != nil && cert.Raw == nil {
				cert = makeCert(t, cert)
			}
			p, err := pki.PeerOf(cert)
			if !errors.Is(err, pki.ErrUnknownIdentity) {
				t.Fatalf("PeerOf = %v, %v; want ErrUnknownIdentity", p, err)
			}
		})
	}
}

func TestPeer_Serves(t *testing.T) {
	node := pki.Peer{Kind: pki.KindNode, Domains: []string{"stadt.example", "kreis.example"}}
	participant := pki.Peer{Kind: pki.KindParticipant, Address: "stadt.example@stadt.example"}
	for _, tt := range []struct {
		p      pki.Peer
		domain string
		want   bool
	}{
		{node, "stadt.example", true},
		{node, "kreis.example", true},
		{node, "land.example", false},
		{node, "", false},
		{participant, "stadt.example", false},
	} {
		if got := tt.p.Serves(tt.domain); got != tt.want {
			t.Errorf("%v.Serves(%q) = %v", tt.p, tt.domain, got)
		}
	}
	if got := node.String(); got != "node stadt.example,kreis.example" {
		t.Errorf("String() = %q", got)
	}
	if got := participant.String(); got != "participant stadt.example@stadt.example" {
		t.Errorf("String() = %q", got)
	}
}
