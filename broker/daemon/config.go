// Package daemon wires a Kurier node together from its configuration: the
// store, the node's identity and trust, the node logic and the gRPC server.
// It also creates the embedded development setup behind `kurierd -dev`, and
// the local federations of several nodes that `kurier dev federation` writes.
// The kurierd command only parses flags and calls Run.
package daemon

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"math"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"gopkg.in/yaml.v3"

	"kurier.dev/kurier/address"
	"kurier.dev/kurier/broker/diskspace"
	"kurier.dev/kurier/broker/netlimit"
	"kurier.dev/kurier/broker/store/postgres"
	"kurier.dev/kurier/pki"
)

// Config is a node's whole configuration, read from one YAML file.
type Config struct {
	// Listen is the TCP address to serve on, e.g. 127.0.0.1:7443.
	Listen string `yaml:"listen"`
	// Data is the directory of the node's badger store. It is left out
	// when Store names a PostgreSQL database.
	Data string `yaml:"data"`
	// Store, if set, keeps the node's state somewhere other than a badger
	// store in Data.
	Store StoreConfig `yaml:"store"`
	// Identity is the node's identity folder: cert.pem, key.pem, ca.pem.
	Identity string `yaml:"identity"`
	// CRL is the CA's current CRL (PEM); every handshake and signature is
	// checked against it.
	CRL string `yaml:"crl"`
	// LogKey is the file holding the signed-note private key that signs the
	// transparency log's checkpoints (kurier pki log-key writes one, and
	// its verifier key beside it as log.vkey; kurierd -dev its own).
	LogKey string `yaml:"log_key"`
	// Domains are the domains whose mailboxes this node holds.
	Domains []string `yaml:"domains"`
	// Participants is the directory of local mailboxes.
	Participants []ParticipantConfig `yaml:"participants"`
	// Peers are the nodes of the federation's other domains, domain →
	// host:port. The node relays messages to these nodes and looks up their
	// recipients there, over mutual TLS with its own node certificate; a
	// peer must present a certificate for the domain it is listed under, so
	// a wrong address here fails the handshake instead of misrouting.
	Peers  map[string]string `yaml:"peers"`
	Limits LimitsConfig      `yaml:"limits"`
	// MetricsListen, if set, is the host:port of a plain-HTTP listener,
	// apart from the node's, that serves Prometheus metrics on /metrics,
	// and /healthz and /readyz. It has no authentication: keep it on
	// loopback or a network only the monitoring reaches. Off by default.
	MetricsListen string `yaml:"metrics_listen"`
	// CRLWarnBefore is how long before the CRL's nextUpdate the node
	// starts warning, hourly, that it must be replaced; default 48h.
	CRLWarnBefore time.Duration `yaml:"crl_warn_before"`
	// AuditLog, if set, is the file the node appends its security events
	// to as JSON lines (package broker/auditlog): refused calls, CRLs
	// taken up, backups, restores, starts and stops. Keep it apart from
	// the operational log, and ship it to where the auditors look.
	AuditLog string `yaml:"audit_log"`
	// MetricsListener, if set, is an open listener to serve the metrics
	// on instead of MetricsListen's: for programs that embed the node,
	// and tests that need the port before the node starts.
	MetricsListener net.Listener `yaml:"-"`
}

// StoreConfig says where the node keeps its state; left empty, in a
// badger store in the data directory.
type StoreConfig struct {
	// Postgres, if set, is the DSN of a PostgreSQL database (a
	// postgres:// URL or libpq key=value string) that keeps the node's
	// whole state, so that several kurierd processes with the same
	// domains, identity and log key can serve them from one database.
	Postgres string `yaml:"postgres"`
}

// ParticipantConfig is one local mailbox.
type ParticipantConfig struct {
	Address     string `yaml:"address"`
	DisplayName string `yaml:"display_name"`
	Kind        string `yaml:"kind"`
	// EncryptionCert is the PEM file of the certificate senders encrypt to.
	EncryptionCert string `yaml:"encryption_cert"`
}

