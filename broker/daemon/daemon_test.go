package daemon

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"kurier.dev/kurier/broker/netlimit"
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
		"list for a value":      {strings.Replace(good, "listen: 127.0.0.1:7443", "listen: [127.0.0.1:7443]", 1), "listen (line 1): give a single value here"},
		"word for a number":     {good + "limits:\n  max_recipients: many\n", `limits.max_recipients (line 10): "many" is not a whole number`},
		"key unknown in limits": {good + "limits:\n  max_recipient: 5\n", "limits.max_recipient (line 10): no such key; the keys here are"},
		"one domain, no list":   {strings.Replace(good, "[stadt.example]", "stadt.example", 1), "domains (line 6): give a list here"},
		"metrics port":          {good + "metrics_listen: 127.0.0.1:http\n", `metrics_listen: "127.0.0.1:http": port "http" is not a number`},
		"metrics on the node":   {good + "metrics_listen: 127.0.0.1:7443\n", "metrics_listen: 127.0.0.1:7443 is the node's own listen address"},
		"empty file":            {"# nothing yet\n", "the file is empty"},
		"duration without unit": {good + "limits:\n  retention: 0\n", `limits.retention (line 10): "0" is not a duration`},
		"merged key unknown":    {strings.Replace(good, "participants:\n  - {", "participants:\n  - {<<: {colour: blue}, ", 1), "participants[0].colour (line 8): no such key"},
		"no store":              {strings.Replace(good, "data: store\n", "", 1), "data is required (or store.postgres)"},
		"data and postgres":     {good + "store:\n  postgres: postgres://kurier@db.example/kurier\n", "data and store.postgres exclude each other"},
		"postgres DSN broken":   {strings.Replace(good, "data: store\n", "", 1) + "store:\n  postgres: \"postgres://kurier:geheim@db.example:port/kurier\"\n", "store.postgres:"},
		"store key unknown":     {good + "store:\n  badger: store\n", "store.badger (line 10): no such key; the keys here are postgres"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := LoadConfig(write(tc.body))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("LoadConfig = %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
}

// TestLoadConfig_Postgres: a config with store.postgres and no data
// loads, and what needs a badger data directory says what to use instead.
func TestLoadConfig_Postgres(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "kurierd.yaml")
	body := `listen: 127.0.0.1:7443
store:
  postgres: postgres://kurier:geheim@db.example:5432/kurier?sslmode=verify-full
identity: node
crl: ca/crl.pem
log_key: node/log.key
domains: [stadt.example]
`
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Store.Postgres == "" || cfg.Data != "" {
		t.Fatalf("store = %+v, data = %q", cfg.Store, cfg.Data)
	}
	if got := storeName(cfg); got != "postgres on db.example:5432/kurier" {
		t.Errorf("storeName = %q, want host, port and database without the password", got)
	}
	cfg.Store.Postgres = "postgres://kurier:geheim@db1.example:5432,db2.example:5433/kurier?target_session_attrs=read-write"
	if got := storeName(cfg); got != "postgres on db1.example:5432,db2.example:5433/kurier" {
		t.Errorf("storeName of a multi-host DSN = %q, want every server", got)
	}
	err = Backup(context.Background(), cfg, filepath.Join(dir, "backup"), io.Discard, slog.New(slog.DiscardHandler))
	if !errors.Is(err, ErrNotBadger) || !strings.Contains(err.Error(), "pg_dump") {
		t.Errorf("Backup = %v, want ErrNotBadger naming pg_dump", err)
	}
}

