package pki

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// File names inside an identity directory (see the package comment).
// CACertFile is also the name of the CA's own certificate in a CA
// directory.
const (
	CACertFile  = "ca.pem"
	CertFile    = "cert.pem"
	KeyFile     = "key.pem"
	EncCertFile = "enc-cert.pem"
	EncKeyFile  = "enc-key.pem"
)

// Other file names and PEM block types.
const (
	csrFile        = "csr.pem"
	encCSRFile     = "enc-csr.pem"
	logKeyFile     = "log.key"
	logVKeyFile    = "log.vkey"
	pemCertificate = "CERTIFICATE"
	pemCRL         = "X509 CRL"
	pemCSR         = "CERTIFICATE REQUEST"
)

// maxPEMFile caps what we read from a certificate, key or CRL file, so that
// a wrong path (a log, a disk image) fails fast instead of filling memory.
const maxPEMFile = 16 << 20

// LoadCertificates reads a PEM file holding one or more certificates. Any
// other PEM block (a key pasted into ca.pem by mistake) is an error.
func LoadCertificates(path string) ([]*x509.Certificate, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, err
	}
	certs, err := ParseCertificatesPEM(data)
	if err != nil {
		return nil, fmt.Errorf("load certificates %s: %w", path, err)
	}
	return certs, nil
}

// ParseCertificatesPEM parses data as one or more PEM certificates; any
// other PEM block is an error, as is data with no certificate at all.
func ParseCertificatesPEM(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != pemCertificate {
			return nil, fmt.Errorf("unexpected PEM block %q, want %q", block.Type, pemCertificate)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(certs)+1, err)
		}
		certs = append(certs, cert)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM certificate found")
	}
	return certs, nil
}

// WriteCertificatesPEM writes certs to path as PEM (mode 0644), replacing
// the file atomically so that a reader never sees half a file.
func WriteCertificatesPEM(path string, certs ...*x509.Certificate) error {
	if len(certs) == 0 {
		return fmt.Errorf("write certificates %s: no certificates", path)
	}
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: pemCertificate, Bytes: c.Raw})...)
	}
	if err := WriteFileAtomic(path, out, 0o644); err != nil {
		return fmt.Errorf("write certificates: %w", err)
	}
	return nil
}

// WriteKey stores a private key as PKCS#8 PEM, readable by the owner
// only, at a path that holds nothing yet (it never replaces a key).
func WriteKey(path string, key crypto.Signer) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("marshal key for %s: %w", path, err)
	}
	data := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	// Never over another key: one made meanwhile stays, and this fails.
	if err := WriteFileExclusive(path, data, 0o600); err != nil {
		return fmt.Errorf("write key: %w", err)
	}
	return nil
}

// LoadKey reads a private key in PKCS#8, SEC 1 or PKCS#1 PEM form (the
// latter two are what cfssl and openssl write by default).
func LoadKey(path string) (crypto.Signer, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("load key %s: no PEM block", path)
	}
	var key any
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("load key %s: unexpected PEM block %q", path, block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("load key %s: %w", path, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("load key %s: %T is not a signing key", path, key)
	}
	return signer, nil
}

func readFile(path string) ([]byte, error) { return readFileMax(path, maxPEMFile) }

// readFileMax reads path if it holds at most max bytes.
func readFileMax(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err // *PathError already names the file
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.Size() > max {
		return nil, fmt.Errorf("read %s: %d bytes, more than %d", path, fi.Size(), max)
	}
	data := make([]byte, fi.Size())
	if _, err := io.ReadFull(f, data); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return data, nil
}

// WriteFileAtomic writes data to a temporary file in the same directory,
// syncs it and renames it over path: readers (a node re-reading crl.pem, a
// CA reading revoked.json after a crash) see the old or the new file,
// never a torn one.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmpName := tmp.Name()
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(tmpName)
		}
	}()
	if err := tmp.Chmod(perm); err != nil {
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmpName, path); err != nil {
		return err
	}
	ok = true
	if d, err := os.Open(dir); err == nil {
		d.Sync() // best effort: make the rename durable too
		d.Close()
	}
	return nil
}

// WriteFileExclusive writes data to path like WriteFileAtomic, but fails
// with ErrExists instead of replacing a file that is there, even one made
// between the caller's check and this write: the complete temporary file
// is hard-linked into place, which fails if path exists.
func WriteFileExclusive(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmpName := tmp.Name()
	defer os.Remove(tmpName) // after the link, path keeps the data
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Link(tmpName, path); err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%w: %s", ErrExists, path)
		}
		return err
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync() // best effort: make the new name durable too
		d.Close()
	}
	return nil
}

// FileExists reports whether path exists; errors other than "not found" count
// as existing so that callers refuse rather than overwrite.
func FileExists(path string) bool {
	_, err := os.Stat(path)
	return !errors.Is(err, os.ErrNotExist)
}

// PrepareIdentityDir creates dir (0700) and checks that none of files is
// there yet, failing with ErrExists if one is: issuing an identity never
// replaces keys or certificates.
func PrepareIdentityDir(dir string, files ...string) error {
	for _, f := range files {
		if FileExists(filepath.Join(dir, f)) {
			return fmt.Errorf("%w: %s", ErrExists, filepath.Join(dir, f))
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return nil
}

// PublicKeysEqual reports whether a and b are the same public key, of any
// standard type.
func PublicKeysEqual(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}
