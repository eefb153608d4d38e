package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"

	"kurier.dev/kurier/broker"
)

// The queues. An outbound entry (o/) says that a message waits for the
// node of a domain; it carries only the retry state, since which
// recipients it is for follows from the message's copies. A push entry
// (p/) points at an evidence of this node's log that the sender's node
// must be sent. The deadline index (w/) lists copies by Deadline. Each is
// written in the transaction that makes it necessary (CreateMessage,
// AppendEvidence) and removed in the one that makes it unnecessary
// (FinishRelay, DeletePush, a copy's next Deadline), so none is ever lost
// or left behind by a crash.

// MaxQueuePage is the most entries Outbound, Pushes and Due return at once.
const MaxQueuePage = 1000

func queueLimit(limit int) int {
	if limit <= 0 || limit > MaxQueuePage {
		return MaxQueuePage
	}
	return limit
}

// Outbound lists up to limit messages waiting for the node of domain, in
// order of message id (for UUIDv7 ids, order of creation), starting after
// the message id after ("" for the first).
func (db *DB) Outbound(ctx context.Context, domain, after string, limit int) ([]broker.Outbound, error) {
	if checkKeyPart("domain", domain) != nil {
		return nil, nil
	}
	limit = queueLimit(limit)
	prefix := outboundPrefix(domain)
	start := prefix
	if after != "" {
		start = outboundKey(domain, after)
	}
	var out []broker.Outbound
	err := db.view(ctx, func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true, PrefetchSize: min(limit, 100)})
		defer it.Close()
		for it.Seek(start); it.Valid() && len(out) < limit; it.Next() {
			id, ok := parseOutboundKey(prefix, it.Item().Key())
			if !ok {
				return fmt.Errorf("malformed outbound key %q", it.Item().Key())
			}
			if id == after {
				continue
			}
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			var o broker.Outbound
			if err := json.Unmarshal(v, &o); err != nil {
				return fmt.Errorf("decode outbound entry of %s: %w", id, err)
			}
			o.Domain, o.MessageID = domain, id
			out = append(out, o)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list outbound queue of %s: %w", domain, err)
	}
	return out, nil
}

// OutboundEntry returns the queue entry of message id for the node of
// domain, or an error wrapping broker.ErrNotFound.
func (db *DB) OutboundEntry(ctx context.Context, domain, id string) (broker.Outbound, error) {
	if checkKeyPart("domain", domain) != nil || checkKeyPart("message id", id) != nil {
		return broker.Outbound{}, fmt.Errorf("load outbound entry: %w", broker.ErrNotFound)
	}
	var o broker.Outbound
	err := db.view(ctx, func(txn *badger.Txn) error {
		v, ok, err := get(txn, outboundKey(domain, id))
		if err != nil {
			return err
		}
		if !ok {
			return broker.ErrNotFound
		}
		return json.Unmarshal(v, &o)
	})
	if err != nil {
		return broker.Outbound{}, fmt.Errorf("load outbound entry of %s to %s: %w", id, domain, err)
	}
	o.Domain, o.MessageID = domain, id
	return o, nil
}

// SetOutbound durably replaces the retry state of a queued message. It
// returns an error wrapping broker.ErrNotFound if the message is no longer
// queued (relayed or given up meanwhile).
func (db *DB) SetOutbound(ctx context.Context, o broker.Outbound) error {
	if checkKeyPart("domain", o.Domain) != nil || checkKeyPart("message id", o.MessageID) != nil {
		return fmt.Errorf("update outbound entry: %w: no domain or message id", broker.ErrInvalid)
	}
	v, err := json.Marshal(o)
	if err != nil {
		return fmt.Errorf("update outbound entry: %w", err)
	}
	k := outboundKey(o.Domain, o.MessageID)
	err = db.submit(ctx, len(k)+len(v), func(b *batch) error {
		if ok, err := b.has(k); err != nil {
			return err
		} else if !ok {
			return broker.ErrNotFound
		}
		return b.set(k, v)
	})
	if err != nil {
		return fmt.Errorf("update outbound entry of %s to %s: %w", o.MessageID, o.Domain, err)
	}
	return nil
}

