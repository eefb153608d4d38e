package postgres

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/jackc/pgx/v5"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/tlog"
)

// pendingEvidence is an evidence encoded before its transaction begins.
type pendingEvidence struct {
	ev   broker.Evidence
	js   []byte // JSON with LeafIndex zero: the index is assigned later
	leaf []byte // tlog.LeafHash of the DER; nil for another node's evidence
}

func prepareEvidence(ev broker.Evidence) (pendingEvidence, error) {
	if err := checkKeyPart("message id", ev.MessageID); err != nil {
		return pendingEvidence{}, err
	}
	e := ev
	e.LeafIndex = 0
	js, err := json.Marshal(e)
	if err != nil {
		return pendingEvidence{}, fmt.Errorf("encode evidence: %w", err)
	}
	p := pendingEvidence{ev: ev, js: js}
	if ev.Log == "" {
		p.leaf = tlog.LeafHash(ev.DER)
	}
	return p, nil
}

// evidenceWrite stores evidence of one message, with the pushes that
// steps queue, as the last writes of a transaction: queue adds the
// statements that count positions and lock the log to a batch of the
// caller's, finish then writes everything else in one round trip.
type evidenceWrite struct {
	id      string
	pending []pendingEvidence
	pushes  map[int]string // index in pending → domain to push it to

	first int64      // the first evidence's position, once the batch ran
	log   *logAppend // the locked log, once the batch ran; nil if not logged
}

// logged reports whether any of the evidence belongs in this node's log.
func (w *evidenceWrite) logged() bool {
	for _, p := range w.pending {
		if p.leaf != nil {
			return true
		}
	}
	return false
}

// queue adds to b the statement that gives the evidence positions after
// the message's last and, if any evidence is this node's, the one that
// locks the log's head until the transaction ends. The lock comes last:
// every writer takes copies' and positions' rows before it.
func (w *evidenceWrite) queue(b *pgx.Batch) {
	if len(w.pending) == 0 {
		return
	}
	b.Queue(`INSERT INTO evidence_positions AS p (message_id, next) VALUES ($1, $2)
		ON CONFLICT (message_id) DO UPDATE SET next = p.next + $2 RETURNING next - $2`, w.id, len(w.pending)).
		QueryRow(func(row pgx.Row) error {
			if err := row.Scan(&w.first); err != nil {
				return fmt.Errorf("count evidence positions: %w", err)
			}
			return nil
		})
	if w.logged() {
		b.Queue("SELECT size, hashes FROM log_head FOR UPDATE").QueryRow(func(row pgx.Row) error {
			var err error
			w.log, err = scanLogHead(row)
			return err
		})
	}
}

// store runs queue's statements on their own, then finish.
func (w *evidenceWrite) store(ctx context.Context, tx pgx.Tx) ([]broker.Evidence, error) {
	b := &pgx.Batch{}
	w.queue(b)
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return nil, fmt.Errorf("store evidence: %w", err)
	}
	return w.finish(ctx, tx)
}

// finish appends the evidence of this node's log to the log and writes
// the evidence, the log's new nodes and head, and the pushes, in one
// round trip. It returns the evidence with leaf indexes.
func (w *evidenceWrite) finish(ctx context.Context, tx pgx.Tx) ([]broker.Evidence, error) {
	n := len(w.pending)
	if n == 0 {
		return nil, nil
	}
	out := make([]broker.Evidence, n)
	pos, logs, leaves, records := make([]int64, n), make([]string, n), make([]int64, n), make([][]byte, n)
	for i, p := range w.pending {
		out[i] = p.ev
		if p.leaf != nil {
			var err error
			if out[i].LeafIndex, err = w.log.append(p.leaf); err != nil {
				return nil, err
			}
		}
		pos[i], logs[i], leaves[i], records[i] = w.first+int64(i), p.ev.Log, int64(out[i].LeafIndex), p.js
	}
	b := &pgx.Batch{}
	if w.log != nil {
		w.log.queue(b)
	}
	b.Queue(`INSERT INTO evidence (message_id, pos, log, leaf_index, record)
		SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::bigint[], $5::bytea[])`, w.id, pos, logs, leaves, records)
	for i, domain := range w.pushes {
		b.Queue("INSERT INTO pushes (domain, leaf_index) VALUES ($1, $2) ON CONFLICT DO NOTHING", domain, int64(out[i].LeafIndex))
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return nil, fmt.Errorf("store evidence: %w", err)
	}
	return out, nil
}

// pendingStep is a broker.Step checked and encoded before its transaction.
type pendingStep struct {
	ev       pendingEvidence
	prevHead string
	next     broker.Copy
	push     string
}

func prepareStep(s broker.Step) (pendingStep, error) {
	ev := s.Evidence
	if err := checkKeyPart("recipient", ev.Recipient); err != nil {
		return pendingStep{}, err
	}
	if s.Next.MessageID != ev.MessageID || s.Next.Recipient != ev.Recipient {
		return pendingStep{}, fmt.Errorf("%w: the evidence is about %s for %s, the copy is %s for %s", broker.ErrInvalid, ev.MessageID, ev.Recipient, s.Next.MessageID, s.Next.Recipient)
	}
	if s.Push != "" && (ev.Log != "" || checkKeyPart("domain", s.Push) != nil) {
		return pendingStep{}, fmt.Errorf("%w: only evidence of this node's log is pushed, to a named domain", broker.ErrInvalid)
	}
	p, err := prepareEvidence(ev)
	if err != nil {
		return pendingStep{}, err
	}
	return pendingStep{ev: p, prevHead: s.PrevHead, next: s.Next, push: s.Push}, nil
}

