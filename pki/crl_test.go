package pki_test

import (
	"bytes"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"kurier.dev/kurier/pki"
	"kurier.dev/kurier/pki/pkitest"
)

func TestTrustStore_Verify(t *testing.T) {
	ts := newTrustStore(t)
	now := time.Now()
	if _, err := ts.Verify(fx.alice.Cert, nil, now, x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageEmailProtection); err != nil {
		t.Fatalf("Verify(alice) = %v", err)
	}
	for name, tt := range map[string]struct {
		cert  *x509.Certificate
		at    time.Time
		usage x509.ExtKeyUsage
	}{
		"zero time":   {fx.alice.Cert, time.Time{}, x509.ExtKeyUsageClientAuth},
		"expired":     {fx.alice.Cert, fx.alice.Cert.NotAfter.Add(time.Minute), x509.ExtKeyUsageClientAuth},
		"not yet":     {fx.alice.Cert, fx.alice.Cert.NotBefore.Add(-time.Minute), x509.ExtKeyUsageClientAuth},
		"wrong EKU":   {fx.node.Cert, now, x509.ExtKeyUsageCodeSigning},
		"foreign":     {fx.foreign.Cert, now, x509.ExtKeyUsageServerAuth},
		"ca as leaf":  {fx.ca.Certificate(), now, x509.ExtKeyUsageAny},
		"enc as mail": {fx.alice.EncCert, now, x509.ExtKeyUsageClientAuth},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := ts.Verify(tt.cert, nil, tt.at, tt.usage); err == nil {
				t.Fatal("Verify succeeded")
			}
		})
	}
}

func TestNewTrustStore_badCRL(t *testing.T) {
	roots := []*x509.Certificate{fx.ca.Certificate()}

	t.Run("forged", func(t *testing.T) {
		// Signed by another CA under the very same name.
		path, err := fx.foreignCA.WriteCRL(time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pki.NewTrustStore(roots, path); err == nil {
			t.Fatal("NewTrustStore accepted a forged CRL")
		}
	})
	t.Run("missing", func(t *testing.T) {
		if _, err := pki.NewTrustStore(roots, filepath.Join(t.TempDir(), "crl.pem")); err == nil {
			t.Fatal("NewTrustStore accepted a missing CRL")
		}
	})
	t.Run("garbage", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "crl.pem")
		os.WriteFile(path, []byte("-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n"), 0o644)
		if _, err := pki.NewTrustStore(roots, path); err == nil {
			t.Fatal("NewTrustStore accepted garbage")
		}
	})
	t.Run("stale", func(t *testing.T) {
		path := writeCRLFile(t, time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour))
		_, err := pki.NewTrustStore(roots, path)
		if !errors.Is(err, pki.ErrCRLStale) {
			t.Fatalf("NewTrustStore(stale) = %v, want ErrCRLStale", err)
		}
		if !strings.Contains(err.Error(), "kurier pki crl") {
			t.Errorf("error %q does not tell the operator what to do", err)
		}
	})
	t.Run("no roots", func(t *testing.T) {
		if _, err := pki.NewTrustStore(nil, ""); err == nil {
			t.Fatal("NewTrustStore without roots succeeded")
		}
	})
}