// LimitsConfig overrides the node's default limits; zero keeps a default.
// Durations are written as Go durations, e.g. 168h (there is no unit for
// days).
type LimitsConfig struct {
	MaxPayloadBytes int64 `yaml:"max_payload_bytes"`
	MaxRecipients   int   `yaml:"max_recipients"`
	// DefaultExpiry is how long a message whose envelope names no expiry
	// may wait to be relayed before it gets NonDelivery; the node's
	// default is 7 days.
	DefaultExpiry time.Duration `yaml:"default_expiry"`
	// MaxExpiry caps the expiry any envelope may name; the node's default
	// is 30 days.
	MaxExpiry time.Duration `yaml:"max_expiry"`
	// Retention is how long a delivered copy waits in the mailbox to be
	// retrieved before it gets NonDelivery; the node's default is 30 days.
	Retention time.Duration `yaml:"retention"`
	// MaxUploadsPerSender is how many uploads one sender may have under
	// way at once; the node's default is 4.
	MaxUploadsPerSender int `yaml:"max_uploads_per_sender"`
	// UploadIdle is how long an upload may wait between payload chunks
	// before the node gives it up; the default is 30 seconds.
	UploadIdle time.Duration `yaml:"upload_idle"`
	// UploadTimeout bounds a whole upload, however steadily its chunks
	// come; the default is 30 minutes (256 MiB at 150 kB/s).
	UploadTimeout time.Duration `yaml:"upload_timeout"`

	// MessagesPerSecond and MessageBurst bound how fast one participant
	// may submit: MessageBurst messages at once, then MessagesPerSecond
	// (a token bucket); defaults 10 a second, 100 at once. More are
	// refused with RESOURCE_EXHAUSTED and the time to wait (a
	// google.rpc.RetryInfo detail), which Kurier's client waits for.
	MessagesPerSecond float64 `yaml:"messages_per_second"`
	MessageBurst      int     `yaml:"message_burst"`
	// QuotaBytesPerDay bounds the payload bytes one participant may
	// submit within any 24 hours (a token bucket of that many bytes that
	// refills evenly over a day); the default is 10 GiB. Payloads are
	// kept for good, so this bounds how fast one sender can fill the
	// disk, not what it holds; min_free_bytes guards the rest.
	QuotaBytesPerDay int64 `yaml:"quota_bytes_per_day"`
	// RelayMessagesPerSecond, RelayMessageBurst and
	// RelayQuotaBytesPerDay are the same bounds for each peer node
	// relaying here, which carries all of its domains' senders; defaults
	// 100 a second, 1000 at once, 100 GiB a day.
	RelayMessagesPerSecond float64 `yaml:"relay_messages_per_second"`
	RelayMessageBurst      int     `yaml:"relay_message_burst"`
	RelayQuotaBytesPerDay  int64   `yaml:"relay_quota_bytes_per_day"`

	// MinFreeBytes is the disk alarm: with less free space than this on
	// the filesystem of data, the node refuses new submissions and relays
	// (RESOURCE_EXHAUSTED) while fetch and acknowledge keep working. The
	// default is 2 GiB, the least 1 GiB: badger's memory-mapped logs and
	// compactions need that much room to never hit a full disk (see
	// package broker/diskspace).
	MinFreeBytes int64 `yaml:"min_free_bytes"`

	// HandshakeTimeout closes a connection that has not finished its TLS
	// and HTTP/2 handshakes by then; the default is 10 seconds.
	HandshakeTimeout time.Duration `yaml:"handshake_timeout"`
	// MaxConnections bounds the connections open at once, and
	// MaxConnectionsPerSource those from one IPv4 address or IPv6 /64;
	// more are closed as soon as they are accepted. Defaults: 8192, or
	// what the open-files limit leaves room for if less (it is raised to
	// its hard limit at start, and 1024 descriptors are kept for the
	// store and peers); 256 per source. A max_connections above what the
	// limit leaves room for is refused at start.
	MaxConnections          int `yaml:"max_connections"`
	MaxConnectionsPerSource int `yaml:"max_connections_per_source"`
	// MaxConcurrentStreams bounds the calls under way on one connection;
	// the default is 256.
	MaxConcurrentStreams uint32 `yaml:"max_concurrent_streams"`
	// KeepaliveMinPing is how often a client may ping before it is
	// disconnected (default 20s); RefusePingsWithoutStream disconnects
	// clients that ping with no call under way (allowed by default).
	KeepaliveMinPing         time.Duration `yaml:"keepalive_min_ping"`
	RefusePingsWithoutStream bool          `yaml:"refuse_pings_without_stream"`
	// MaxConnectionIdle closes a connection without calls for this long
	// (default 5m); KeepaliveTime is how long a connection may be silent
	// before the node pings it (default 2m), KeepaliveTimeout how long it
	// waits for the answer (default 20s).
	MaxConnectionIdle time.Duration `yaml:"max_connection_idle"`
	KeepaliveTime     time.Duration `yaml:"keepalive_time"`
	KeepaliveTimeout  time.Duration `yaml:"keepalive_timeout"`
}

