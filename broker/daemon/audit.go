package daemon

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"time"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/broker/auditlog"
	"kurier.dev/kurier/broker/store"
	"kurier.dev/kurier/pki"
)

// openAudit opens the audit log cfg names, or returns nil (which records
// nothing) if it names none, and has it told of every CRL the node takes
// up.
func openAudit(cfg *Config, trust *pki.TrustStore, logger *slog.Logger) (*auditlog.Log, error) {
	if cfg.AuditLog == "" {
		return nil, nil
	}
	a, err := auditlog.Open(cfg.AuditLog, logger)
	if err != nil {
		return nil, err
	}
	trust.SetCRLWatcher(func(crl *x509.RevocationList, err error) {
		if err != nil {
			a.Record(auditlog.EventCRL, slog.String("outcome", "unusable"), slog.String("crl", cfg.CRL), slog.Any(broker.LogErr, err))
			return
		}
		a.Record(auditlog.EventCRL, crlAttrs(cfg.CRL, crl)...)
	})
	return a, nil
}

// crlAttrs describe a CRL for the audit log.
func crlAttrs(path string, crl *x509.RevocationList) []slog.Attr {
	attrs := []slog.Attr{slog.String("crl", path)}
	if crl == nil {
		return attrs
	}
	if crl.Number != nil {
		attrs = append(attrs, slog.String("crl_number", crl.Number.String()))
	}
	return append(attrs, slog.Time("crl_this_update", crl.ThisUpdate.UTC()), slog.Time("crl_next_update", crl.NextUpdate.UTC()),
		slog.Int("revoked_certificates", len(crl.RevokedCertificateEntries)))
}

// auditStart records the node's start: what it serves, under which
// certificate, checking against which CRL.
func auditStart(a *auditlog.Log, cfg *Config, id *pki.Identity, trust *pki.TrustStore, listen string) {
	attrs := []slog.Attr{
		slog.String("listen", listen), slog.Any("domains", cfg.Domains), slog.String("data", cfg.Data),
		slog.String("cert_serial", "0x"+id.Cert.SerialNumber.Text(16)), slog.Time("cert_not_after", id.Cert.NotAfter.UTC()),
	}
	// The trust anchors are read at start only: a changed CA shows as a
	// start with other fingerprints.
	type anchor struct {
		Subject string `json:"subject"`
		SHA256  string `json:"sha256"`
	}
	var anchors []anchor
	for _, root := range id.Roots {
		sum := sha256.Sum256(root.Raw)
		anchors = append(anchors, anchor{Subject: root.Subject.String(), SHA256: hex.EncodeToString(sum[:])})
	}
	attrs = append(attrs, slog.Any("trust_anchors", anchors))
	a.Record(auditlog.EventStart, append(attrs, crlAttrs(cfg.CRL, trust.RevocationList())...)...)
}

// auditStop records the node's stop and why.
func auditStop(a *auditlog.Log, started time.Time, err error) {
	attrs := []slog.Attr{slog.Duration("served", time.Since(started).Round(time.Second))}
	if err != nil {
		attrs = append(attrs, slog.String("outcome", "failed"), slog.Any(broker.LogErr, err))
	}
	a.Record(auditlog.EventStop, attrs...)
}

// auditedBackups records every backup the running node serves.
type auditedBackups struct {
	db    *store.DB
	audit *auditlog.Log
}

// Backup writes the store's backup to w (admin.Backuper) and records it.
func (a auditedBackups) Backup(ctx context.Context, w io.Writer) (store.BackupInfo, error) {
	info, err := a.db.Backup(ctx, w)
	auditBackup(a.audit, "through the running node", info, err)
	return info, err
}

// auditBackup records a backup taken, or tried.
func auditBackup(a *auditlog.Log, how string, info store.BackupInfo, err error) {
	attrs := []slog.Attr{slog.String("how", how)}
	if err != nil {
		attrs = append(attrs, slog.String("outcome", "failed"), slog.Any(broker.LogErr, err))
	} else {
		attrs = append(attrs, slog.String("outcome", "ok"), slog.Uint64("log_size", info.LogSize), slog.String("log_root", fmt.Sprintf("%x", info.LogRoot)),
			slog.Uint64("keys", info.Keys), slog.Uint64("payload_files", info.PayloadFiles), slog.Uint64("payload_bytes", info.PayloadBytes))
	}
	a.Record(auditlog.EventBackup, attrs...)
}

// auditRestore records a restore, and a rollback accepted with it.
func auditRestore(a *auditlog.Log, in string, res store.RestoreResult, err error) {
	attrs := []slog.Attr{slog.String("backup", in)}
	if err != nil {
		attrs = append(attrs, slog.String("outcome", "refused"), slog.Any(broker.LogErr, err))
	} else {
		attrs = append(attrs, slog.String("outcome", "ok"), slog.Uint64("log_size", res.Backup.LogSize), slog.String("log_root", fmt.Sprintf("%x", res.Backup.LogRoot)),
			slog.Time("backup_created", res.Backup.Created.UTC()), slog.Bool("rolled_back", res.RolledBack), slog.Bool("had_mark", res.HadMark))
		if res.RolledBack {
			attrs = append(attrs, slog.Uint64("mark_size", res.MarkSize))
		}
	}
	a.Record(auditlog.EventRestore, attrs...)
}

// openAuditFor opens cfg's audit log for a command other than the node
// (backup, restore), which appends to the same file; a log that cannot
// be opened is reported and the command goes on without it.
func openAuditFor(cfg *Config, logger *slog.Logger) *auditlog.Log {
	if cfg.AuditLog == "" {
		return nil
	}
	a, err := auditlog.Open(cfg.AuditLog, logger)
	if err != nil {
		logger.Error("cannot open the audit log; this command's event is not recorded", slog.Any(broker.LogErr, err))
		return nil
	}
	return a
}
