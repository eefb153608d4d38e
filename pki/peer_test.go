package pki

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net"
	"net/url"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestPeerOf(t *testing.T) {
	tests := map[string]struct {
		cert *x509.Certificate
		want Peer
	}{
		"participant": {fx.alice.Cert, Peer{Kind: KindParticipant, Address: "alice@stadt.example"}},
		"node":        {fx.node.Cert, Peer{Kind: KindNode, Domains: []string{"stadt.example", "kreis.example"}}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := PeerOf(tt.cert)
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
				cert = fx.ca.makeCert(t, cert)
			}
			p, err := PeerOf(cert)
			if !errors.Is(err, ErrUnknownIdentity) {
				t.Fatalf("PeerOf = %v, %v; want ErrUnknownIdentity", p, err)
			}
		})
	}
}

func TestPeer_Serves(t *testing.T) {
	node := Peer{Kind: KindNode, Domains: []string{"stadt.example", "kreis.example"}}
	participant := Peer{Kind: KindParticipant, Address: "stadt.example@stadt.example"}
	for _, tt := range []struct {
		p      Peer
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