func TestTrustStore_CheckRevoked_failsClosed(t *testing.T) {
	chain := []*x509.Certificate{fx.alice.Cert, fx.ca.Certificate()}
	dir := t.TempDir()
	path := filepath.Join(dir, "crl.pem")
	pkitest.CopyFile(t, fx.crl, path)
	ts, err := pki.NewTrustStore([]*x509.Certificate{fx.ca.Certificate()}, path)
	if err != nil {
		t.Fatal(err)
	}
	ts.SetRecheck(0)
	if err := ts.CheckRevoked(chain); err != nil {
		t.Fatal(err)
	}

	t.Run("goes stale", func(t *testing.T) {
		ts.SetClock(func() time.Time { return time.Now().Add(2 * time.Hour) })
		defer ts.SetClock(time.Now)
		if err := ts.CheckRevoked(chain); !errors.Is(err, pki.ErrCRLStale) {
			t.Fatalf("CheckRevoked after NextUpdate = %v, want ErrCRLStale", err)
		}
	})
	t.Run("replaced by forgery", func(t *testing.T) {
		forged, err := fx.foreignCA.WriteCRL(time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		pkitest.CopyFile(t, forged, path+".new")
		os.Rename(path+".new", path)
		if err := ts.CheckRevoked(chain); err == nil {
			t.Fatal("CheckRevoked with a forged CRL succeeded")
		}
	})
	t.Run("removed", func(t *testing.T) {
		os.Remove(path)
		if err := ts.CheckRevoked(chain); err == nil {
			t.Fatal("CheckRevoked without a CRL file succeeded")
		}
	})
	t.Run("restored", func(t *testing.T) {
		pkitest.CopyFile(t, fx.crl, path)
		if err := ts.CheckRevoked(chain); err != nil {
			t.Fatalf("CheckRevoked with the good CRL back = %v", err)
		}
	})
	t.Run("no CRL configured", func(t *testing.T) {
		ts, err := pki.NewTrustStore([]*x509.Certificate{fx.ca.Certificate()}, "")
		if err != nil {
			t.Fatal(err)
		}
		if err := ts.CheckRevoked(chain); err != nil || ts.HasCRL() {
			t.Fatalf("CheckRevoked = %v, HasCRL %v", err, ts.HasCRL())
		}
	})
}

func TestTrustStore_recheckInterval(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "crl.pem")
	pkitest.CopyFile(t, fx.crl, path)
	ts, err := pki.NewTrustStore([]*x509.Certificate{fx.ca.Certificate()}, path)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	ts.SetClock(func() time.Time { return now })
	os.Remove(path)
	if err := ts.CheckRevoked(nil); err != nil {
		t.Fatalf("within the interval the file is not looked at again, got %v", err)
	}
	now = now.Add(pki.CRLRecheck)
	if err := ts.CheckRevoked(nil); err == nil {
		t.Fatal("after the interval a missing CRL must fail")
	}
}

// writeCRLFile writes an empty CRL signed by the test CA with the given times, which
// WriteCRL would not produce.
func writeCRLFile(t *testing.T, thisUpdate, nextUpdate time.Time) string {
	t.Helper()
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number:     big.NewInt(1),
		ThisUpdate: thisUpdate,
		NextUpdate: nextUpdate,
	}, fx.ca.Certificate(), fx.caKey)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "crl.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestTrustStore_CheckRevoked_intermediate: a leaf under an intermediate
// has no CRL here, so its revocation cannot be checked and it is refused.
func TestTrustStore_CheckRevoked_intermediate(t *testing.T) {
	inter := makeCert(t, &x509.Certificate{
		Subject: pkix.Name{CommonName: "Intermediate"}, IsCA: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	})
	leaf := &x509.Certificate{RawIssuer: inter.RawSubject, Issuer: inter.Subject, Subject: pkix.Name{CommonName: "leaf"}, SerialNumber: big.NewInt(7)}
	ts := newTrustStore(t)
	if err := ts.CheckRevoked([]*x509.Certificate{leaf, inter, fx.ca.Certificate()}); !errors.Is(err, pki.ErrNoCRL) {
		t.Fatalf("CheckRevoked = %v, want ErrNoCRL", err)
	}
}

