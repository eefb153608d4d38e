package daemon

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"kurier.dev/kurier/pki"
	"kurier.dev/kurier/pki/ca"
)

// The embedded development setup: one node for two domains with one agency
// and one court, so that a newcomer can send a first message at once.
const (
	DevAgency       = "poststelle@stadt.example"
	DevCourt        = "eingang@amtsgericht.example"
	DevListen       = "127.0.0.1:7443"
	devCRLValidity  = 30 * 24 * time.Hour
	devCAName       = "Kurier Development CA"
	devConfigFile   = "kurierd.yaml"
	devIdentityRoot = "identities"
	devLockFile     = ".dev.lock"
)

// DevDomains are the domains of the development node.
var DevDomains = []string{"stadt.example", "amtsgericht.example"}

// DevIdentity returns the folder of a development participant: "agency" or
// "court".
func DevIdentity(dir, name string) string { return filepath.Join(dir, devIdentityRoot, name) }

// Dev creates, or reuses, the development setup in dir and returns its
// configuration: a CA (dir/ca), a node identity (dir/node), the agency
// (identities/agency, poststelle@stadt.example) and the court
// (identities/court, eingang@amtsgericht.example), and the store in
// dir/store. The CRL is written anew at every start so that it never goes
// stale on a development machine. The configuration is also written to
// dir/kurierd.yaml as a starting point for a production config.
func Dev(dir, listen string) (*Config, error) { return DevStore(dir, listen, StoreConfig{}) }

// DevStore is Dev with the store st names instead of dir/store: with
// st.Postgres, a PostgreSQL database. Several processes may run it on one
// dir at once, each with its own listen address, to serve the same
// domains from one database: a lock file in dir makes them create the
// setup one after the other, so that the first creates it and the others
// reuse it.
func DevStore(dir, listen string, st StoreConfig) (*Config, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("dev setup: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("dev setup: %w", err)
	}
	release, err := lockDev(dir)
	if err != nil {
		return nil, fmt.Errorf("dev setup: %w", err)
	}
	defer release()
	caDir := filepath.Join(dir, "ca")
	authority, err := ca.Open(caDir)
	if errors.Is(err, fs.ErrNotExist) {
		authority, err = ca.Init(caDir, devCAName)
	}
	if err != nil {
		return nil, fmt.Errorf("dev setup: %w", err)
	}
	nodeDir := filepath.Join(dir, "node")
	if err := issueOnce(nodeDir, func(tmp string) error {
		_, err := authority.IssueNode(tmp, DevDomains)
		return err
	}); err != nil {
		return nil, fmt.Errorf("dev setup: %w", err)
	}
	people := []struct{ name, addr, display, kind string }{
		{"agency", DevAgency, "Stadt, Poststelle", "agency"},
		{"court", DevCourt, "Amtsgericht, Eingangsstelle", "court"},
	}
	logKey, err := writeLogKey(nodeDir, DevDomains[0])
	if err != nil {
		return nil, fmt.Errorf("dev setup: %w", err)
	}
	cfg := &Config{
		Listen:   listen,
		Data:     filepath.Join(dir, "store"),
		Store:    st,
		Identity: nodeDir,
		LogKey:   logKey,
		Domains:  DevDomains,
	}
	if st.Postgres != "" {
		cfg.Data = ""
	}
	for _, p := range people {
		idDir := DevIdentity(dir, p.name)
		if err := issueOnce(idDir, func(tmp string) error {
			_, err := authority.IssueParticipant(tmp, p.addr)
			return err
		}); err != nil {
			return nil, fmt.Errorf("dev setup: %w", err)
		}
		cfg.Participants = append(cfg.Participants, ParticipantConfig{
			Address: p.addr, DisplayName: p.display, Kind: p.kind,
			EncryptionCert: filepath.Join(idDir, "enc-cert.pem"),
		})
	}
	crl, err := authority.WriteCRL(devCRLValidity)
	if err != nil {
		return nil, fmt.Errorf("dev setup: %w", err)
	}
	cfg.CRL = crl
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("dev setup: %w", err)
	}
	if err := cfg.Write(filepath.Join(dir, devConfigFile)); err != nil {
		return nil, fmt.Errorf("dev setup: %w", err)
	}
	return cfg, nil
}

// issueOnce creates an identity folder at dir unless it exists: issue
// writes into a fresh sibling folder that is renamed into place only when
// complete, so an interrupted start leaves no half-made identity behind.
func issueOnce(dir string, issue func(tmp string) error) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), "."+filepath.Base(dir)+"-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp) // gone after the rename; cleans up after a failure
	if err := issue(tmp); err != nil {
		return err
	}
	return os.Rename(tmp, dir)
}

// writeLogKey creates the node's checkpoint signing key in dir (log.key,
// and log.vkey beside it) for domain's log unless it exists, and returns
// its path.
func writeLogKey(dir, domain string) (string, error) {
	k, err := pki.WriteLogKey(dir, domain)
	if errors.Is(err, pki.ErrExists) {
		return filepath.Join(dir, "log.key"), nil
	}
	return k.Path, err
}
