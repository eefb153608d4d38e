package store

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/tlog"
)

// Evidence is stored as its leaf index (8 bytes, big-endian) followed by
// the JSON of broker.Evidence with LeafIndex left zero, so that the JSON can
// be encoded before the committer assigns the index. For evidence of
// another node's log (Log not empty) the index is the one that node
// assigned. Fields added to broker.Evidence are stored without changes here.

// encodeEvidence returns the JSON part of an evidence value.
func encodeEvidence(ev broker.Evidence) ([]byte, error) {
	ev.LeafIndex = 0
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

func decodeEvidence(v []byte) (broker.Evidence, error) {
	var ev broker.Evidence
	if len(v) < 8 {
		return broker.Evidence{}, fmt.Errorf("decode evidence: %d bytes", len(v))
	}
	if err := json.Unmarshal(v[8:], &ev); err != nil {
		return broker.Evidence{}, fmt.Errorf("decode evidence: %w", err)
	}
	ev.LeafIndex = binary.BigEndian.Uint64(v)
	return ev, nil
}

// logWriteSize estimates the bytes the transparency log adds to a batch per
// evidence (leaf entry, about two tree nodes, counters), for the batch
// bound.
const logWriteSize = 192

// pendingEvidence is an evidence prepared outside the committer.
type pendingEvidence struct {
	ev   broker.Evidence
	js   []byte // from encodeEvidence
	leaf []byte // tlog.LeafHash of the DER; nil for another node's evidence
}

func prepareEvidence(ev broker.Evidence) (pendingEvidence, error) {
	if err := checkKeyPart("message id", ev.MessageID); err != nil {
		return pendingEvidence{}, err
	}
	js, err := encodeEvidence(ev)
	if err != nil {
		return pendingEvidence{}, err
	}
	p := pendingEvidence{ev: ev, js: js}
	if ev.Log == "" {
		p.leaf = tlog.LeafHash(ev.DER)
	}
	return p, nil
}

func (p pendingEvidence) size() int { return len(p.js) + 2*len(p.ev.MessageID) + 32 + logWriteSize }

// putEvidence stores an evidence after the message's last one and, if it
// belongs in this node's log, appends it there and writes its leaf entry.
// It returns the evidence with its leaf index and the key it is stored
// under. A request that calls it must call saveCounters as its last write.
func putEvidence(b *batch, p pendingEvidence) (broker.Evidence, []byte, error) {
	pos, err := b.nextEvidencePos(p.ev.MessageID)
	if err != nil {
		return broker.Evidence{}, nil, err
	}
	ev := p.ev
	ek := evidenceKey(ev.MessageID, pos)
	if p.leaf != nil {
		if ev.LeafIndex, err = b.appendLeaf(p.leaf); err != nil {
			return broker.Evidence{}, nil, err
		}
		if err := b.set(leafKey(ev.LeafIndex), ek); err != nil {
			return broker.Evidence{}, nil, err
		}
	}
	if err := b.set(ek, evidenceValue(ev.LeafIndex, p.js)); err != nil {
		return broker.Evidence{}, nil, err
	}
	return ev, ek, nil
}

// nextEvidencePos takes the next position for the message's evidence from
// its counter (as the batch sees it) and counts it. A point read: an
// iterator per evidence in the committer halved its throughput.
func (b *batch) nextEvidencePos(id string) (uint64, error) {
	k := positionKey(id)
	v, ok, err := b.get(k)
	if err != nil {
		return 0, err
	}
	var pos uint64
	if ok {
		if pos, err = decodeSeq(v); err != nil {
			return 0, fmt.Errorf("evidence position of %s: %w", id, err)
		}
	}
	if err := b.set(k, encodeSeq(pos+1)); err != nil {
		return 0, err
	}
	return pos, nil
}

// pendingStep is a broker.Step prepared outside the committer.
type pendingStep struct {
	ev       pendingEvidence
	prevHead string
	next     broker.Copy
	push     string
	ck       []byte // the copy's key
}

func prepareStep(s broker.Step) (pendingStep, error) {
	ev := s.Evidence
	if err := checkKeyPart("recipient", ev.Recipient); err != nil {
		return pendingStep{}, err
	}
	if s.Next.MessageID != ev.MessageID || s.Next.Recipient != ev.Recipient {
		return pendingStep{}, fmt.Errorf("%w: the evidence is about %s for %s, the copy is %s for %s", broker.ErrInvalid, ev.MessageID, ev.Recipient, s.Next.MessageID, s.Next.Recipient)
	}
	if s.Push != "" && ev.Log != "" {
		return pendingStep{}, fmt.Errorf("%w: only evidence of this node's log is pushed to other nodes", broker.ErrInvalid)
	}
	p, err := prepareEvidence(ev)
	if err != nil {
		return pendingStep{}, err
	}
	return pendingStep{ev: p, prevHead: s.PrevHead, next: s.Next, push: s.Push, ck: copyKey(ev.MessageID, ev.Recipient)}, nil
}

func (p pendingStep) size() int { return p.ev.size() + 2*len(p.ck) + 256 }

// apply runs one step in the batch: checks the copy's head, stores the
// evidence, writes the copy's next record and its deadline entry, and
// queues the push.
func (p pendingStep) apply(b *batch) (broker.Evidence, error) {
	v, ok, err := b.get(p.ck)
	if err != nil {
		return broker.Evidence{}, err
	}
	if !ok {
		return broker.Evidence{}, fmt.Errorf("%w: no copy of %s for %s", broker.ErrNotFound, p.next.MessageID, p.next.Recipient)
	}
	c, err := decodeCopy(v)
	if err != nil {
		return broker.Evidence{}, err
	}
	if c.Head != p.prevHead {
		return broker.Evidence{}, fmt.Errorf("%w: chain head is %q, not %q", broker.ErrConflict, c.Head, p.prevHead)
	}
	next := p.next
	next.Received, next.Local = c.Received, c.Local
	if err := b.putCopy(next, c.Deadline); err != nil {
		return broker.Evidence{}, err
	}
	ev, ek, err := putEvidence(b, p.ev)
	if err != nil {
		return broker.Evidence{}, err
	}
	if p.push != "" {
		if err := b.set(pushKey(p.push, ev.LeafIndex), ek); err != nil {
			return broker.Evidence{}, err
		}
	}
	return ev, nil
}

// putCopy writes a copy record and moves its deadline entry from old (zero
// for none) to the copy's own Deadline.
func (b *batch) putCopy(c broker.Copy, old time.Time) error {
	cv, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("encode copy: %w", err)
	}
	if err := b.set(copyKey(c.MessageID, c.Recipient), cv); err != nil {
		return err
	}
	if !old.IsZero() && !old.Equal(c.Deadline) {
		if err := b.del(dueKey(old, c.MessageID, c.Recipient)); err != nil {
			return err
		}
	}
	if !c.Deadline.IsZero() {
		return b.set(dueKey(c.Deadline, c.MessageID, c.Recipient), nil)
	}
	return nil
}

