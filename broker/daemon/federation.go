package daemon

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"kurier.dev/kurier/address"
	"kurier.dev/kurier/pki"
	"kurier.dev/kurier/pki/ca"
)

// FederationNode is one node of a development federation.
type FederationNode struct {
	// Domain is the one domain the node serves, e.g. amtsgericht.example.
	Domain string
	// Listen is the host:port the node listens on; the other nodes dial it
	// there, so it needs a host and a port (not 0).
	Listen string
}

// FederationSetup is what Federation wrote.
type FederationSetup struct {
	// Dir is the federation's directory, made absolute.
	Dir string
	// CA is the development CA's certificate (Dir/ca/ca.pem), the trust
	// anchor of every node and participant.
	CA string
	// CRL is the CA's CRL, written anew at every run.
	CRL string
	// Configs holds each node's config file (Dir/DOMAIN/kurierd.yaml), by
	// domain.
	Configs map[string]string
	// Identities holds each participant's identity folder
	// (Dir/identities/ADDRESS), by address.
	Identities map[string]string
}

// Federation creates, or reuses, a development federation in dir: several
// nodes on one machine, one domain each, that relay to each other. It
// writes one development CA (dir/ca) and its CRL; for each node a node
// identity for exactly its domain (dir/DOMAIN/node), a checkpoint signing
// key (dir/DOMAIN/node/log.key and log.vkey) and dir/DOMAIN/kurierd.yaml,
// whose participants are the mailboxes of its domain and whose peers are
// all the other nodes; and for each mailbox a participant identity in
// dir/identities/ADDRESS.
//
// The nodes and mailboxes are checked before anything is written. A second
// run on the same dir reuses the CA, the identities and the keys, refusing
// any that the CA did not issue for that name, and rewrites the CRL and the
// configs. The identities are development material: their keys lie
// unprotected in dir.
func Federation(dir string, nodes []FederationNode, mailboxes []string) (*FederationSetup, error) {
	if err := checkFederation(nodes, mailboxes); err != nil {
		return nil, fmt.Errorf("federation setup: %w", err)
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("federation setup: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("federation setup: %w", err)
	}
	authority, err := openOrInitCA(filepath.Join(dir, "ca"))
	if err != nil {
		return nil, fmt.Errorf("federation setup: %w", err)
	}
	setup := &FederationSetup{
		Dir: dir, CA: filepath.Join(dir, "ca", "ca.pem"),
		Configs: map[string]string{}, Identities: map[string]string{},
	}
	participants := map[string][]ParticipantConfig{}
	for _, m := range mailboxes {
		idDir := filepath.Join(dir, devIdentityRoot, m)
		if err := issueChecked(authority, idDir, pki.Peer{Kind: pki.KindParticipant, Address: m}, func(tmp string) error {
			_, err := authority.IssueParticipant(tmp, m)
			return err
		}); err != nil {
			return nil, fmt.Errorf("federation setup: %w", err)
		}
		setup.Identities[m] = idDir
		d := address.DomainOf(m)
		participants[d] = append(participants[d], ParticipantConfig{
			Address: m, DisplayName: m, Kind: "agency",
			EncryptionCert: filepath.Join(idDir, "enc-cert.pem"),
		})
	}
	if setup.CRL, err = authority.WriteCRL(devCRLValidity); err != nil {
		return nil, fmt.Errorf("federation setup: %w", err)
	}
	for _, n := range nodes {
		path, err := writeFederationNode(authority, dir, setup.CRL, n, nodes, participants[n.Domain])
		if err != nil {
			return nil, fmt.Errorf("federation setup: node %s: %w", n.Domain, err)
		}
		setup.Configs[n.Domain] = path
	}
	return setup, nil
}

// checkFederation refuses a federation that cannot work, naming every
// problem, before anything is written.
func checkFederation(nodes []FederationNode, mailboxes []string) error {
	if len(nodes) == 0 {
		return errors.New("no nodes given; give at least one DOMAIN=HOST:PORT")
	}
	var errs []error
	served := map[string]bool{}
	listens := map[string]string{}
	for _, n := range nodes {
		if err := address.CheckDomain(n.Domain); err != nil {
			errs = append(errs, fmt.Errorf("node %q: %w", n.Domain, err))
		} else if served[n.Domain] {
			errs = append(errs, fmt.Errorf("node %s is given twice", n.Domain))
		}
		served[n.Domain] = true
		if err := checkHostPort(n.Listen); err != nil {
			errs = append(errs, fmt.Errorf("node %s: listen address: %w", n.Domain, err))
		} else if other, ok := listens[n.Listen]; ok {
			errs = append(errs, fmt.Errorf("nodes %s and %s both listen on %s", other, n.Domain, n.Listen))
		}
		listens[n.Listen] = n.Domain
	}
	for i, m := range mailboxes {
		a, err := address.Parse(m)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("mailbox: %w", err))
		case slices.Contains(mailboxes[:i], m):
			errs = append(errs, fmt.Errorf("mailbox %s is given twice", m))
		case !served[a.Domain]:
			errs = append(errs, fmt.Errorf("mailbox %s: no node serves %s", m, a.Domain))
		}
	}
	return errors.Join(errs...)
}

