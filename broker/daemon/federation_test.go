package daemon

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"kurier.dev/kurier/pki"
	"kurier.dev/kurier/tlog"
)

var (
	testNodes = []FederationNode{
		{Domain: "stadt.example", Listen: "127.0.0.1:7441"},
		{Domain: "amtsgericht.example", Listen: "127.0.0.1:7442"},
		{Domain: "landgericht.example", Listen: "127.0.0.1:7443"},
	}
	testMailboxes = []string{"poststelle@stadt.example", "eingang@amtsgericht.example", "buergerbuero@stadt.example"}
)

func TestFederation(t *testing.T) {
	dir := t.TempDir()
	setup, err := Federation(dir, testNodes, testMailboxes)
	if err != nil {
		t.Fatal(err)
	}
	if setup.CA != filepath.Join(dir, "ca", "ca.pem") {
		t.Errorf("CA at %s", setup.CA)
	}
	caCerts, err := pki.LoadCertificates(setup.CA)
	if err != nil {
		t.Fatal(err)
	}
	ca := caCerts[0]
	wantParticipants := map[string][]string{
		"stadt.example":       {"poststelle@stadt.example", "buergerbuero@stadt.example"},
		"amtsgericht.example": {"eingang@amtsgericht.example"},
	}
	serials := map[string]string{} // node domain or address → certificate serial
	for _, n := range testNodes {
		path := setup.Configs[n.Domain]
		if path != filepath.Join(dir, n.Domain, "kurierd.yaml") {
			t.Errorf("%s: config at %s", n.Domain, path)
		}
		cfg, err := LoadConfig(path)
		if err != nil {
			t.Fatalf("%s: %v", n.Domain, err)
		}
		wantPeers := map[string]string{}
		for _, p := range testNodes {
			if p.Domain != n.Domain {
				wantPeers[p.Domain] = p.Listen
			}
		}
		if diff := cmp.Diff(wantPeers, cfg.Peers); diff != "" {
			t.Errorf("%s: peers (-want +got):\n%s", n.Domain, diff)
		}
		var want []ParticipantConfig
		for _, a := range wantParticipants[n.Domain] {
			want = append(want, ParticipantConfig{Address: a, DisplayName: a, Kind: "agency", EncryptionCert: filepath.Join(dir, "identities", a, "enc-cert.pem")})
		}
		if diff := cmp.Diff(want, cfg.Participants, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("%s: participants (-want +got):\n%s", n.Domain, diff)
		}
		if cfg.Listen != n.Listen || cfg.Data != filepath.Join(dir, n.Domain, "store") || cfg.CRL != setup.CRL ||
			!cmp.Equal(cfg.Domains, []string{n.Domain}) {
			t.Errorf("%s: config %+v", n.Domain, cfg)
		}
		id, err := pki.LoadIdentity(cfg.Identity)
		if err != nil {
			t.Fatalf("%s: %v", n.Domain, err)
		}
		peer, err := id.Peer()
		if err != nil || peer.Kind != pki.KindNode || !cmp.Equal(peer.Domains, []string{n.Domain}) {
			t.Errorf("%s: node certificate speaks for %v (%v)", n.Domain, peer, err)
		}
		if len(id.Roots) != 1 || !id.Roots[0].Equal(ca) || id.Cert.CheckSignatureFrom(ca) != nil {
			t.Errorf("%s: node identity not of the federation's CA", n.Domain)
		}
		serials[n.Domain] = id.Cert.SerialNumber.String()
		if _, err := readSecret(cfg.LogKey); err != nil {
			t.Errorf("%s: log key: %v", n.Domain, err)
		}
		vkey, err := os.ReadFile(filepath.Join(cfg.Identity, "log.vkey"))
		if err != nil || !strings.HasPrefix(string(vkey), tlog.Origin(n.Domain)+"+") {
			t.Errorf("%s: log.vkey %q (%v), want the origin %s", n.Domain, vkey, err, tlog.Origin(n.Domain))
		}
	}
	if _, err := pki.NewTrustStore(caCerts, setup.CRL); err != nil {
		t.Errorf("the CRL does not load: %v", err)
	}
	for _, a := range testMailboxes {
		if setup.Identities[a] != filepath.Join(dir, "identities", a) {
			t.Errorf("%s: identity at %s", a, setup.Identities[a])
		}
		id, err := pki.LoadIdentity(setup.Identities[a])
		if err != nil {
			t.Fatalf("%s: %v", a, err)
		}
		peer, err := id.Peer()
		if err != nil || peer.Address != a || id.EncCert == nil || id.EncCert.EmailAddresses[0] != a {
			t.Errorf("%s: identity speaks for %v (%v)", a, peer, err)
		}
		if len(id.Roots) != 1 || !id.Roots[0].Equal(ca) {
			t.Errorf("%s: ca.pem is not the federation's CA", a)
		}
		serials[a] = id.Cert.SerialNumber.String()
	}

	t.Run("a node serves its domain", func(t *testing.T) {
		cfg, err := LoadConfig(setup.Configs["stadt.example"])
		if err != nil {
			t.Fatal(err)
		}
		cfg.Listen = "127.0.0.1:0" // the configured port may be taken on this machine
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		ready := make(chan net.Addr, 1)
		done := make(chan error, 1)
		go func() { done <- Run(ctx, cfg, slog.New(slog.DiscardHandler), func(a net.Addr) { ready <- a }) }()
		var addr net.Addr
		select {
		case addr = <-ready:
		case err := <-done:
			t.Fatalf("the node did not start: %v", err)
		}
		id, err := pki.LoadIdentity(setup.Identities["poststelle@stadt.example"])
		if err != nil {
			t.Fatal(err)
		}
		trust, err := pki.NewTrustStore(id.Roots, setup.CRL)
		if err != nil {
			t.Fatal(err)
		}
		tc := pki.ClientTLS(id, trust, "stadt.example")
		tc.NextProtos = []string{"h2"}
		conn, err := tls.Dial("tcp", addr.String(), tc)
		if err != nil {
			t.Errorf("handshake with the stadt.example node: %v", err)
		} else {
			conn.Close()
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	})

	t.Run("second run reuses", func(t *testing.T) {
		moved := append([]FederationNode(nil), testNodes...)
		moved[2].Listen = "127.0.0.1:7453"
		logKey, _ := os.ReadFile(filepath.Join(dir, "stadt.example", "node", "log.key"))
		again, err := Federation(dir, moved, testMailboxes)
		if err != nil {
			t.Fatal(err)
		}
		for name, serial := range serials {
			p := again.Identities[name]
			if p == "" {
				p = filepath.Join(dir, name, "node")
			}
			id, err := pki.LoadIdentity(p)
			if err != nil || id.Cert.SerialNumber.String() != serial || !id.Roots[0].Equal(ca) {
				t.Errorf("second run replaced the identity of %s (%v)", name, err)
			}
		}
		if k, _ := os.ReadFile(filepath.Join(dir, "stadt.example", "node", "log.key")); string(k) != string(logKey) {
			t.Error("second run replaced the log key")
		}
		cfg, err := LoadConfig(again.Configs["amtsgericht.example"])
		if err != nil {
			t.Fatal(err)
		}
		if got := cfg.Peers["landgericht.example"]; got != "127.0.0.1:7453" {
			t.Errorf("second run did not rewrite the peers: landgericht.example at %s", got)
		}
	})

	t.Run("identities of another CA refused", func(t *testing.T) {
		if err := os.RemoveAll(filepath.Join(dir, "ca")); err != nil {
			t.Fatal(err)
		}
		_, err := Federation(dir, testNodes, testMailboxes)
		if err == nil || !strings.Contains(err.Error(), "issued by another CA") {
			t.Fatalf("Federation over identities of a lost CA = %v, want a refusal", err)
		}
	})
}

func TestFederation_Refused(t *testing.T) {
	node := func(domain, listen string) FederationNode { return FederationNode{Domain: domain, Listen: listen} }
	stadt := node("stadt.example", "127.0.0.1:7441")
	for name, tc := range map[string]struct {
		nodes     []FederationNode
		mailboxes []string
		want      string
	}{
		"no nodes":          {want: "no nodes given"},
		"domain twice":      {nodes: []FederationNode{stadt, node("stadt.example", "127.0.0.1:7442")}, want: "node stadt.example is given twice"},
		"invalid domain":    {nodes: []FederationNode{node("Stadt", "127.0.0.1:7441")}, want: `node "Stadt"`},
		"empty domain":      {nodes: []FederationNode{node("", "127.0.0.1:7441")}, want: "empty domain"},
		"listen no port":    {nodes: []FederationNode{node("stadt.example", "127.0.0.1")}, want: "node stadt.example: listen address"},
		"listen no host":    {nodes: []FederationNode{node("stadt.example", ":7441")}, want: "has no host"},
		"listen port 0":     {nodes: []FederationNode{node("stadt.example", "127.0.0.1:0")}, want: `port "0"`},
		"listen twice":      {nodes: []FederationNode{stadt, node("amtsgericht.example", "127.0.0.1:7441")}, want: "both listen on 127.0.0.1:7441"},
		"mailbox invalid":   {nodes: []FederationNode{stadt}, mailboxes: []string{"Poststelle@stadt.example"}, want: "Poststelle@stadt.example"},
		"mailbox twice":     {nodes: []FederationNode{stadt}, mailboxes: []string{"a@stadt.example", "a@stadt.example"}, want: "mailbox a@stadt.example is given twice"},
		"mailbox elsewhere": {nodes: []FederationNode{stadt}, mailboxes: []string{"eingang@lg.example"}, want: "no node serves lg.example"},
	} {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "fed")
			_, err := Federation(dir, tc.nodes, tc.mailboxes)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Federation = %v, want an error mentioning %q", err, tc.want)
			}
			if _, err := os.Stat(dir); err == nil {
				t.Error("a refused federation wrote files")
			}
		})
	}
}