// TestDevStore_Concurrent: processes that start the development setup on
// one folder at once all get the same CA, node identity and log key.
func TestDevStore_Concurrent(t *testing.T) {
	dir := t.TempDir()
	const n = 4
	cfgs := make([]*Config, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			cfgs[i], errs[i] = DevStore(dir, "127.0.0.1:0", StoreConfig{Postgres: "postgres://kurier@127.0.0.1:1/kurier"})
		})
	}
	wg.Wait()
	var first []byte
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("start %d: %v", i, errs[i])
		}
		if cfgs[i].Data != "" || cfgs[i].Store.Postgres == "" {
			t.Fatalf("start %d: data %q, store %+v; want the PostgreSQL store only", i, cfgs[i].Data, cfgs[i].Store)
		}
		id, err := pki.LoadIdentity(cfgs[i].Identity)
		if err != nil {
			t.Fatal(err)
		}
		key, err := os.ReadFile(cfgs[i].LogKey)
		if err != nil {
			t.Fatal(err)
		}
		got := append(id.Cert.Raw, key...)
		if i == 0 {
			first = got
		} else if string(got) != string(first) {
			t.Errorf("start %d got another node certificate or log key than start 0", i)
		}
	}
	if _, err := LoadConfig(filepath.Join(dir, devConfigFile)); err != nil {
		t.Errorf("the written config does not load: %v", err)
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

func TestLoadConfig_PeersAndLimits(t *testing.T) {
	dir := t.TempDir()
	write := func(body string) string {
		p := filepath.Join(dir, "kurierd.yaml")
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := `listen: 127.0.0.1:7441
data: store
identity: node
crl: ca/crl.pem
log_key: node/log.key
domains: [stadt.example]
peers:
  amtsgericht.example: 127.0.0.1:7442
  landgericht.example: "[::1]:7443"
limits:
  default_expiry: 168h
  max_expiry: 720h
  retention: 720h
  max_uploads_per_sender: 2
  upload_idle: 45s
`
	cfg, err := LoadConfig(write(good))
	if err != nil {
		t.Fatal(err)
	}
	wantPeers := map[string]string{"amtsgericht.example": "127.0.0.1:7442", "landgericht.example": "[::1]:7443"}
	if diff := cmp.Diff(wantPeers, cfg.Peers); diff != "" {
		t.Errorf("peers (-want +got):\n%s", diff)
	}
	wantLimits := LimitsConfig{DefaultExpiry: 7 * 24 * time.Hour, MaxExpiry: 30 * 24 * time.Hour, Retention: 30 * 24 * time.Hour, MaxUploadsPerSender: 2, UploadIdle: 45 * time.Second}
	if diff := cmp.Diff(wantLimits, cfg.Limits); diff != "" {
		t.Errorf("limits (-want +got):\n%s", diff)
	}
	for name, tc := range map[string]struct {
		body string
		want []string // every one must be in the error
	}{
		"no peers and no limits": {body: strings.Split(good, "peers:")[0]},
		"only default_expiry":    {body: strings.Replace(good, "  max_expiry: 720h\n", "", 1)},
		"equal expiries":         {body: strings.Replace(good, "default_expiry: 168h", "default_expiry: 720h", 1)},
		"peer domain invalid":    {body: strings.Replace(good, "amtsgericht.example:", "Amtsgericht:", 1), want: []string{"peers: ", `"Amtsgericht"`}},
		"peer is own domain":     {body: strings.Replace(good, "amtsgericht.example:", "stadt.example:", 1), want: []string{"peers: stadt.example is one of the node's own domains"}},
		"peer twice":             {body: strings.Replace(good, "landgericht.example:", "amtsgericht.example:", 1), want: []string{"already defined"}},
		"peer without port":      {body: strings.Replace(good, "127.0.0.1:7442", "127.0.0.1", 1), want: []string{"peers: amtsgericht.example", "not host:port"}},
		"peer without host":      {body: strings.Replace(good, "127.0.0.1:7442", ":7442", 1), want: []string{"peers: amtsgericht.example", "has no host"}},
		"peer port 0":            {body: strings.Replace(good, "127.0.0.1:7442", "127.0.0.1:0", 1), want: []string{`port "0" is not a number from 1 to 65535`}},
		"peer port too big":      {body: strings.Replace(good, "127.0.0.1:7442", "127.0.0.1:65536", 1), want: []string{`port "65536"`}},
		"peer port by name":      {body: strings.Replace(good, "127.0.0.1:7442", "127.0.0.1:https", 1), want: []string{`port "https"`}},
		"negative expiry":        {body: strings.Replace(good, "default_expiry: 168h", "default_expiry: -1h", 1), want: []string{"default_expiry -1h0m0s is negative"}},
		"negative max expiry":    {body: strings.Replace(good, "max_expiry: 720h", "max_expiry: -720h", 1), want: []string{"max_expiry -720h0m0s is negative"}},
		"negative retention":     {body: strings.Replace(good, "retention: 720h", "retention: -1s", 1), want: []string{"retention -1s is negative"}},
		"negative upload idle":   {body: strings.Replace(good, "upload_idle: 45s", "upload_idle: -5s", 1), want: []string{"upload_idle -5s is negative"}},
		"negative upload share":  {body: strings.Replace(good, "max_uploads_per_sender: 2", "max_uploads_per_sender: -1", 1), want: []string{"max_uploads_per_sender -1 is negative"}},
		"negative rate":          {body: strings.Replace(good, "upload_idle: 45s", "messages_per_second: -1", 1), want: []string{"messages_per_second -1 is negative"}},
		"rate not a number":      {body: strings.Replace(good, "upload_idle: 45s", "messages_per_second: .nan", 1), want: []string{"messages_per_second NaN is not a number"}},
		"infinite relay rate":    {body: strings.Replace(good, "upload_idle: 45s", "relay_messages_per_second: .inf", 1), want: []string{"relay_messages_per_second +Inf is not a number"}},
		"negative quota":         {body: strings.Replace(good, "upload_idle: 45s", "quota_bytes_per_day: -5", 1), want: []string{"quota_bytes_per_day -5 is negative"}},
		"negative handshake":     {body: strings.Replace(good, "upload_idle: 45s", "handshake_timeout: -1s", 1), want: []string{"handshake_timeout -1s is negative"}},
		"free space too small":   {body: strings.Replace(good, "upload_idle: 45s", "min_free_bytes: 1048576", 1), want: []string{"min_free_bytes 1048576 is below"}},
		"per source above all":   {body: strings.Replace(good, "upload_idle: 45s", "max_connections: 10\n  max_connections_per_source: 11", 1), want: []string{"max_connections_per_source 11 is more than max_connections 10"}},
		"default above max":      {body: strings.Replace(good, "max_expiry: 720h", "max_expiry: 24h", 1), want: []string{"default_expiry 168h0m0s is longer than max_expiry 24h0m0s"}},
		"days are no unit":       {body: strings.Replace(good, "168h", "7d", 1), want: []string{"limits.default_expiry (line 11)", `"7d" is not a duration`, "there is none for days"}},
		"bare number":            {body: strings.Replace(good, "168h", "604800", 1), want: []string{"limits.default_expiry (line 11)", `"604800" is not a duration such as 90s`}},
		"every problem at once": {
			body: strings.NewReplacer("stadt.example]", "stadt.example, amtsgericht.example]", "127.0.0.1:7442", "x:0", "retention: 720h", "retention: -1h").Replace(good),
			want: []string{"amtsgericht.example is one of the node's own domains", `port "0"`, "retention -1h0m0s is negative"},
		},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := LoadConfig(write(tc.body))
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("LoadConfig = %v, want success", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("LoadConfig succeeded, want an error mentioning %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("LoadConfig = %v, want it to mention %q", err, w)
				}
			}
		})
	}
}