// FinishRelay applies steps (the evidence of a relay's outcome, see
// AppendEvidence) and, if done, removes the message from the queue of
// domain, in one durable transaction: all of it or nothing. (A relay of
// some of the message's recipients there is not done: the entry stays for
// the others.) Errors wrap broker.ErrConflict or broker.ErrNotFound as
// AppendEvidence's do.
func (db *DB) FinishRelay(ctx context.Context, domain, id string, steps []broker.Step, done bool) ([]broker.Evidence, error) {
	if checkKeyPart("domain", domain) != nil || checkKeyPart("message id", id) != nil {
		return nil, fmt.Errorf("finish relay: %w: no domain or message id", broker.ErrInvalid)
	}
	k := outboundKey(domain, id)
	size := len(k)
	pending := make([]pendingStep, len(steps))
	for i, s := range steps {
		if s.Evidence.MessageID != id {
			return nil, fmt.Errorf("finish relay of %s: %w: evidence for message %q", id, broker.ErrInvalid, s.Evidence.MessageID)
		}
		var err error
		if pending[i], err = prepareStep(s); err != nil {
			return nil, fmt.Errorf("finish relay of %s: %w", id, err)
		}
		size += pending[i].size()
	}
	out := make([]broker.Evidence, len(steps))
	err := db.submit(ctx, size, func(b *batch) error {
		for i, p := range pending {
			var err error
			if out[i], err = p.apply(b); err != nil {
				return err
			}
		}
		if done {
			if err := b.del(k); err != nil {
				return err
			}
		}
		return b.saveCounters()
	})
	if err != nil {
		return nil, fmt.Errorf("finish relay of %s to %s: %w", id, domain, err)
	}
	return out, nil
}

// Pushes lists up to limit evidence waiting to be sent to the node of
// domain, in order of issue (leaf index), from leaf index from on.
func (db *DB) Pushes(ctx context.Context, domain string, from uint64, limit int) ([]broker.Evidence, error) {
	if checkKeyPart("domain", domain) != nil {
		return nil, nil
	}
	limit = queueLimit(limit)
	prefix := pushPrefix(domain)
	var out []broker.Evidence
	err := db.view(ctx, func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true, PrefetchSize: min(limit, 100)})
		defer it.Close()
		for it.Seek(pushKey(domain, from)); it.Valid() && len(out) < limit; it.Next() {
			ek, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			v, ok, err := get(txn, ek)
			if err != nil {
				return err
			}
			if !ok {
				return fmt.Errorf("queued evidence %q is not stored", ek)
			}
			ev, err := decodeEvidence(v)
			if err != nil {
				return err
			}
			out = append(out, ev)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list push queue of %s: %w", domain, err)
	}
	return out, nil
}

// DeletePush durably removes the evidence at leaf index from the push
// queue of domain, once that domain's node has it. Removing an entry that
// is not there is not an error.
func (db *DB) DeletePush(ctx context.Context, domain string, index uint64) error {
	if checkKeyPart("domain", domain) != nil {
		return fmt.Errorf("delete push: %w: no domain", broker.ErrInvalid)
	}
	k := pushKey(domain, index)
	if err := db.submit(ctx, len(k), func(b *batch) error { return b.del(k) }); err != nil {
		return fmt.Errorf("delete push of leaf %d to %s: %w", index, domain, err)
	}
	return nil
}

// Due lists up to limit copies whose Deadline is not after now, earliest
// first, starting after the copy after (the zero Copy for the first).
func (db *DB) Due(ctx context.Context, now time.Time, after broker.Copy, limit int) ([]broker.Copy, error) {
	limit = queueLimit(limit)
	end := dueKey(now, "", "")[:len(duePrefix)+8]
	start := duePrefix
	var skip []byte
	if after.MessageID != "" {
		skip = dueKey(after.Deadline, after.MessageID, after.Recipient)
		start = skip
	}
	var out []broker.Copy
	err := db.view(ctx, func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: duePrefix})
		defer it.Close()
		for it.Seek(start); it.Valid() && len(out) < limit; it.Next() {
			k := it.Item().Key()
			if skip != nil && string(k) == string(skip) {
				continue
			}
			if string(k[:len(end)]) > string(end) {
				break
			}
			_, id, rcpt, ok := parseDueKey(k)
			if !ok {
				return fmt.Errorf("malformed deadline key %q", k)
			}
			c, err := loadCopy(txn, id, rcpt)
			if err != nil {
				return fmt.Errorf("copy of %s for %s: %w", id, rcpt, err)
			}
			out = append(out, *c)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list due copies: %w", err)
	}
	return out, nil
}