// revokedNodeCRL issues a node certificate for domain, revokes it, and
// returns it with the CA's new CRL (DER).
func revokedNodeCRL(t *testing.T, domain string) (*pki.Identity, []byte) {
	t.Helper()
	gone := issueNode(t, fx.ca, domain)
	if err := fx.ca.Revoke(gone.Cert.SerialNumber, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := fx.ca.WriteCRL(time.Hour); err != nil {
		t.Fatal(err)
	}
	der, err := newTrustStore(t).CRL()
	if err != nil {
		t.Fatal(err)
	}
	return gone, der
}

func TestNewTrustStoreWithCRL(t *testing.T) {
	gone, der := revokedNodeCRL(t, "gone.example")
	ts, err := pki.NewTrustStoreWithCRL([]*x509.Certificate{fx.ca.Certificate()}, der)
	if err != nil {
		t.Fatal(err)
	}
	if err := ts.CheckRevoked([]*x509.Certificate{gone.Cert}); !errors.Is(err, pki.ErrRevoked) {
		t.Errorf("revoked certificate: %v, want ErrRevoked", err)
	}
	if err := ts.CheckRevoked([]*x509.Certificate{fx.alice.Cert}); err != nil {
		t.Errorf("good certificate: %v", err)
	}
	if got, err := ts.CRL(); err != nil || !bytes.Equal(got, der) {
		t.Errorf("CRL() = %d bytes, %v", len(got), err)
	}
	forged, err := fx.foreignCA.WriteCRL(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	fts, err := pki.NewTrustStore([]*x509.Certificate{fx.foreignCA.Certificate()}, forged)
	if err != nil {
		t.Fatal(err)
	}
	forgedDER, err := fts.CRL()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pki.NewTrustStoreWithCRL([]*x509.Certificate{fx.ca.Certificate()}, forgedDER); err == nil {
		t.Error("a CRL signed by another CA was accepted")
	}
	if _, err := pki.NewTrustStoreWithCRL([]*x509.Certificate{fx.ca.Certificate()}, []byte("junk")); err == nil {
		t.Error("junk was accepted as a CRL")
	}
	noCRL, _ := pki.NewTrustStore([]*x509.Certificate{fx.ca.Certificate()}, "")
	if _, err := noCRL.CRL(); !errors.Is(err, pki.ErrNoCRL) {
		t.Errorf("CRL() without one: %v, want ErrNoCRL", err)
	}
}

func TestNewTrustStoreWithCRLAt(t *testing.T) {
	gone, der := revokedNodeCRL(t, "gone-at.example")
	roots := []*x509.Certificate{fx.ca.Certificate()}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	// Years after its NextUpdate, the CRL still speaks for a time before it.
	past, err := pki.NewTrustStoreWithCRLAt(roots, der, crl.ThisUpdate.Add(-24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if err := past.CheckRevoked([]*x509.Certificate{fx.alice.Cert}); err != nil {
		t.Errorf("good certificate at a time the CRL covers: %v", err)
	}
	if err := past.CheckRevoked([]*x509.Certificate{gone.Cert}); !errors.Is(err, pki.ErrRevoked) {
		t.Errorf("revoked certificate: %v, want ErrRevoked", err)
	}
	if got := past.RevocationList(); got == nil || got.Number.Cmp(crl.Number) != 0 {
		t.Errorf("RevocationList() = %v", got)
	}
	// Not for a time after it was due for renewal.
	late, err := pki.NewTrustStoreWithCRLAt(roots, der, crl.NextUpdate.Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if err := late.CheckRevoked([]*x509.Certificate{fx.alice.Cert}); !errors.Is(err, pki.ErrCRLStale) {
		t.Errorf("at a time after NextUpdate: %v, want ErrCRLStale", err)
	}
	// CheckRevokedAt judges the CRL at the time it is given instead.
	if err := late.CheckRevokedAt([]*x509.Certificate{fx.alice.Cert}, crl.ThisUpdate); err != nil {
		t.Errorf("CheckRevokedAt a time the CRL covers: %v", err)
	}
	if err := past.CheckRevokedAt([]*x509.Certificate{gone.Cert}, crl.NextUpdate); !errors.Is(err, pki.ErrCRLStale) {
		t.Errorf("CheckRevokedAt NextUpdate: %v, want ErrCRLStale", err)
	}
	if _, err := pki.NewTrustStoreWithCRLAt(roots, der, time.Time{}); err == nil {
		t.Error("no time was accepted")
	}
	if _, err := pki.NewTrustStoreWithCRLAt(roots, []byte("junk"), time.Now()); err == nil {
		t.Error("junk was accepted as a CRL")
	}
}

// TestTrustStore_VerifyCached verifies the same certificate again after
// its chain was built once: the answer must be what a new verification
// would give, for a time outside its validity and after its revocation.
func TestTrustStore_VerifyCached(t *testing.T) {
	ts := newTrustStore(t)
	at := time.Now()
	ts.SetClock(func() time.Time { return at })
	id := issueNode(t, fx.ca, "cache.example")
	verify := func(when time.Time) error {
		_, err := ts.Verify(id.Cert, nil, when, x509.ExtKeyUsageServerAuth)
		return err
	}
	if err := verify(at); err != nil {
		t.Fatalf("first verification: %v", err)
	}
	if err := verify(at); err != nil {
		t.Fatalf("second verification: %v", err)
	}
	if err := verify(id.Cert.NotAfter.Add(time.Minute)); err == nil {
		t.Fatal("a chain built before verifies a time after the certificate expired")
	}
	if err := verify(id.Cert.NotBefore.Add(-time.Minute)); err == nil {
		t.Fatal("a chain built before verifies a time before the certificate was valid")
	}
	if err := fx.ca.Revoke(id.Cert.SerialNumber, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := fx.ca.WriteCRL(time.Hour); err != nil {
		t.Fatal(err)
	}
	at = at.Add(2 * pki.CRLRecheck) // the store reads the new CRL
	if err := verify(at); !errors.Is(err, pki.ErrRevoked) {
		t.Fatalf("verification of a certificate revoked after its chain was built: %v, want ErrRevoked", err)
	}
}

func BenchmarkTrustStore_Verify(b *testing.B) {
	ts, err := pki.NewTrustStore([]*x509.Certificate{fx.ca.Certificate()}, fx.crl)
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ts.Verify(fx.alice.Cert, nil, now, x509.ExtKeyUsageClientAuth); err != nil {
			b.Fatal(err)
		}
	}
}

// TestTrustStore_CRLWatcher: the node's audit log hears of every CRL the
// store takes up and of a CRL file it finds unusable, once each.
func TestTrustStore_CRLWatcher(t *testing.T) {
	path := filepath.Join(t.TempDir(), "crl.pem")
	pkitest.CopyFile(t, fx.crl, path)
	ts, err := pki.NewTrustStore([]*x509.Certificate{fx.ca.Certificate()}, path)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	ts.SetClock(func() time.Time { return now })
	type change struct {
		next time.Time
		err  bool
	}
	var seen []change
	ts.SetCRLWatcher(func(crl *x509.RevocationList, err error) {
		c := change{err: err != nil}
		if crl != nil {
			c.next = crl.NextUpdate
		}
		seen = append(seen, c)
	})
	check := func(want ...change) {
		t.Helper()
		now = now.Add(pki.CRLRecheck)
		ts.CheckRevoked(nil)
		if !slices.EqualFunc(seen, want, func(a, b change) bool { return a.err == b.err && a.next.Equal(b.next) }) {
			t.Fatalf("watcher saw %+v, want %+v", seen, want)
		}
	}
	check() // the file as it was: no change
	next := now.Add(48 * time.Hour).Truncate(time.Second)
	pkitest.CopyFile(t, writeCRLFile(t, now.Add(-time.Minute), next), path)
	check(change{next: next})
	check(change{next: next}) // the same file again
	os.Remove(path)
	check(change{next: next}, change{err: true})
	check(change{next: next}, change{err: true}) // still missing: told once
}
