package daemon

import (
	"cmp"
	"context"
	"log/slog"
	"sync"
	"time"

	"kurier.dev/kurier/pki"
)

// DefaultCRLWarnBefore is how long before its nextUpdate the node starts
// warning that its CRL needs replacing, unless crl_warn_before says
// otherwise: two days, time for a person to act on a weekday.
const DefaultCRLWarnBefore = 48 * time.Hour

// crlWarnEvery is how often the warning is repeated while it holds.
const crlWarnEvery = time.Hour

// crlWarner warns in the log while the node's CRL is due for renewal
// within warnBefore, at most once per crlWarnEvery, and with an error
// once it has passed: from then on the node refuses every call, so the
// operator must publish a new CRL (kurier pki crl).
type crlWarner struct {
	trust      *pki.TrustStore
	path       string
	warnBefore time.Duration
	logger     *slog.Logger
	warned     time.Time // when it last warned; zero if not since the last good state
}

// check looks at the CRL held at now.
func (w *crlWarner) check(now time.Time) {
	w.trust.CheckRevoked(nil) // take up a new file, if one was written
	crl := w.trust.RevocationList()
	if crl == nil {
		return // unusable or missing: every call says so, and the audit log has it
	}
	left := crl.NextUpdate.Sub(now)
	if left > w.warnBefore {
		w.warned = time.Time{}
		return
	}
	if !w.warned.IsZero() && now.Sub(w.warned) < crlWarnEvery && now.After(w.warned) {
		return
	}
	w.warned = now
	attrs := []any{slog.String("crl", w.path), slog.Time("next_update", crl.NextUpdate.UTC())}
	if left <= 0 {
		w.logger.Error("the CRL is past its nextUpdate: the node refuses every call until a new CRL is published; run `kurier pki crl` on the CA and copy it here", attrs...)
		return
	}
	w.logger.Warn("the CRL is due for renewal soon: run `kurier pki crl` on the CA and copy it here before then, or the node will refuse every call",
		append(attrs, slog.Duration("left", left.Round(time.Minute)))...)
}

// watchCRL checks the CRL's time left now and every minute until ctx
// ends, in wg.
func watchCRL(ctx context.Context, wg *sync.WaitGroup, cfg *Config, trust *pki.TrustStore, logger *slog.Logger) {
	w := &crlWarner{trust: trust, path: cfg.CRL, warnBefore: cmp.Or(cfg.CRLWarnBefore, DefaultCRLWarnBefore), logger: logger}
	w.check(time.Now())
	wg.Go(func() { every(ctx, time.Minute, func() { w.check(time.Now()) }) })
}