// AppendEvidence applies one step to a copy (see broker.Step) in one
// durable transaction that also appends the evidence to the transparency
// log if it is this node's (Log empty). It returns the evidence with its
// LeafIndex. Errors wrap broker.ErrNotFound if there is no such copy and
// broker.ErrConflict if its head is not s.PrevHead (nothing is written
// then); a context error means the outcome is unknown.
func (db *DB) AppendEvidence(ctx context.Context, s broker.Step) (broker.Evidence, error) {
	p, err := prepareStep(s)
	if err != nil {
		return broker.Evidence{}, fmt.Errorf("append evidence to %s: %w", s.Evidence.MessageID, err)
	}
	var out broker.Evidence
	err = db.submit(ctx, p.size(), func(b *batch) error {
		var err error
		if out, err = p.apply(b); err != nil {
			return err
		}
		return b.saveCounters()
	})
	if err != nil {
		return broker.Evidence{}, fmt.Errorf("append evidence to %s for %s: %w", s.Evidence.MessageID, s.Evidence.Recipient, err)
	}
	return out, nil
}

// AddEvidence stores evidence that belongs to no copy's chain (a
// SubmissionRejection, whose message may not be stored at all), appends it
// to the transparency log in the same durable transaction, and returns it
// with its LeafIndex. A context error means the outcome is unknown.
func (db *DB) AddEvidence(ctx context.Context, ev broker.Evidence) (broker.Evidence, error) {
	if ev.Log != "" {
		return broker.Evidence{}, fmt.Errorf("add evidence to %s: %w: evidence of another log belongs to a copy", ev.MessageID, broker.ErrInvalid)
	}
	p, err := prepareEvidence(ev)
	if err != nil {
		return broker.Evidence{}, fmt.Errorf("add evidence: %w", err)
	}
	err = db.submit(ctx, p.size(), func(b *batch) error {
		var err error
		if ev, _, err = putEvidence(b, p); err != nil {
			return err
		}
		return b.saveCounters()
	})
	if err != nil {
		return broker.Evidence{}, fmt.Errorf("add evidence to %s: %w", ev.MessageID, err)
	}
	return ev, nil
}

// Evidence returns all evidence stored for a message, in the order it was
// stored; none is an empty result, not an error.
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
			v, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			ev, err := decodeEvidence(v)
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
