package daemon_test

import (
	"context"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kurier.dev/kurier/broker/daemon"
	"kurier.dev/kurier/broker/store/postgres/pgtest"
)

const secret = "Pw4Leak-x9Q7"

// TestConfig_DSNErrorHidesPassword: a store.postgres that does not parse
// is refused by the config's check, kurierd -dev -store and Run, with
// nothing of the password in the error or the log.
func TestConfig_DSNErrorHidesPassword(t *testing.T) {
	dir := t.TempDir()
	good, err := daemon.Dev(dir, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	for _, dsn := range pgtest.BadDSNs(secret) {
		p := filepath.Join(dir, "bad.yaml")
		body := "listen: 127.0.0.1:0\nstore:\n  postgres: '" + strings.ReplaceAll(dsn, "'", "''") + "'\nidentity: node\ncrl: crl.pem\nlog_key: log.key\ndomains: [stadt.example]\n"
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := daemon.LoadConfig(p)
		check(t, "LoadConfig", dsn, err, "")
		_, err = daemon.DevStore(dir, "127.0.0.1:0", daemon.StoreConfig{Postgres: dsn})
		check(t, "DevStore", dsn, err, "")
		cfg := *good
		cfg.Data, cfg.Store.Postgres = "", dsn
		var logs logBuffer
		err = daemon.Run(context.Background(), &cfg, slog.New(slog.NewTextHandler(&logs, nil)), nil)
		check(t, "Run", dsn, err, logs.String())
	}
}

// check fails t if err is nil or it or log shows the password.
func check(t *testing.T, what, dsn string, err error, log string) {
	t.Helper()
	switch {
	case err == nil:
		t.Errorf("%s with store.postgres %q = nil error", what, dsn)
	case strings.Contains(err.Error(), secret):
		t.Errorf("%s with store.postgres %q = %v: shows the password", what, dsn, err)
	case !strings.Contains(err.Error(), "does not parse"):
		t.Errorf("%s with store.postgres %q = %v, want it to say the DSN does not parse", what, dsn, err)
	}
	if strings.Contains(log, secret) {
		t.Errorf("%s with store.postgres %q logs the password:\n%s", what, dsn, log)
	}
}

// TestRun_ConnectErrorHidesPassword: a node whose database refuses its
// password, or is not there, does not start, and neither its error nor
// its log shows the password.
func TestRun_ConnectErrorHidesPassword(t *testing.T) {
	srv := pgtest.NewServer(t)
	dsn := srv.DSN(t)
	cfg, err := daemon.DevStore(t.TempDir(), "127.0.0.1:0", daemon.StoreConfig{Postgres: dsn})
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword("postgres", secret)
	wrong := u.String()
	u.Host = "127.0.0.1:1"
	for _, d := range []string{wrong, u.String()} {
		cfg.Store.Postgres = d
		var logs logBuffer
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		err := daemon.Run(ctx, cfg, slog.New(slog.NewTextHandler(&logs, nil)), nil)
		cancel()
		if err == nil || strings.Contains(err.Error(), secret) || strings.Contains(logs.String(), secret) {
			t.Errorf("Run on %s = %v, want a refusal without the password; log:\n%s", u.Host, err, logs.String())
		}
	}
}

// TestDevStore_ConfigPrivate: kurierd -dev writes kurierd.yaml, which
// holds the DSN with any password in it, readable by its owner alone,
// also over an older file that others could read.
func TestDevStore_ConfigPrivate(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "kurierd.yaml")
	if err := os.WriteFile(p, []byte("listen: 127.0.0.1:7443\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, 0o644); err != nil { // past the umask
		t.Fatal(err)
	}
	dsn := "postgres://kurier:" + secret + "@127.0.0.1:5432/kurier?sslmode=disable"
	if _, err := daemon.DevStore(dir, "127.0.0.1:0", daemon.StoreConfig{Postgres: dsn}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("kurierd.yaml has mode %v, want 0600", fi.Mode().Perm())
	}
	cfg, err := daemon.LoadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Store.Postgres != dsn {
		t.Errorf("the written config has store.postgres %q, want the DSN given", cfg.Store.Postgres)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".kurierd.yaml") {
			t.Errorf("a temporary file %s is left behind", e.Name())
		}
	}
}
