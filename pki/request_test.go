package pki_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"kurier.dev/kurier/address"
	"kurier.dev/kurier/pki"
	"kurier.dev/kurier/pki/pkitest"
)

func TestHostile_RequestBrokenSignature(t *testing.T) {
	const addr = "alice@stadt.example"
	good := pkitest.CSR(t, &x509.CertificateRequest{Subject: pkix.Name{CommonName: addr}}, pkitest.NewP256(t))
	block, _ := pem.Decode(good)
	for name, tamper := range map[string]func(der []byte){
		// The last byte is in the signature value.
		"signature": func(der []byte) { der[len(der)-1] ^= 1 },
		// Another address in the signed part: the key's owner never
		// asked for it.
		"subject": func(der []byte) {
			i := bytes.Index(der, []byte("alice"))
			copy(der[i:], "mallo")
		},
	} {
		t.Run(name, func(t *testing.T) {
			der := bytes.Clone(block.Bytes)
			tamper(der)
			data := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
			_, err := pki.ParseRequest(data)
			if !errors.Is(err, pki.ErrBadCSR) || !strings.Contains(err.Error(), "signature does not verify") {
				t.Fatalf("ParseRequest of a CSR with a broken signature: %v, want ErrBadCSR for its signature", err)
			}
		})
	}
}

func TestHostile_RequestBadAddress(t *testing.T) {
	key := pkitest.NewP256(t)
	for _, bad := range []string{"", "alice", "Alice@stadt.example", "alice@Stadt.example", "alice@localhost", "a b@stadt.example", "Alice <alice@stadt.example>"} {
		t.Run(bad, func(t *testing.T) {
			csr := pkitest.CSR(t, &x509.CertificateRequest{Subject: pkix.Name{CommonName: bad}, EmailAddresses: []string{"alice@stadt.example"}}, key)
			_, err := pki.ParseRequest(csr)
			if !errors.Is(err, pki.ErrBadCSR) || !errors.Is(err, address.ErrInvalid) {
				t.Fatalf("ParseRequest(CN %q): %v, want ErrBadCSR and address.ErrInvalid", bad, err)
			}
		})
	}
}

func TestHostile_RequestKey(t *testing.T) {
	const addr = "alice@stadt.example"
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsa2048, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	for name, key := range map[string]crypto.Signer{"P-384": p384, "Ed25519": ed, "RSA-2048": rsa2048} {
		t.Run(name, func(t *testing.T) {
			csr := pkitest.CSR(t, &x509.CertificateRequest{Subject: pkix.Name{CommonName: addr}}, key)
			if _, err := pki.ParseRequest(csr); !errors.Is(err, pki.ErrBadCSR) {
				t.Fatalf("ParseRequest of a %s CSR: %v, want ErrBadCSR", name, err)
			}
		})
	}
}

func TestHostile_RequestFile(t *testing.T) {
	csr := pkitest.CSR(t, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "alice@stadt.example"}}, pkitest.NewP256(t))
	for name, data := range map[string][]byte{
		"empty":       nil,
		"certificate": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: fx.ca.Certificate().Raw}),
		"two CSRs":    append(bytes.Clone(csr), csr...),
		"garbage DER": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte("not DER")}),
		"too large":   append(bytes.Clone(csr), bytes.Repeat([]byte("\n"), pki.MaxCSRFile)...),
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "csr.pem")
			if err := os.WriteFile(path, data, 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := pki.LoadRequest(path); !errors.Is(err, pki.ErrBadCSR) {
				t.Fatalf("LoadRequest: %v, want ErrBadCSR", err)
			}
		})
	}
}
