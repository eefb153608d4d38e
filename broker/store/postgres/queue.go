package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"kurier.dev/kurier/broker"
)

// The queues: outbound holds a message's retry state for each domain
// whose node must be sent it, pushes the own evidence (by leaf index)
// that a domain's node must be sent; copies_due lists copies by deadline.
// Each is written in the transaction that makes it necessary and removed
// in the one that makes it unnecessary.

// MaxQueuePage is the most entries Outbound, Pushes and Due return at once.
const MaxQueuePage = 1000

func queueLimit(limit int) int {
	if limit <= 0 || limit > MaxQueuePage {
		return MaxQueuePage
	}
	return limit
}

// outboundRows are a message's outbound entries, encoded.
type outboundRows struct {
	id      string
	domains []string
	records [][]byte
}

func prepareOutbound(id string, out []broker.Outbound) (*outboundRows, error) {
	q := &outboundRows{id: id}
	for _, o := range out {
		if o.MessageID != id || checkKeyPart("domain", o.Domain) != nil {
			return nil, fmt.Errorf("%w: outbound entry for %q to %q", broker.ErrInvalid, o.MessageID, o.Domain)
		}
		v, err := json.Marshal(o)
		if err != nil {
			return nil, fmt.Errorf("encode outbound entry: %w", err)
		}
		q.domains, q.records = append(q.domains, o.Domain), append(q.records, v)
	}
	return q, nil
}

// queue adds the insert of the entries to b.
func (q *outboundRows) queue(b *pgx.Batch) {
	if len(q.domains) > 0 {
		b.Queue("INSERT INTO outbound (domain, message_id, record) SELECT d, $1, r FROM unnest($2::text[], $3::bytea[]) AS u (d, r)",
			q.id, q.domains, q.records)
	}
}

func decodeOutbound(domain, id string, v []byte) (broker.Outbound, error) {
	var o broker.Outbound
	if err := json.Unmarshal(v, &o); err != nil {
		return broker.Outbound{}, fmt.Errorf("decode outbound entry of %s: %w", id, err)
	}
	o.Domain, o.MessageID = domain, id
	return o, nil
}

// Outbound lists up to limit messages waiting for the node of domain, in
// order of message id, starting after the message id after ("" for the
// first).
func (s *Store) Outbound(ctx context.Context, domain, after string, limit int) ([]broker.Outbound, error) {
	rows, err := s.pool.Query(ctx, "SELECT message_id, record FROM outbound WHERE domain = $1 AND message_id > $2 ORDER BY message_id LIMIT $3",
		domain, after, queueLimit(limit))
	if err != nil {
		return nil, fmt.Errorf("list outbound queue of %s: %w", domain, err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (broker.Outbound, error) {
		var id string
		var v []byte
		if err := row.Scan(&id, &v); err != nil {
			return broker.Outbound{}, err
		}
		return decodeOutbound(domain, id, v)
	})
	if err != nil {
		return nil, fmt.Errorf("list outbound queue of %s: %w", domain, err)
	}
	return out, nil
}

// OutboundEntry returns the queue entry of message id for the node of
// domain, or an error wrapping broker.ErrNotFound.
func (s *Store) OutboundEntry(ctx context.Context, domain, id string) (broker.Outbound, error) {
	var v []byte
	err := s.pool.QueryRow(ctx, "SELECT record FROM outbound WHERE domain = $1 AND message_id = $2", domain, id).Scan(&v)
	if errNoRows(err) {
		return broker.Outbound{}, fmt.Errorf("load outbound entry of %s to %s: %w", id, domain, broker.ErrNotFound)
	}
	if err != nil {
		return broker.Outbound{}, fmt.Errorf("load outbound entry of %s to %s: %w", id, domain, err)
	}
	return decodeOutbound(domain, id, v)
}

// SetOutbound replaces the retry state of a queued message; an error
// wrapping broker.ErrNotFound if it is no longer queued.
func (s *Store) SetOutbound(ctx context.Context, o broker.Outbound) error {
	if checkKeyPart("domain", o.Domain) != nil || checkKeyPart("message id", o.MessageID) != nil {
		return fmt.Errorf("update outbound entry: %w: no domain or message id", broker.ErrInvalid)
	}
	v, err := json.Marshal(o)
	if err != nil {
		return fmt.Errorf("update outbound entry: %w", err)
	}
	err = s.write(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, "UPDATE outbound SET record = $3 WHERE domain = $1 AND message_id = $2", o.Domain, o.MessageID, v)
		if err == nil && tag.RowsAffected() == 0 {
			return broker.ErrNotFound
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("update outbound entry of %s to %s: %w", o.MessageID, o.Domain, err)
	}
	return nil
}

// FinishRelay applies steps (see AppendEvidence) and, if done, removes
// the message from the queue of domain, in one transaction: all of it or
// nothing. Errors wrap broker.ErrConflict or broker.ErrNotFound as
// AppendEvidence's do.
func (s *Store) FinishRelay(ctx context.Context, domain, id string, steps []broker.Step, done bool) ([]broker.Evidence, error) {
	if checkKeyPart("domain", domain) != nil || checkKeyPart("message id", id) != nil {
		return nil, fmt.Errorf("finish relay: %w: no domain or message id", broker.ErrInvalid)
	}
	pending := make([]pendingStep, len(steps))
	for i, st := range steps {
		if st.Evidence.MessageID != id {
			return nil, fmt.Errorf("finish relay of %s: %w: evidence for message %q", id, broker.ErrInvalid, st.Evidence.MessageID)
		}
		var err error
		if pending[i], err = prepareStep(st); err != nil {
			return nil, fmt.Errorf("finish relay of %s: %w", id, err)
		}
	}
	var out []broker.Evidence
	err := s.write(ctx, func(tx pgx.Tx) error {
		if done {
			if _, err := tx.Exec(ctx, "DELETE FROM outbound WHERE domain = $1 AND message_id = $2", domain, id); err != nil {
				return fmt.Errorf("dequeue: %w", err)
			}
		}
		var err error
		out, err = applySteps(ctx, tx, id, pending)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("finish relay of %s to %s: %w", id, domain, err)
	}
	if out == nil {
		out = []broker.Evidence{}
	}
	return out, nil
}

// Pushes lists up to limit evidence waiting to be sent to the node of
// domain, in order of leaf index, from leaf index from on.
func (s *Store) Pushes(ctx context.Context, domain string, from uint64, limit int) ([]broker.Evidence, error) {
	if from > 1<<63-1 {
		return nil, nil
	}
	rows, err := s.pool.Query(ctx, `SELECT e.leaf_index, e.record FROM pushes p
		JOIN evidence e ON e.log = '' AND e.leaf_index = p.leaf_index
		WHERE p.domain = $1 AND p.leaf_index >= $2 ORDER BY p.leaf_index LIMIT $3`, domain, int64(from), queueLimit(limit))
	if err != nil {
		return nil, fmt.Errorf("list push queue of %s: %w", domain, err)
	}
	evs, err := pgx.CollectRows(rows, scanEvidence)
	if err != nil {
		return nil, fmt.Errorf("list push queue of %s: %w", domain, err)
	}
	return evs, nil
}

// DeletePush removes the evidence at leaf index from the push queue of
// domain; removing an entry that is not there is not an error.
func (s *Store) DeletePush(ctx context.Context, domain string, index uint64) error {
	if checkKeyPart("domain", domain) != nil {
		return fmt.Errorf("delete push: %w: no domain", broker.ErrInvalid)
	}
	err := s.write(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "DELETE FROM pushes WHERE domain = $1 AND leaf_index = $2", domain, int64(index))
		return err
	})
	if err != nil {
		return fmt.Errorf("delete push of leaf %d to %s: %w", index, domain, err)
	}
	return nil
}