// LoadConfig reads and validates a config file. Unknown keys are refused,
// so that a misspelt setting is an error rather than a silent default.
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("config %s: not YAML: %w", path, err)
	}
	if err := checkYAML(&doc); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var c Config
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	c.resolve(filepath.Dir(path))
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return &c, nil
}

// resolve makes relative paths relative to the config file's directory.
func (c *Config) resolve(base string) {
	abs := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(base, p)
	}
	c.Data, c.Identity, c.CRL, c.LogKey, c.AuditLog = abs(c.Data), abs(c.Identity), abs(c.CRL), abs(c.LogKey), abs(c.AuditLog)
	for i := range c.Participants {
		c.Participants[i].EncryptionCert = abs(c.Participants[i].EncryptionCert)
	}
}

// Validate checks the whole configuration and reports every problem found.
func (c *Config) Validate() error {
	var errs []error
	req := func(name, v string) {
		if v == "" {
			errs = append(errs, fmt.Errorf("%s is required", name))
		}
	}
	req("listen", c.Listen)
	errs = append(errs, c.validateStore()...)
	req("identity", c.Identity)
	req("crl", c.CRL)
	req("log_key", c.LogKey)
	if len(c.Domains) == 0 {
		errs = append(errs, errors.New("domains: at least one domain is required"))
	}
	domains := map[string]bool{}
	for _, d := range c.Domains {
		if err := address.CheckDomain(d); err != nil {
			errs = append(errs, fmt.Errorf("domains: %w", err))
		}
		domains[d] = true
	}
	for i, p := range c.Participants {
		a, err := address.Parse(p.Address)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("participants[%d]: %w", i, err))
		case !domains[a.Domain]:
			errs = append(errs, fmt.Errorf("participants[%d]: %s is not in one of the node's domains", i, p.Address))
		}
		if p.EncryptionCert == "" {
			errs = append(errs, fmt.Errorf("participants[%d]: encryption_cert is required", i))
		}
	}
	errs = append(errs, c.validatePeers(domains)...)
	if c.MetricsListen != "" {
		if _, port, err := net.SplitHostPort(c.MetricsListen); err != nil {
			errs = append(errs, fmt.Errorf("metrics_listen: %q is not host:port: %w", c.MetricsListen, err))
		} else if n, err := strconv.ParseUint(port, 10, 16); err != nil {
			errs = append(errs, fmt.Errorf("metrics_listen: %q: port %q is not a number from 0 to 65535", c.MetricsListen, port))
		} else if c.Listen != "" && n != 0 && c.MetricsListen == c.Listen {
			errs = append(errs, fmt.Errorf("metrics_listen: %s is the node's own listen address; give the metrics a port of their own", c.MetricsListen))
		}
	}
	if c.CRLWarnBefore < 0 {
		errs = append(errs, fmt.Errorf("crl_warn_before %s is negative", c.CRLWarnBefore))
	}
	errs = append(errs, c.Limits.validate()...)
	return errors.Join(errs...)
}

