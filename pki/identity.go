package pki

import (
	"crypto"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"path/filepath"
)

// Identity is a participant's or a node's own keys and certificates, as
// kept in an identity directory.
type Identity struct {
	Cert    *x509.Certificate   // cert.pem: TLS client/server and signatures
	Key     crypto.Signer       // key.pem (ECDSA P-256); may be replaced by an HSM-backed signer
	Chain   []*x509.Certificate // intermediates after the leaf in cert.pem, if any
	EncCert *x509.Certificate   // enc-cert.pem; nil for nodes
	EncKey  crypto.Decrypter    // enc-key.pem (*rsa.PrivateKey); nil for nodes
	Roots   []*x509.Certificate // ca.pem: the federation's trust anchors
}

// LoadIdentity reads the identity kept in dir. cert.pem, key.pem and ca.pem
// are required; enc-cert.pem and enc-key.pem come as a pair or not at all
// (nodes have none). Each key must match its certificate. Errors name the
// file that is missing or bad.
func LoadIdentity(dir string) (*Identity, error) {
	certs, err := LoadCertificates(filepath.Join(dir, CertFile))
	if err != nil {
		return nil, fmt.Errorf("load identity: %w", err)
	}
	key, err := LoadKey(filepath.Join(dir, KeyFile))
	if err != nil {
		return nil, fmt.Errorf("load identity: %w", err)
	}
	if !PublicKeysEqual(certs[0].PublicKey, key.Public()) {
		return nil, fmt.Errorf("load identity %s: %s does not match %s", dir, KeyFile, CertFile)
	}
	roots, err := LoadCertificates(filepath.Join(dir, CACertFile))
	if err != nil {
		return nil, fmt.Errorf("load identity: %w", err)
	}
	id := &Identity{Cert: certs[0], Key: key, Chain: certs[1:], Roots: roots}

	encCertPath, encKeyPath := filepath.Join(dir, EncCertFile), filepath.Join(dir, EncKeyFile)
	hasCert, hasKey := FileExists(encCertPath), FileExists(encKeyPath)
	switch {
	case !hasCert && !hasKey:
		return id, nil
	case !hasKey:
		return nil, fmt.Errorf("load identity %s: %s without %s", dir, EncCertFile, EncKeyFile)
	case !hasCert:
		return nil, fmt.Errorf("load identity %s: %s without %s", dir, EncKeyFile, EncCertFile)
	}
	encCerts, err := LoadCertificates(encCertPath)
	if err != nil {
		return nil, fmt.Errorf("load identity: %w", err)
	}
	encKey, err := LoadKey(encKeyPath)
	if err != nil {
		return nil, fmt.Errorf("load identity: %w", err)
	}
	rsaKey, ok := encKey.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("load identity %s: %s is %T, want an RSA key", dir, EncKeyFile, encKey)
	}
	if !PublicKeysEqual(encCerts[0].PublicKey, rsaKey.Public()) {
		return nil, fmt.Errorf("load identity %s: %s does not match %s", dir, EncKeyFile, EncCertFile)
	}
	id.EncCert, id.EncKey = encCerts[0], rsaKey
	return id, nil
}

// Write stores the identity in dir as LoadIdentity reads it: keys before
// certificates, cert.pem last, so an interrupted write never leaves a
// certificate without its key. It replaces files that are there; the CA
// checks first that there are none (PrepareIdentityDir).
func (id *Identity) Write(dir string) error {
	if id.EncCert != nil {
		encKey, ok := id.EncKey.(crypto.Signer)
		if !ok {
			return errors.New("encryption key cannot be stored")
		}
		if err := WriteKey(filepath.Join(dir, EncKeyFile), encKey); err != nil {
			return err
		}
		if err := WriteCertificatesPEM(filepath.Join(dir, EncCertFile), id.EncCert); err != nil {
			return err
		}
	}
	if err := WriteKey(filepath.Join(dir, KeyFile), id.Key); err != nil {
		return err
	}
	if err := WriteCertificatesPEM(filepath.Join(dir, CACertFile), id.Roots...); err != nil {
		return err
	}
	return WriteCertificatesPEM(filepath.Join(dir, CertFile), append([]*x509.Certificate{id.Cert}, id.Chain...)...)
}

// Peer returns who the identity's certificate speaks for (PeerOf(id.Cert)).
func (id *Identity) Peer() (Peer, error) { return PeerOf(id.Cert) }

// TLSCertificate returns the identity's certificate, chain and key for use
// in a tls.Config.
func (id *Identity) TLSCertificate() tls.Certificate {
	der := [][]byte{id.Cert.Raw}
	for _, c := range id.Chain {
		der = append(der, c.Raw)
	}
	return tls.Certificate{Certificate: der, PrivateKey: id.Key, Leaf: id.Cert}
}

// RootPool returns the identity's trust anchors (ca.pem) as a pool.
func (id *Identity) RootPool() *x509.CertPool {
	pool := x509.NewCertPool()
	for _, c := range id.Roots {
		pool.AddCert(c)
	}
	return pool
}