// Due lists up to limit copies whose Deadline is not after now, earliest
// first (then by message id and recipient), starting after the copy after
// (the zero Copy for the first).
func (s *Store) Due(ctx context.Context, now time.Time, after broker.Copy, limit int) ([]broker.Copy, error) {
	start, id, rcpt := int64(-1<<63), "", ""
	if after.MessageID != "" {
		start, id, rcpt = nanos(after.Deadline), after.MessageID, after.Recipient
	}
	rows, err := s.pool.Query(ctx, `SELECT record FROM copies
		WHERE deadline_ns IS NOT NULL AND deadline_ns <= $1 AND (deadline_ns, message_id, recipient) > ($2, $3, $4)
		ORDER BY deadline_ns, message_id, recipient LIMIT $5`, nanos(now), start, id, rcpt, queueLimit(limit))
	if err != nil {
		return nil, fmt.Errorf("list due copies: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (broker.Copy, error) {
		var v []byte
		if err := row.Scan(&v); err != nil {
			return broker.Copy{}, err
		}
		c, err := decodeCopy(v)
		if err != nil {
			return broker.Copy{}, err
		}
		return *c, nil
	})
	if err != nil {
		return nil, fmt.Errorf("list due copies: %w", err)
	}
	return out, nil
}

// LeaseRelay takes the relay of message id to the node of domain for
// holder until until, unless another holder's lease on it runs past now;
// ok reports whether it did. A holder may take its own lease again to
// extend it. An error wrapping broker.ErrNotFound if the message is not
// queued for domain.
//
// The entry is locked with SKIP LOCKED: a process that finds another one
// writing it right now (taking or ending a lease, recording a try) is
// answered false and goes on to the next message instead of waiting; it
// tries this one in a later round.
func (s *Store) LeaseRelay(ctx context.Context, domain, id, holder string, now, until time.Time) (bool, error) {
	if holder == "" {
		return false, fmt.Errorf("lease relay of %s to %s: no holder", id, domain)
	}
	var ok bool
	err := s.write(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE outbound o SET lease_holder = $3, lease_until_ns = $5
			FROM (SELECT domain, message_id FROM outbound
				WHERE domain = $1 AND message_id = $2
				AND (lease_holder IS NULL OR lease_holder = $3 OR lease_until_ns <= $4)
				FOR UPDATE SKIP LOCKED) free
			WHERE o.domain = free.domain AND o.message_id = free.message_id`,
			domain, id, holder, nanos(now), nanos(until))
		if err != nil {
			return err
		}
		if ok = tag.RowsAffected() == 1; ok {
			return nil
		}
		var queued bool
		if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT FROM outbound WHERE domain = $1 AND message_id = $2)", domain, id).Scan(&queued); err != nil {
			return err
		}
		if !queued {
			return broker.ErrNotFound
		}
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("lease relay of %s to %s: %w", id, domain, err)
	}
	return ok, nil
}

// ReleaseRelay ends holder's lease on the relay of message id to the node
// of domain; a lease that holder no longer has is left alone.
func (s *Store) ReleaseRelay(ctx context.Context, domain, id, holder string) error {
	err := s.write(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "UPDATE outbound SET lease_holder = NULL, lease_until_ns = NULL WHERE domain = $1 AND message_id = $2 AND lease_holder = $3",
			domain, id, holder)
		return err
	})
	if err != nil {
		return fmt.Errorf("release relay of %s to %s: %w", id, domain, err)
	}
	return nil
}
