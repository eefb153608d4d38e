package store

import (
	"bytes"
	"context"
	"fmt"

	"github.com/dgraph-io/badger/v4"

	"kurier.dev/kurier/address"
	"kurier.dev/kurier/broker"
)

// Backlog reports what waits in the store: the outbound queue by
// destination domain, and the local copies not fetched or not answered.
// It reads every copy and queue entry in one read transaction, so its
// cost grows with the store; the metrics that use it call it at most once
// per scrape interval.
func (db *DB) Backlog(ctx context.Context) (broker.Backlog, error) {
	b := broker.Backlog{Queued: map[string]broker.Waiting{}}
	err := db.view(ctx, func(txn *badger.Txn) error {
		if err := queuedMessages(txn, b.Queued); err != nil {
			return err
		}
		return waitingCopies(ctx, txn, &b)
	})
	if err != nil {
		return broker.Backlog{}, fmt.Errorf("load backlog: %w", err)
	}
	return b, nil
}

// queuedMessages counts the outbound queue's entries by domain.
func queuedMessages(txn *badger.Txn, queued map[string]broker.Waiting) error {
	prefix := []byte("o/")
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
	defer it.Close()
	for it.Seek(prefix); it.Valid(); it.Next() {
		domain, _, ok := readStr(bytes.TrimPrefix(it.Item().Key(), prefix))
		if !ok {
			return fmt.Errorf("%w: malformed outbound key %x", broker.ErrDamaged, it.Item().Key())
		}
		w := queued[domain]
		w.Count++
		queued[domain] = w
	}
	return nil
}

// waitingCopies finds, among all copies, the local ones delivered or
// retrieved and the remote ones still relaying, whose oldest sets the
// age of the domain's queue.
func waitingCopies(ctx context.Context, txn *badger.Txn, b *broker.Backlog) error {
	prefix := []byte("c/")
	opts := badger.DefaultIteratorOptions
	opts.Prefix = prefix
	it := txn.NewIterator(opts)
	defer it.Close()
	for it.Seek(prefix); it.Valid(); it.Next() {
		if err := ctx.Err(); err != nil {
			return err
		}
		var c *broker.Copy
		err := it.Item().Value(func(v []byte) error {
			var err error
			c, err = decodeCopy(v)
			return err
		})
		if err != nil {
			return fmt.Errorf("copy %x: %w", it.Item().Key(), err)
		}
		switch {
		case c.State == broker.StateDelivered && c.Local:
			b.Unfetched.Add(c.Received)
		case c.State == broker.StateRetrieved && c.Local:
			b.Unanswered.Add(c.Received)
		case c.State == broker.StateRelaying:
			// The count is the queue's, of messages; the age is the
			// oldest copy's that the domain's node has not accepted.
			d := address.DomainOf(c.Recipient)
			if w, ok := b.Queued[d]; ok && (w.Oldest.IsZero() || c.Received.Before(w.Oldest)) {
				w.Oldest = c.Received
				b.Queued[d] = w
			}
		}
	}
	return nil
}