// writeFederationNode issues (or reuses) node n's identity and log key and
// writes its config, which it returns the path of once it loads.
func writeFederationNode(authority *ca.CA, dir, crl string, n FederationNode, nodes []FederationNode, participants []ParticipantConfig) (string, error) {
	nodeDir := filepath.Join(dir, n.Domain, "node")
	if err := issueChecked(authority, nodeDir, pki.Peer{Kind: pki.KindNode, Domains: []string{n.Domain}}, func(tmp string) error {
		_, err := authority.IssueNode(tmp, []string{n.Domain})
		return err
	}); err != nil {
		return "", err
	}
	logKey, err := writeLogKey(nodeDir, n.Domain)
	if err != nil {
		return "", err
	}
	cfg := &Config{
		Listen:       n.Listen,
		Data:         filepath.Join(dir, n.Domain, "store"),
		Identity:     nodeDir,
		CRL:          crl,
		LogKey:       logKey,
		Domains:      []string{n.Domain},
		Participants: participants,
		Peers:        map[string]string{},
	}
	for _, p := range nodes {
		if p.Domain != n.Domain {
			cfg.Peers[p.Domain] = p.Listen
		}
	}
	if err := cfg.Validate(); err != nil {
		return "", err
	}
	path := filepath.Join(dir, n.Domain, devConfigFile)
	if err := cfg.Write(path); err != nil {
		return "", err
	}
	if _, err := LoadConfig(path); err != nil {
		return "", err
	}
	return path, nil
}

// openOrInitCA opens the development CA in dir, creating it if there is
// none.
func openOrInitCA(dir string) (*ca.CA, error) {
	authority, err := ca.Open(dir)
	if errors.Is(err, fs.ErrNotExist) {
		authority, err = ca.Init(dir, devCAName)
	}
	return authority, err
}

// issueChecked issues an identity at dir with issueOnce, and checks that
// the identity found there, new or reused, was issued by authority for exactly
// want: a folder left from another CA or for another name would only fail
// later, at a handshake.
func issueChecked(authority *ca.CA, dir string, want pki.Peer, issue func(tmp string) error) error {
	if err := issueOnce(dir, issue); err != nil {
		return err
	}
	id, err := pki.LoadIdentity(dir)
	if err != nil {
		return err
	}
	if err := id.Cert.CheckSignatureFrom(authority.Certificate()); err != nil {
		return fmt.Errorf("%s was issued by another CA than this federation's; remove it to issue it anew", dir)
	}
	p, err := id.Peer()
	if err != nil {
		return fmt.Errorf("%s: %w", dir, err)
	}
	if p.Kind != want.Kind || p.Address != want.Address || !slices.Equal(p.Domains, want.Domains) {
		return fmt.Errorf("%s holds the identity of %v, not of %v; remove it to issue it anew", dir, p, want)
	}
	return nil
}