// apply moves the copy on in tx: it locks the copy's row, checks its
// head and writes the next record (keeping Received and Local as
// stored). The evidence is stored by the caller's evidenceWrite.
func (p pendingStep) apply(ctx context.Context, tx pgx.Tx) error {
	id, rcpt := p.next.MessageID, p.next.Recipient
	var v []byte
	err := tx.QueryRow(ctx, "SELECT record FROM copies WHERE message_id = $1 AND recipient = $2 FOR UPDATE", id, rcpt).Scan(&v)
	if errNoRows(err) {
		return fmt.Errorf("%w: no copy of %s for %s", broker.ErrNotFound, id, rcpt)
	}
	if err != nil {
		return fmt.Errorf("lock copy of %s for %s: %w", id, rcpt, err)
	}
	c, err := decodeCopy(v)
	if err != nil {
		return err
	}
	if c.Head != p.prevHead {
		return fmt.Errorf("%w: chain head is %q, not %q", broker.ErrConflict, c.Head, p.prevHead)
	}
	next := p.next
	next.Received, next.Local = c.Received, c.Local
	row, err := copyRow(next)
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, "UPDATE copies SET deadline_ns = $3, state = $4, head = $5, record = $6 WHERE message_id = $1 AND recipient = $2",
		id, rcpt, row.deadline, string(next.State), next.Head, row.record)
	if err != nil {
		return fmt.Errorf("update copy of %s for %s: %w", id, rcpt, err)
	}
	return nil
}

// applySteps applies steps of message id in tx, in order, and then stores
// their evidence and pushes.
func applySteps(ctx context.Context, tx pgx.Tx, id string, steps []pendingStep) ([]broker.Evidence, error) {
	w := &evidenceWrite{id: id, pushes: map[int]string{}}
	for i, p := range steps {
		if err := p.apply(ctx, tx); err != nil {
			return nil, err
		}
		w.pending = append(w.pending, p.ev)
		if p.push != "" {
			w.pushes[i] = p.push
		}
	}
	return w.store(ctx, tx)
}

// AppendEvidence applies one step to a copy (see broker.Step) in one
// transaction that also appends the evidence to the transparency log if
// it is this node's (Log empty), and returns the evidence with its
// LeafIndex. Errors wrap broker.ErrNotFound if there is no such copy and
// broker.ErrConflict if its head is not s.PrevHead (nothing is written
// then).
func (s *Store) AppendEvidence(ctx context.Context, st broker.Step) (broker.Evidence, error) {
	p, err := prepareStep(st)
	if err != nil {
		return broker.Evidence{}, fmt.Errorf("append evidence to %s: %w", st.Evidence.MessageID, err)
	}
	var out []broker.Evidence
	err = s.write(ctx, func(tx pgx.Tx) error {
		var err error
		out, err = applySteps(ctx, tx, st.Evidence.MessageID, []pendingStep{p})
		return err
	})
	if err != nil {
		return broker.Evidence{}, fmt.Errorf("append evidence to %s for %s: %w", st.Evidence.MessageID, st.Evidence.Recipient, err)
	}
	return out[0], nil
}

// AddEvidence stores evidence that belongs to no copy's chain (a
// SubmissionRejection, whose message may not be stored at all), appends it
// to the transparency log in the same transaction, and returns it with its
// LeafIndex.
func (s *Store) AddEvidence(ctx context.Context, ev broker.Evidence) (broker.Evidence, error) {
	if ev.Log != "" {
		return broker.Evidence{}, fmt.Errorf("add evidence to %s: %w: evidence of another log belongs to a copy", ev.MessageID, broker.ErrInvalid)
	}
	p, err := prepareEvidence(ev)
	if err != nil {
		return broker.Evidence{}, fmt.Errorf("add evidence: %w", err)
	}
	var out []broker.Evidence
	err = s.write(ctx, func(tx pgx.Tx) error {
		var err error
		out, err = (&evidenceWrite{id: ev.MessageID, pending: []pendingEvidence{p}}).store(ctx, tx)
		return err
	})
	if err != nil {
		return broker.Evidence{}, fmt.Errorf("add evidence to %s: %w", ev.MessageID, err)
	}
	return out[0], nil
}

// Evidence returns all evidence stored for a message, in the order it was
// stored; none is an empty result, not an error.
func (s *Store) Evidence(ctx context.Context, messageID string) ([]broker.Evidence, error) {
	if checkKeyPart("message id", messageID) != nil {
		return nil, nil
	}
	rows, err := s.pool.Query(ctx, "SELECT leaf_index, record FROM evidence WHERE message_id = $1 ORDER BY pos", messageID)
	if err != nil {
		return nil, fmt.Errorf("load evidence of %s: %w", messageID, err)
	}
	evs, err := pgx.CollectRows(rows, scanEvidence)
	if err != nil {
		return nil, fmt.Errorf("load evidence of %s: %w", messageID, err)
	}
	return evs, nil
}

// scanEvidence decodes a row of leaf_index and record.
func scanEvidence(row pgx.CollectableRow) (broker.Evidence, error) {
	var index int64
	var v []byte
	if err := row.Scan(&index, &v); err != nil {
		return broker.Evidence{}, err
	}
	var ev broker.Evidence
	if err := json.Unmarshal(v, &ev); err != nil {
		return broker.Evidence{}, fmt.Errorf("decode evidence: %w", err)
	}
	ev.LeafIndex = uint64(index)
	return ev, nil
}