// validateStore checks that the node has exactly one store: a data
// directory, or a PostgreSQL DSN that parses.
func (c *Config) validateStore() []error {
	switch {
	case c.Store.Postgres == "" && c.Data == "":
		return []error{errors.New("data is required (or store.postgres)")}
	case c.Store.Postgres == "":
		return nil
	case c.Data != "":
		return []error{errors.New("data and store.postgres exclude each other: with store.postgres the node keeps its whole state in PostgreSQL, so leave data out")}
	}
	// postgres.ParseConfig's error never quotes the DSN, which may hold a
	// password.
	if _, err := postgres.ParseConfig(c.Store.Postgres); err != nil {
		return []error{fmt.Errorf("store.postgres: %w", err)}
	}
	return nil
}

// validatePeers checks each peer's domain, that it is not one of the
// node's own domains, and its address; in the order of the domains, so
// that the report does not change from run to run.
func (c *Config) validatePeers(own map[string]bool) []error {
	var errs []error
	for _, d := range slices.Sorted(maps.Keys(c.Peers)) {
		switch err := address.CheckDomain(d); {
		case err != nil:
			errs = append(errs, fmt.Errorf("peers: %w", err))
		case own[d]:
			errs = append(errs, fmt.Errorf("peers: %s is one of the node's own domains; list only other nodes", d))
		}
		if err := checkHostPort(c.Peers[d]); err != nil {
			errs = append(errs, fmt.Errorf("peers: %s: %w", d, err))
		}
	}
	return errs
}

// checkHostPort checks that s is a host:port another node can dial: a
// host, and a port from 1 to 65535.
func checkHostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q is not host:port: %w", s, err)
	}
	if host == "" {
		return fmt.Errorf("%q has no host", s)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return fmt.Errorf("%q: port %q is not a number from 1 to 65535", s, port)
	}
	return nil
}

// validate checks that no limit is negative, that the default expiry is
// no longer than the cap on expiries, that the disk alarm keeps enough
// free and that one source may not hold more connections than all.
func (l LimitsConfig) validate() []error {
	var errs []error
	for _, n := range []struct {
		key string
		v   float64
	}{
		{"max_payload_bytes", float64(l.MaxPayloadBytes)}, {"max_recipients", float64(l.MaxRecipients)},
		{"max_uploads_per_sender", float64(l.MaxUploadsPerSender)},
		{"messages_per_second", l.MessagesPerSecond}, {"message_burst", float64(l.MessageBurst)},
		{"quota_bytes_per_day", float64(l.QuotaBytesPerDay)},
		{"relay_messages_per_second", l.RelayMessagesPerSecond}, {"relay_message_burst", float64(l.RelayMessageBurst)},
		{"relay_quota_bytes_per_day", float64(l.RelayQuotaBytesPerDay)},
		{"min_free_bytes", float64(l.MinFreeBytes)},
		{"max_connections", float64(l.MaxConnections)}, {"max_connections_per_source", float64(l.MaxConnectionsPerSource)},
	} {
		switch {
		case math.IsNaN(n.v) || math.IsInf(n.v, 0):
			// A rate of NaN or infinity would switch the limit off.
			errs = append(errs, fmt.Errorf("limits: %s %v is not a number; give a number, or 0 for the default", n.key, n.v))
		case n.v < 0:
			errs = append(errs, fmt.Errorf("limits: %s %v is negative; give 0 for the default", n.key, n.v))
		}
	}
	for _, d := range []struct {
		key string
		v   time.Duration
	}{
		{"default_expiry", l.DefaultExpiry}, {"max_expiry", l.MaxExpiry}, {"retention", l.Retention},
		{"upload_idle", l.UploadIdle}, {"upload_timeout", l.UploadTimeout}, {"handshake_timeout", l.HandshakeTimeout},
		{"keepalive_min_ping", l.KeepaliveMinPing}, {"max_connection_idle", l.MaxConnectionIdle},
		{"keepalive_time", l.KeepaliveTime}, {"keepalive_timeout", l.KeepaliveTimeout},
	} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("limits: %s %v is negative; give a duration such as 168h, or 0 for the default", d.key, d.v))
		}
	}
	if l.DefaultExpiry > 0 && l.MaxExpiry > 0 && l.DefaultExpiry > l.MaxExpiry {
		errs = append(errs, fmt.Errorf("limits: default_expiry %v is longer than max_expiry %v", l.DefaultExpiry, l.MaxExpiry))
	}
	if l.MinFreeBytes > 0 && l.MinFreeBytes < diskspace.MinFloor {
		errs = append(errs, fmt.Errorf("limits: min_free_bytes %d is below %d (1 GiB), the room the store needs to never write to a full disk", l.MinFreeBytes, diskspace.MinFloor))
	}
	if l.MaxConnections > 0 && l.MaxConnectionsPerSource > l.MaxConnections {
		errs = append(errs, fmt.Errorf("limits: max_connections_per_source %d is more than max_connections %d", l.MaxConnectionsPerSource, l.MaxConnections))
	}
	return errs
}