func TestConfig_WriteRoundTrip(t *testing.T) {
	dir := t.TempDir()
	cfg := &Config{
		Listen:   "127.0.0.1:7441",
		Data:     filepath.Join(dir, "store"),
		Identity: filepath.Join(dir, "node"),
		CRL:      filepath.Join(dir, "ca", "crl.pem"),
		LogKey:   filepath.Join(dir, "node", "log.key"),
		Domains:  []string{"stadt.example"},
		Participants: []ParticipantConfig{{
			Address: "poststelle@stadt.example", DisplayName: "Stadt, Poststelle", Kind: "agency",
			EncryptionCert: filepath.Join(dir, "enc-cert.pem"),
		}},
		Peers: map[string]string{"amtsgericht.example": "127.0.0.1:7442", "landgericht.example": "127.0.0.1:7443"},
		Limits: LimitsConfig{
			MaxPayloadBytes: 1 << 20, DefaultExpiry: 168 * time.Hour,
			MaxExpiry: 30 * 24 * time.Hour, Retention: 90 * time.Minute,
		},
	}
	path := filepath.Join(dir, "kurierd.yaml")
	if err := cfg.Write(path); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"default_expiry: 168h0m0s", "max_expiry: 720h0m0s", "retention: 1h30m0s", "amtsgericht.example: 127.0.0.1:7442"} {
		if !strings.Contains(string(raw), want) {
			t.Errorf("written config lacks %q:\n%s", want, raw)
		}
	}
	got, err := LoadConfig(path)
	if err != nil {
		t.Fatalf("the written config does not load: %v", err)
	}
	if diff := cmp.Diff(cfg, got); diff != "" {
		t.Errorf("round trip (-wrote +read):\n%s", diff)
	}
}

