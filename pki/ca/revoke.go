package ca

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"kurier.dev/kurier/pki"
)

// revocation is one entry of revoked.json.
type revocation struct {
	Serial    string    `json:"serial"` // decimal, as cfssl and openssl print serials
	RevokedAt time.Time `json:"revoked_at"`
	Reason    int       `json:"reason"`
}

// Revoke records serial as revoked with an RFC 5280 reason code (0
// unspecified, 1 keyCompromise, 3 affiliationChanged, 4 superseded, 5
// cessationOfOperation, ...); 7 (unassigned) and 8 (removeFromCRL, for
// delta CRLs, which this CA does not issue) are refused. It is idempotent: revoking a serial again
// keeps the first record. The serial may be that of any certificate this
// CA issued; the CA keeps no inventory to check it against. The revocation
// takes effect for verifiers with the next WriteCRL.
func (ca *CA) Revoke(serial *big.Int, reason int) error {
	if serial == nil || serial.Sign() <= 0 {
		return fmt.Errorf("revoke: serial must be positive")
	}
	if reason < 0 || reason > 10 || reason == 7 || reason == 8 {
		return fmt.Errorf("revoke %s: invalid reason code %d", serial, reason)
	}
	ca.mu.Lock()
	defer ca.mu.Unlock()
	list, err := ca.readRevoked()
	if err != nil {
		return fmt.Errorf("revoke %s: %w", serial, err)
	}
	for _, r := range list {
		if r.Serial == serial.String() {
			return nil
		}
	}
	list = append(list, revocation{Serial: serial.String(), RevokedAt: time.Now().UTC().Truncate(time.Second), Reason: reason})
	data, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		return fmt.Errorf("revoke %s: %w", serial, err)
	}
	if err := pki.WriteFileAtomic(filepath.Join(ca.dir, revokedFile), append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("revoke %s: %w", serial, err)
	}
	return nil
}

func (ca *CA) readRevoked() ([]revocation, error) {
	data, err := os.ReadFile(filepath.Join(ca.dir, revokedFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var list []revocation
	if err := json.Unmarshal(data, &list); err != nil {
		return nil, fmt.Errorf("parse %s: %w", revokedFile, err)
	}
	return list, nil
}

// WriteCRL signs a CRL of every revoked serial with the CA key and writes it
// to dir/crl.pem (PEM "X509 CRL"), returning that path. ThisUpdate is now,
// NextUpdate now+validity: verifiers refuse the CRL after NextUpdate
// (ErrCRLStale), so the operator must write a new one before then. Each
// CRL's number is one more than the last (kept in dir/crlnumber), as
// RFC 5280 requires; cfssl's CRL helper omits the number, which is why this
// uses x509.CreateRevocationList.
func (ca *CA) WriteCRL(validity time.Duration) (path string, err error) {
	if validity <= 0 {
		return "", fmt.Errorf("write crl: validity %v must be positive", validity)
	}
	ca.mu.Lock()
	defer ca.mu.Unlock()
	list, err := ca.readRevoked()
	if err != nil {
		return "", fmt.Errorf("write crl: %w", err)
	}
	entries := make([]x509.RevocationListEntry, 0, len(list))
	for _, r := range list {
		serial, ok := new(big.Int).SetString(r.Serial, 10)
		if !ok {
			return "", fmt.Errorf("write crl: %s: bad serial %q", revokedFile, r.Serial)
		}
		entries = append(entries, x509.RevocationListEntry{SerialNumber: serial, RevocationTime: r.RevokedAt, ReasonCode: r.Reason})
	}
	number, err := ca.readCRLNumber()
	if err != nil {
		return "", fmt.Errorf("write crl: %w", err)
	}
	number.Add(number, big.NewInt(1))
	now := time.Now().UTC()
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		RevokedCertificateEntries: entries,
		Number:                    number,
		ThisUpdate:                now,
		NextUpdate:                now.Add(validity),
	}, ca.cert, ca.key)
	if err != nil {
		return "", fmt.Errorf("write crl: sign: %w", err)
	}
	// The number first: a crash between the two writes then skips a number
	// (harmless) instead of issuing two different CRLs with the same one.
	if err := pki.WriteFileAtomic(filepath.Join(ca.dir, crlNumberFile), []byte(number.String()+"\n"), 0o644); err != nil {
		return "", fmt.Errorf("write crl: %w", err)
	}
	path = filepath.Join(ca.dir, crlFile)
	if err := pki.WriteFileAtomic(path, pem.EncodeToMemory(&pem.Block{Type: pemCRL, Bytes: der}), 0o644); err != nil {
		return "", fmt.Errorf("write crl: %w", err)
	}
	return path, nil
}

func (ca *CA) readCRLNumber() (*big.Int, error) {
	data, err := os.ReadFile(filepath.Join(ca.dir, crlNumberFile))
	if errors.Is(err, os.ErrNotExist) {
		return new(big.Int), nil
	}
	if err != nil {
		return nil, err
	}
	s := strings.TrimSpace(string(data))
	if _, err := strconv.ParseUint(s, 10, 64); err != nil {
		// Not fatal in principle (RFC 5280 allows 20 octets), but this CA
		// only ever writes small decimal numbers: anything else is damage.
		return nil, fmt.Errorf("%s: not a decimal number: %q", crlNumberFile, s)
	}
	n, _ := new(big.Int).SetString(s, 10)
	return n, nil
}