// Connection defaults, and the descriptors kept for everything else.
const (
	defaultMaxConnections   = 8192
	defaultMaxPerSource     = 256
	reservedFileDescriptors = 1024
)

// connections returns the connection caps for a process that may open
// fdLimit files: the configured ones, or the defaults clamped to what
// the limit leaves room for. A configured cap above that is an error.
func (l LimitsConfig) connections(fdLimit uint64) (netlimit.Options, error) {
	room := int(min(fdLimit, 1<<30)) - reservedFileDescriptors
	if room < 64 {
		return netlimit.Options{}, fmt.Errorf("the open-files limit is %d, too low for a node: raise it (ulimit -n, LimitNOFILE= in the systemd unit) to at least %d", fdLimit, reservedFileDescriptors+64)
	}
	o := netlimit.Options{Max: l.MaxConnections, PerSource: l.MaxConnectionsPerSource}
	switch {
	case o.Max > room:
		return netlimit.Options{}, fmt.Errorf("limits: max_connections %d is more than the %d connections the open-files limit of %d leaves room for; raise the limit (ulimit -n, LimitNOFILE=) or lower max_connections", o.Max, room, fdLimit)
	case o.Max == 0:
		o.Max = min(defaultMaxConnections, room)
	}
	if o.PerSource == 0 {
		o.PerSource = min(defaultMaxPerSource, o.Max)
	}
	if o.PerSource > o.Max {
		return netlimit.Options{}, fmt.Errorf("limits: max_connections_per_source %d is more than the %d connections the node takes in all", o.PerSource, o.Max)
	}
	return o, nil
}

// limitsComment heads the limits in a written config, which lists every
// key with 0 for its default.
const limitsComment = `0 keeps a limit's default. Among them, what keeps one sender or peer from
locking out the others: messages_per_second 10, message_burst 100 and
quota_bytes_per_day 10 GiB per participant (relay_*: 100, 1000, 100 GiB per
relaying node); min_free_bytes 2 GiB (disk alarm, at least 1 GiB);
max_connections 8192 (or what the open-files limit allows),
max_connections_per_source 256, handshake_timeout 10s; upload_idle 30s,
upload_timeout 30m. LimitsConfig in broker/daemon/config.go describes each.`

// Write stores c as YAML at path, for operators to start from, readable
// by its owner alone (mode 0600), since store.postgres may hold a
// password: the file is written beside path and renamed over it, so that
// an older file of a wider mode is replaced rather than rewritten in
// place, and no reader sees it half written.
func (c *Config) Write(path string) error {
	var doc yaml.Node
	if err := doc.Encode(c); err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	for i := 0; i+1 < len(doc.Content); i += 2 {
		if doc.Content[i].Value == "limits" {
			doc.Content[i].HeadComment = limitsComment
		}
	}
	b, err := yaml.Marshal(&doc)
	if err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	if err := pki.WriteFileAtomic(path, b, 0o600); err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	return nil
}
