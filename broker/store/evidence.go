package store

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"

	"github.com/dgraph-io/badger/v4"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/tlog"
)

// Evidence is stored as its leaf index in the transparency log (8 bytes,
// big-endian) followed by the JSON of broker.Evidence with Seq and
// LeafIndex left zero: the Seq is in the key, and both are assigned by the
// committer, so the JSON can be encoded before. Fields added to
// broker.Evidence are stored without changes here.

// encodeEvidence returns the JSON part of an evidence value.
func encodeEvidence(ev broker.Evidence) ([]byte, error) {
	ev.Seq, ev.LeafIndex = 0, 0
	v, err := json.Marshal(ev)
	if err != nil {
		return nil, fmt.Errorf("encode evidence: %w", err)
	}
	return v, nil
}

// evidenceValue returns the stored value of an evidence: its leaf index,
// then js from encodeEvidence.
func evidenceValue(index uint64, js []byte) []byte {
	v := make([]byte, 8, 8+len(js))
	binary.BigEndian.PutUint64(v, index)
	return append(v, js...)
}

func decodeEvidence(seq uint64, v []byte) (broker.Evidence, error) {
	var ev broker.Evidence
	if len(v) < 8 {
		return broker.Evidence{}, fmt.Errorf("decode evidence %d: %d bytes", seq, len(v))
	}
	if err := json.Unmarshal(v[8:], &ev); err != nil {
		return broker.Evidence{}, fmt.Errorf("decode evidence %d: %w", seq, err)
	}
	ev.Seq, ev.LeafIndex = seq, binary.BigEndian.Uint64(v)
	return ev, nil
}

// logWriteSize estimates the bytes the transparency log adds to a batch per
// evidence (leaf entry, about two tree nodes, counters), for the batch
// bound.
const logWriteSize = 192

// putEvidence assigns the next Seq to an evidence, appends it to the
// transparency log and writes the evidence record, its entry in the
// node-wide log (l/) and its leaf entry (i/). js is from encodeEvidence,
// leaf the evidence's tlog.LeafHash. A request that calls it must call
// saveCounters as its last write.
func putEvidence(b *batch, id string, js, leaf []byte) (seq, index uint64, err error) {
	seq = b.nextSeq()
	index, err = b.appendLeaf(leaf)
	if err != nil {
		return 0, 0, err
	}
	ek := evidenceKey(id, seq)
	if err := b.set(ek, evidenceValue(index, js)); err != nil {
		return 0, 0, err
	}
	if err := b.set(logKey(seq), []byte(id)); err != nil {
		return 0, 0, err
	}
	if err := b.set(leafKey(index), ek); err != nil {
		return 0, 0, err
	}
	return seq, index, nil
}

// AppendEvidence adds ev to the chain of the copy (ev.MessageID,
// ev.Recipient) if the copy's Head is still prevHead, and sets the copy's
// Head to newHead and its State to newState, in one durable transaction
// that also appends ev to the transparency log. It returns ev with its Seq
// and LeafIndex. Errors wrap broker.ErrNotFound if there is no
// such copy and broker.ErrConflict if its Head is not prevHead (nothing is
// written then); a context error means the outcome is unknown.
func (db *DB) AppendEvidence(ctx context.Context, ev broker.Evidence, prevHead, newHead string, newState broker.State) (broker.Evidence, error) {
	if err := checkKeyPart("message id", ev.MessageID); err != nil {
		return broker.Evidence{}, fmt.Errorf("append evidence: %w", err)
	}
	if err := checkKeyPart("recipient", ev.Recipient); err != nil {
		return broker.Evidence{}, fmt.Errorf("append evidence to %s: %w", ev.MessageID, err)
	}
	js, err := encodeEvidence(ev)
	if err != nil {
		return broker.Evidence{}, err
	}
	leaf := tlog.LeafHash(ev.DER)
	ck := copyKey(ev.MessageID, ev.Recipient)
	err = db.submit(ctx, len(js)+len(ck)+64+logWriteSize, func(b *batch) error {
		v, ok, err := b.get(ck)
		if err != nil {
			return err
		}
		if !ok {
			return broker.ErrNotFound
		}
		c, err := decodeCopy(v)
		if err != nil {
			return err
		}
		if c.Head != prevHead {
			return fmt.Errorf("%w: chain head is %q, not %q", broker.ErrConflict, c.Head, prevHead)
		}
		c.Head, c.State = newHead, newState
		cv, err := json.Marshal(c)
		if err != nil {
			return fmt.Errorf("encode copy: %w", err)
		}
		if err := b.set(ck, cv); err != nil {
			return err
		}
		if ev.Seq, ev.LeafIndex, err = putEvidence(b, ev.MessageID, js, leaf); err != nil {
			return err
		}
		return b.saveCounters()
	})
	if err != nil {
		return broker.Evidence{}, fmt.Errorf("append evidence to %s for %s: %w", ev.MessageID, ev.Recipient, err)
	}
	return ev, nil
}

