package daemon

import (
	"bytes"
	"crypto/x509"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kurier.dev/kurier/pki"
	"kurier.dev/kurier/pki/ca"
)

// TestCRLWarner: quiet while the CRL has long to go, a warning an hour
// while it is due within crl_warn_before, an error once it has passed.
func TestCRLWarner(t *testing.T) {
	authority, err := ca.Init(filepath.Join(t.TempDir(), "ca"), "Kurier Test CA")
	if err != nil {
		t.Fatal(err)
	}
	path, err := authority.WriteCRL(72 * time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	trust, err := pki.NewTrustStore([]*x509.Certificate{authority.Certificate()}, path)
	if err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	w := &crlWarner{trust: trust, path: path, warnBefore: 48 * time.Hour, logger: slog.New(slog.NewTextHandler(&log, nil))}
	next := trust.RevocationList().NextUpdate
	for _, step := range []struct {
		at   time.Time
		want string // "" for nothing logged
	}{
		{next.Add(-72 * time.Hour), ""},
		{next.Add(-49 * time.Hour), ""},
		{next.Add(-47 * time.Hour), "level=WARN msg=\"the CRL is due for renewal soon"},
		{next.Add(-47*time.Hour + 30*time.Minute), ""},
		{next.Add(-46*time.Hour + time.Minute), "level=WARN"},
		{next.Add(time.Minute), "level=ERROR msg=\"the CRL is past its nextUpdate"},
		{next.Add(2 * time.Minute), ""},
	} {
		log.Reset()
		w.check(step.at)
		got := log.String()
		if step.want == "" && got != "" || !strings.Contains(got, step.want) {
			t.Fatalf("at %s before nextUpdate: logged %q, want %q", next.Sub(step.at), got, step.want)
		}
	}
}
