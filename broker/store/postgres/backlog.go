package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"kurier.dev/kurier/address"
	"kurier.dev/kurier/broker"
)

// Backlog reports what waits in the database, for every process serving
// it: the outbound queue by destination domain (its age is that of the
// oldest copy still relaying there), and the local copies not fetched or
// not answered. It reads one consistent snapshot with a few aggregate
// queries over indexes; the metrics call it at most once per scrape.
func (s *Store) Backlog(ctx context.Context) (broker.Backlog, error) {
	b := broker.Backlog{Queued: map[string]broker.Waiting{}}
	err := s.read(ctx, func(tx pgx.Tx) error {
		if err := queued(ctx, tx, b.Queued); err != nil {
			return err
		}
		for _, w := range []struct {
			state broker.State
			into  *broker.Waiting
		}{{broker.StateDelivered, &b.Unfetched}, {broker.StateRetrieved, &b.Unanswered}} {
			var n int
			var oldest *int64
			err := tx.QueryRow(ctx, "SELECT count(*), min(received_ns) FROM copies WHERE state = $1 AND local", string(w.state)).Scan(&n, &oldest)
			if err != nil {
				return fmt.Errorf("count %s copies: %w", w.state, err)
			}
			if n > 0 && oldest != nil {
				*w.into = broker.Waiting{Count: n, Oldest: time.Unix(0, *oldest).UTC()}
			}
		}
		return nil
	})
	if err != nil {
		return broker.Backlog{}, fmt.Errorf("load backlog: %w", err)
	}
	return b, nil
}

// queued counts the outbound queue's entries by domain and dates each
// domain's by its oldest copy still relaying.
func queued(ctx context.Context, tx pgx.Tx, into map[string]broker.Waiting) error {
	rows, err := tx.Query(ctx, "SELECT domain, count(*) FROM outbound GROUP BY domain")
	if err != nil {
		return fmt.Errorf("count the outbound queue: %w", err)
	}
	var domain string
	var n int
	if _, err := pgx.ForEachRow(rows, []any{&domain, &n}, func() error {
		into[domain] = broker.Waiting{Count: n}
		return nil
	}); err != nil {
		return fmt.Errorf("count the outbound queue: %w", err)
	}
	rows, err = tx.Query(ctx, "SELECT recipient, min(received_ns) FROM copies WHERE state = $1 GROUP BY recipient", string(broker.StateRelaying))
	if err != nil {
		return fmt.Errorf("date the outbound queue: %w", err)
	}
	var rcpt string
	var oldest int64
	_, err = pgx.ForEachRow(rows, []any{&rcpt, &oldest}, func() error {
		d := address.DomainOf(rcpt)
		at := time.Unix(0, oldest).UTC()
		if w, ok := into[d]; ok && (w.Oldest.IsZero() || at.Before(w.Oldest)) {
			w.Oldest = at
			into[d] = w
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("date the outbound queue: %w", err)
	}
	return nil
}
