package daemon

import (
	"crypto/x509"
	"log/slog"
	"time"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/broker/auditlog"
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
