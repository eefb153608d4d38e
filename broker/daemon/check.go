package daemon

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/broker/store"
	"kurier.dev/kurier/evidence"
	"kurier.dev/kurier/pki"
	"kurier.dev/kurier/pki/cms"
)

// CheckStore reads the whole store of a stopped node, as kurierd
// -check-store does: everything store.Check checks, and in addition every
// evidence's CMS signature against the configured trust anchors and CRL,
// and every copy's chain (each evidence naming its predecessor's digest,
// the copy's head naming the last). It prints one line per problem to out,
// then a summary, and returns an error wrapping ErrDamaged if anything is
// damaged.
//
// Signatures are verified at the time each evidence states, without the
// CRL, since the question is whether the stored bytes are intact: a
// signer revoked since, or a CRL past its next update, is not damage
// (kurier verify judges revocation).
func CheckStore(ctx context.Context, cfg *Config, out io.Writer, logger *slog.Logger) error {
	logger, f, err := prepare(cfg, logger)
	if err != nil {
		return err
	}
	if err := requireBadger(cfg, "-check-store", "it reads a badger data directory; check a PostgreSQL database with pg_amcheck, on a cluster made with initdb --data-checksums"); err != nil {
		return err
	}
	intact, err := intactTrust(f)
	if err != nil {
		return err
	}
	res, err := store.Check(ctx, cfg.Data, store.CheckOptions{
		Store: store.Options{Logger: logger},
		Message: func(_ context.Context, m *broker.Message, copies []broker.Copy, evs []broker.Evidence) []string {
			return checkEvidence(intact, copies, evs)
		},
		Report: func(p store.Problem) { fmt.Fprintf(out, "damaged: %s\n", p) },
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "checked %s: %d messages, %d payloads, %d copies, %d evidence, %d log leaves; %d problems\n",
		cfg.Data, res.Messages, res.Payloads, res.Copies, res.Evidence, res.Leaves, res.Problems)
	if res.Problems > 0 {
		return fmt.Errorf("%w: %d problems in %s (listed above); restore the data directory from a backup, keeping the current %s",
			broker.ErrDamaged, res.Problems, cfg.Data, store.MarkFile)
	}
	return nil
}

// intactTrust is the trust the check verifies signatures with: the
// node's trust anchors without the CRL. The check asks whether the stored
// bytes are intact, and the CRL judges revocation, and its own freshness,
// now: a CRL past its next update, or a signer revoked since it signed, is
// not damage.
func intactTrust(f *files) (*pki.TrustStore, error) {
	t, err := pki.NewTrustStore(f.id.Roots, "")
	if err != nil {
		return nil, fmt.Errorf("trust anchors: %w", err)
	}
	return t, nil
}

// checkEvidence verifies each evidence's signature and each copy's chain,
// and returns what is wrong.
func checkEvidence(trust cms.Verifier, copies []broker.Copy, evs []broker.Evidence) []string {
	var problems []string
	parsed := make([]*evidence.Evidence, len(evs))
	for i, ev := range evs {
		p, err := evidence.Parse(ev.DER)
		if err == nil {
			p, err = evidence.Verify(ev.DER, cms.Policy{Trust: trust, At: p.Statement.Time})
		}
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s evidence at leaf %d of the %s log: %v", ev.Type, ev.LeafIndex, logName(ev.Log), err))
			continue
		}
		parsed[i] = p
	}
	for _, c := range copies {
		var links []evidence.Link
		complete := true
		for i, ev := range evs {
			if ev.Recipient != c.Recipient {
				continue
			}
			if parsed[i] == nil {
				complete = false // reported above
				break
			}
			links = append(links, parsed[i].Link())
		}
		if !complete {
			continue
		}
		if err := evidence.CheckChain(links); err != nil {
			problems = append(problems, fmt.Sprintf("chain of %s: %v", c.Recipient, err))
			continue
		}
		if len(links) == 0 || links[len(links)-1].Digest != c.Head {
			problems = append(problems, fmt.Sprintf("copy of %s: its head is not the digest of its last evidence", c.Recipient))
		}
	}
	return problems
}

// logName names the log an evidence is in: the node's own, or another's
// origin.
func logName(l string) string {
	if l == "" {
		return "node's own"
	}
	return l
}
