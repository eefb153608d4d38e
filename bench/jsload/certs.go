package jsload

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// certFiles are the PEM files the server's TLS configuration names.
type certFiles struct{ ca, cert, key string }

// certLifetime is how long the generated certificates are valid: one run.
const certLifetime = 24 * time.Hour

// writeCerts makes a CA, a server certificate for 127.0.0.1 and a client
// certificate, all ECDSA P-256 as Kurier's node and participants use,
// writes the server's files into dir and returns them with the client's
// TLS 1.3 configuration, which trusts only that CA.
func writeCerts(dir string) (certFiles, *tls.Config, error) {
	now := time.Now()
	caKey, caDER, err := issue(&x509.Certificate{
		Subject:               pkix.Name{CommonName: "jsload CA"},
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}, nil, nil, now)
	if err != nil {
		return certFiles{}, nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return certFiles{}, nil, fmt.Errorf("parse the CA certificate: %w", err)
	}
	srvKey, srvDER, err := issue(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "nats-server"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, ca, caKey, now)
	if err != nil {
		return certFiles{}, nil, err
	}
	cliKey, cliDER, err := issue(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "jsload publisher"},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, ca, caKey, now)
	if err != nil {
		return certFiles{}, nil, err
	}

	files := certFiles{ca: filepath.Join(dir, "ca.pem"), cert: filepath.Join(dir, "server.pem"), key: filepath.Join(dir, "server-key.pem")}
	srvKeyDER, err := x509.MarshalPKCS8PrivateKey(srvKey)
	if err != nil {
		return certFiles{}, nil, fmt.Errorf("encode the server key: %w", err)
	}
	for _, f := range []struct {
		path, typ string
		der       []byte
	}{{files.ca, "CERTIFICATE", caDER}, {files.cert, "CERTIFICATE", srvDER}, {files.key, "PRIVATE KEY", srvKeyDER}} {
		if err := os.WriteFile(f.path, pem.EncodeToMemory(&pem.Block{Type: f.typ, Bytes: f.der}), 0o600); err != nil {
			return certFiles{}, nil, fmt.Errorf("write %s: %w", f.path, err)
		}
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	client := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		RootCAs:      roots,
		Certificates: []tls.Certificate{{Certificate: [][]byte{cliDER}, PrivateKey: cliKey}},
	}
	return files, client, nil
}

// issue makes a new P-256 key and a certificate for it from tmpl, signed
// by parent's key, or self-signed if parent is nil.
func issue(tmpl, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, now time.Time) (*ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate a key for %s: %w", tmpl.Subject.CommonName, err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, nil, fmt.Errorf("serial for %s: %w", tmpl.Subject.CommonName, err)
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore, tmpl.NotAfter = now.Add(-time.Hour), now.Add(certLifetime)
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		return nil, nil, fmt.Errorf("certificate for %s: %w", tmpl.Subject.CommonName, err)
	}
	return key, der, nil
}