// TestFaultConnectionLimits checks the connection caps against the
// open-files limit: defaults shrink to fit, a configured cap that does not
// fit is refused at start, and a limit too low for any node is an error.
func TestFaultConnectionLimits(t *testing.T) {
	for name, tc := range map[string]struct {
		limits  LimitsConfig
		fds     uint64
		want    netlimit.Options
		wantErr string
	}{
		"defaults under a high limit":   {fds: 1 << 20, want: netlimit.Options{Max: 8192, PerSource: 256}},
		"defaults clamped to the limit": {fds: 2048, want: netlimit.Options{Max: 1024, PerSource: 256}},
		"per source clamped to all":     {fds: 1200, want: netlimit.Options{Max: 176, PerSource: 176}},
		"configured caps kept":          {limits: LimitsConfig{MaxConnections: 500, MaxConnectionsPerSource: 10}, fds: 20000, want: netlimit.Options{Max: 500, PerSource: 10}},
		"cap above the limit":           {limits: LimitsConfig{MaxConnections: 30000}, fds: 20000, wantErr: "max_connections 30000 is more than the 18976 connections"},
		"limit too low":                 {fds: 1024, wantErr: "too low for a node"},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := tc.limits.connections(tc.fds)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("connections(%d) = %v, %v; want an error mentioning %q", tc.fds, got, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got, cmpopts.IgnoreFields(netlimit.Options{}, "Logger")); diff != "" {
				t.Errorf("connections(%d) (-want +got):\n%s", tc.fds, diff)
			}
		})
	}
}

// TestLoadConfig_Merge: YAML merge keys, which the decoder takes, pass the
// check too, their keys checked where they are merged.
func TestLoadConfig_Merge(t *testing.T) {
	p := filepath.Join(t.TempDir(), "kurierd.yaml")
	body := `listen: 127.0.0.1:7443
data: store
identity: node
crl: ca/crl.pem
log_key: node/log.key
domains: [stadt.example]
participants:
  - &agency {address: poststelle@stadt.example, kind: agency, encryption_cert: enc.pem}
  - {<<: *agency, address: bauamt@stadt.example}
`
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Participants) != 2 || cfg.Participants[1].Kind != "agency" || cfg.Participants[1].Address != "bauamt@stadt.example" {
		t.Fatalf("merged participants: %+v", cfg.Participants)
	}
}
