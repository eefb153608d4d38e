package pki

import (
	"fmt"
	"os"
	"path/filepath"

	"kurier.dev/kurier/address"
	"kurier.dev/kurier/tlog"
)

// LogKey names the files of a node's transparency-log key that WriteLogKey
// wrote.
type LogKey struct {
	// Path is dir/log.key (0600): the signed-note private key that signs
	// the node's checkpoints, what kurierd's log_key names.
	Path string
	// VerifierPath is dir/log.vkey, the verifier key (VerifierKey and a
	// newline) that the operator publishes for `kurier verify --log-key`.
	VerifierPath string
	// VerifierKey is the verifier key itself, "origin+hash+key".
	VerifierKey string
	// Origin is the key's name, tlog.Origin(domain): the log's origin.
	Origin string
}

// WriteLogKey creates a node's transparency-log signing key in dir, as
// log.key (0600) and its verifier key as log.vkey (0644), named
// tlog.Origin(domain). domain must be the node's first domain (the first
// of kurierd's domains): the node signs its checkpoints for that origin
// and refuses at start a key of another name. Empty, it is the first
// domain of the node certificate in dir/cert.pem; if dir holds a node
// certificate, domain must be one it names. A new dir is made 0700.
//
// It refuses with ErrExists if dir/log.key is there: replacing the key of
// a running log would make every checkpoint signed before unverifiable
// with the published key. A crash may leave log.vkey without log.key; a
// second run then replaces it.
//
// Security: log.key is as secret as the node's TLS key; log.vkey is
// public.
func WriteLogKey(dir, domain string) (LogKey, error) {
	domain, err := logKeyDomain(dir, domain)
	if err != nil {
		return LogKey{}, fmt.Errorf("write log key: %w", err)
	}
	k := LogKey{
		Path:         filepath.Join(dir, logKeyFile),
		VerifierPath: filepath.Join(dir, logVKeyFile),
		Origin:       tlog.Origin(domain),
	}
	if FileExists(k.Path) {
		return LogKey{}, fmt.Errorf("write log key: %w: %s (a node keeps its log key for the life of its log)", ErrExists, k.Path)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return LogKey{}, fmt.Errorf("write log key: %w", err)
	}
	skey, vkey, err := tlog.GenerateKey(k.Origin)
	if err != nil {
		return LogKey{}, fmt.Errorf("write log key: %w", err)
	}
	k.VerifierKey = vkey
	// The private half first, and only if there is none: of two runs at
	// once one wins, and the verifier key written next is always its own.
	if err := WriteFileExclusive(k.Path, []byte(skey+"\n"), 0o600); err != nil {
		return LogKey{}, fmt.Errorf("write log key: %w", err)
	}
	if err := WriteFileAtomic(k.VerifierPath, []byte(vkey+"\n"), 0o644); err != nil {
		return LogKey{}, fmt.Errorf("write log key: %s written, but not its verifier key: %w", k.Path, err)
	}
	return k, nil
}

// logKeyDomain returns the domain a log key in dir is for: domain, checked
// against the node certificate in dir if there is one, or that
// certificate's first domain.
func logKeyDomain(dir, domain string) (string, error) {
	certPath := filepath.Join(dir, CertFile)
	if !FileExists(certPath) {
		if domain == "" {
			return "", fmt.Errorf("no node certificate %s to take the domain from; give the node's first domain", certPath)
		}
		return domain, address.CheckDomain(domain)
	}
	certs, err := LoadCertificates(certPath)
	if err != nil {
		return "", err
	}
	p, err := PeerOf(certs[0])
	if err != nil || p.Kind != KindNode {
		return "", fmt.Errorf("%s is not a node certificate (%v)", certPath, err)
	}
	if domain == "" {
		return p.Domains[0], nil
	}
	if !p.Serves(domain) {
		return "", fmt.Errorf("domain %s is not one of the node certificate's %v in %s", domain, p.Domains, certPath)
	}
	return domain, nil
}