// AddEvidence stores evidence that belongs to no copy's chain (a
// SubmissionRejection, whose message may not be stored at all), appends it
// to the transparency log in the same durable transaction, and returns it
// with its Seq and LeafIndex. A context error means the outcome is unknown.
func (db *DB) AddEvidence(ctx context.Context, ev broker.Evidence) (broker.Evidence, error) {
	if err := checkKeyPart("message id", ev.MessageID); err != nil {
		return broker.Evidence{}, fmt.Errorf("add evidence: %w", err)
	}
	js, err := encodeEvidence(ev)
	if err != nil {
		return broker.Evidence{}, err
	}
	leaf := tlog.LeafHash(ev.DER)
	err = db.submit(ctx, len(js)+64+logWriteSize, func(b *batch) error {
		var err error
		if ev.Seq, ev.LeafIndex, err = putEvidence(b, ev.MessageID, js, leaf); err != nil {
			return err
		}
		return b.saveCounters()
	})
	if err != nil {
		return broker.Evidence{}, fmt.Errorf("add evidence to %s: %w", ev.MessageID, err)
	}
	return ev, nil
}

// Evidence returns all evidence stored for a message, by Seq; none is an
// empty result, not an error.
func (db *DB) Evidence(ctx context.Context, messageID string) ([]broker.Evidence, error) {
	if checkKeyPart("message id", messageID) != nil {
		return nil, nil
	}
	var evs []broker.Evidence
	prefix := evidencePrefix(messageID)
	err := db.view(ctx, func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = prefix
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Seek(prefix); it.Valid(); it.Next() {
			item := it.Item()
			if len(item.Key()) != len(prefix)+8 {
				return fmt.Errorf("malformed evidence key %q", item.Key())
			}
			seq := seqOfEvidenceKey(item.Key())
			v, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			ev, err := decodeEvidence(seq, v)
			if err != nil {
				return err
			}
			evs = append(evs, ev)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load evidence of %s: %w", messageID, err)
	}
	return evs, nil
}

// EvidenceSince returns evidence of all messages with Seq greater than
// after, in Seq order, at most limit (limit <= 0 means 1000): the node's
// evidence log. (The transparency log has the same evidence in the same
// order; its leaf indexes have no gaps, Seqs may.)
func (db *DB) EvidenceSince(ctx context.Context, after uint64, limit int) ([]broker.Evidence, error) {
	if limit <= 0 {
		limit = 1000
	}
	if after == ^uint64(0) {
		return nil, nil
	}
	var evs []broker.Evidence
	err := db.view(ctx, func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = logPrefix
		opts.PrefetchSize = min(limit, 100)
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Seek(logKey(after + 1)); it.Valid() && len(evs) < limit; it.Next() {
			seq, ok := seqOfLogKey(it.Item().Key())
			if !ok {
				return fmt.Errorf("malformed evidence log key %q", it.Item().Key())
			}
			id, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			v, ok, err := get(txn, evidenceKey(string(id), seq))
			if err != nil {
				return err
			}
			if !ok {
				return fmt.Errorf("evidence %d of %s is in the log but not stored", seq, id)
			}
			ev, err := decodeEvidence(seq, v)
			if err != nil {
				return err
			}
			evs = append(evs, ev)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load evidence after %d: %w", after, err)
	}
	return evs, nil
}
