package daemon

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kurier.dev/kurier/pki"
)

func TestDev_CreatesAndReuses(t *testing.T) {
	dir := t.TempDir()
	cfg, err := Dev(dir, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]string{"agency": DevAgency, "court": DevCourt}
	serials := map[string]string{}
	for name, addr := range ids {
		id, err := pki.LoadIdentity(DevIdentity(dir, name))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		peer, err := id.Peer()
		if err != nil || peer.Address != addr || id.EncCert == nil {
			t.Fatalf("%s identity: %v %v", name, peer, err)
		}
		for _, f := range []string{"cert.pem", "key.pem", "enc-cert.pem", "enc-key.pem", "ca.pem"} {
			if _, err := os.Stat(filepath.Join(DevIdentity(dir, name), f)); err != nil {
				t.Errorf("%s: %v", name, err)
			}
		}
		serials[name] = id.Cert.SerialNumber.String()
	}
	if _, err := LoadConfig(filepath.Join(dir, devConfigFile)); err != nil {
		t.Fatalf("the written config does not load: %v", err)
	}

	again, err := Dev(dir, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	for name := range ids {
		id, err := pki.LoadIdentity(DevIdentity(dir, name))
		if err != nil || id.Cert.SerialNumber.String() != serials[name] {
			t.Errorf("second start replaced the %s identity (%v)", name, err)
		}
	}
	if again.Data != cfg.Data || again.Identity != cfg.Identity {
		t.Errorf("second start changed the config: %+v vs %+v", again, cfg)
	}
}

func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(body string) string {
		p := filepath.Join(dir, "kurierd.yaml")
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := `listen: 127.0.0.1:7443
data: store
identity: node
crl: ca/crl.pem
log_key: node/log.key
domains: [stadt.example]
participants:
  - {address: poststelle@stadt.example, encryption_cert: enc.pem}
`
	cfg, err := LoadConfig(write(good))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Data != filepath.Join(dir, "store") || cfg.Participants[0].EncryptionCert != filepath.Join(dir, "enc.pem") {
		t.Errorf("relative paths not resolved against the config's folder: %+v", cfg)
	}
	for name, tc := range map[string]struct{ body, want string }{
		"unknown key":           {good + "colour: blue\n", "colour"},
		"misspelt key":          {strings.Replace(good, "listen:", "listn:", 1), "listn"},
		"no domains":            {strings.Replace(good, "domains: [stadt.example]", "domains: []", 1), "domains"},
		"participant elsewhere": {strings.Replace(good, "poststelle@stadt.example", "a@lg.example", 1), "not in one of the node's domains"},
		"no crl":                {strings.Replace(good, "crl: ca/crl.pem\n", "", 1), "crl is required"},
		"bad domain":            {strings.Replace(good, "[stadt.example]", "[Stadt]", 1), "domain"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := LoadConfig(write(tc.body))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("LoadConfig = %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
}

func TestRun_MissingCRLRefused(t *testing.T) {
	dir := t.TempDir()
	cfg, err := Dev(dir, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.CRL = filepath.Join(dir, "missing-crl.pem")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = Run(ctx, cfg, slog.New(slog.DiscardHandler), func(net.Addr) { t.Error("node started without a CRL") })
	if err == nil {
		t.Fatal("Run started without its CRL")
	}
}

func TestIssueOnce(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "identities", "agency")
	failed := errors.New("power cut")
	err := issueOnce(dir, func(tmp string) error {
		os.WriteFile(filepath.Join(tmp, "enc-cert.pem"), []byte("half"), 0o600)
		return failed
	})
	if !errors.Is(err, failed) {
		t.Fatalf("issueOnce = %v, want the issue error", err)
	}
	if entries, _ := os.ReadDir(filepath.Dir(dir)); len(entries) != 0 {
		t.Fatalf("an interrupted issue left %d entries", len(entries))
	}
	calls := 0
	for range 2 {
		if err := issueOnce(dir, func(tmp string) error {
			calls++
			return os.WriteFile(filepath.Join(tmp, "cert.pem"), []byte("x"), 0o600)
		}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "cert.pem")); err != nil || calls != 1 {
		t.Fatalf("issued %d times (%v), want once", calls, err)
	}
}

func TestReadSecret(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "log.key")
	if err := os.WriteFile(path, []byte("PRIVATE+KEY+x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := readSecret(path); err != nil || got != "PRIVATE+KEY+x" {
		t.Fatalf("readSecret = %q, %v", got, err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := readSecret(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("a world-readable key: err = %v, want a refusal", err)
	}
}
