package ca_test

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kurier.dev/kurier/pki"
	"kurier.dev/kurier/pki/ca"
)

func TestCA_WriteCRL_number(t *testing.T) {
	first := writeAndParseCRL(t, fx.CA, time.Hour)
	second := writeAndParseCRL(t, fx.CA, time.Hour)
	if want := new(big.Int).Add(first.Number, big.NewInt(1)); second.Number.Cmp(want) != 0 {
		t.Errorf("CRL numbers %v then %v, want consecutive", first.Number, second.Number)
	}
	if err := second.CheckSignatureFrom(fx.CA.Certificate()); err != nil {
		t.Error(err)
	}
	if d := second.NextUpdate.Sub(second.ThisUpdate); d != time.Hour {
		t.Errorf("NextUpdate - ThisUpdate = %v", d)
	}
	if _, err := fx.CA.WriteCRL(0); err == nil {
		t.Error("WriteCRL(0) succeeded")
	}
}

func writeAndParseCRL(t *testing.T, authority *ca.CA, validity time.Duration) *x509.RevocationList {
	t.Helper()
	path, err := authority.WriteCRL(validity)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "X509 CRL" {
		t.Fatalf("%s is not a PEM CRL", path)
	}
	crl, err := x509.ParseRevocationList(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return crl
}

func TestCA_Revoke(t *testing.T) {
	revoked, err := fx.CA.IssueNode(t.TempDir(), []string{"revoked.example"})
	if err != nil {
		t.Fatal(err)
	}
	good, err := fx.CA.IssueNode(t.TempDir(), []string{"good.example"})
	if err != nil {
		t.Fatal(err)
	}
	ts, err := fx.Trust() // before the revocation: must notice the new CRL
	if err != nil {
		t.Fatal(err)
	}

	for range 2 { // idempotent
		if err := fx.CA.Revoke(revoked.Cert.SerialNumber, 4); err != nil {
			t.Fatal(err)
		}
	}
	crl := writeAndParseCRL(t, fx.CA, time.Hour)
	n := 0
	for _, e := range crl.RevokedCertificateEntries {
		if e.SerialNumber.Cmp(revoked.Cert.SerialNumber) == 0 {
			n++
			if e.ReasonCode != 4 {
				t.Errorf("reason %d, want 4", e.ReasonCode)
			}
		}
	}
	if n != 1 {
		t.Errorf("serial listed %d times in the CRL", n)
	}
	var list []struct {
		Serial string `json:"serial"`
	}
	data, err := os.ReadFile(filepath.Join(fx.Dir, "ca", "revoked.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &list); err != nil {
		t.Fatal(err)
	}
	if list[len(list)-1].Serial != revoked.Cert.SerialNumber.String() {
		t.Errorf("revoked.json: last entry %+v", list[len(list)-1])
	}

	now := time.Now()
	later := now.Add(time.Minute) // past the store's recheck interval
	ts.SetClock(func() time.Time { return later })
	_, err = ts.Verify(revoked.Cert, nil, now, x509.ExtKeyUsageServerAuth)
	if !errors.Is(err, pki.ErrRevoked) {
		t.Fatalf("Verify(revoked) = %v, want ErrRevoked", err)
	}
	if !strings.Contains(err.Error(), revoked.Cert.SerialNumber.Text(16)) {
		t.Errorf("error %q does not name the serial in hex", err)
	}
	chain, err := ts.Verify(good.Cert, nil, now, x509.ExtKeyUsageServerAuth)
	if err != nil {
		t.Fatalf("Verify(good) = %v", err)
	}
	if len(chain) != 2 || !chain[1].Equal(fx.CA.Certificate()) {
		t.Errorf("chain has %d certificates", len(chain))
	}
	if err := ts.CheckRevoked(chain); err != nil {
		t.Errorf("CheckRevoked(good) = %v", err)
	}

	for name, tt := range map[string]struct {
		serial *big.Int
		reason int
	}{
		"nil serial":  {nil, 0},
		"zero serial": {big.NewInt(0), 0},
		"reason 7":    {big.NewInt(5), 7},
		"reason 11":   {big.NewInt(5), 11},
	} {
		t.Run(name, func(t *testing.T) {
			if err := fx.CA.Revoke(tt.serial, tt.reason); err == nil {
				t.Fatal("Revoke succeeded")
			}
		})
	}
}
