package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/google/go-cmp/cmp"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/envelope"
	"kurier.dev/kurier/tlog"
)

// refRoot is MTH(D[n]) of RFC 6962, section 2.1, written from the RFC and
// independent of the library the store uses.
func refRoot(d [][]byte) []byte {
	switch len(d) {
	case 0:
		h := sha256.Sum256(nil)
		return h[:]
	case 1:
		h := sha256.Sum256(append([]byte{0}, d[0]...))
		return h[:]
	}
	k := 1 << (bits.Len(uint(len(d)-1)) - 1) // largest power of two below n
	h := sha256.Sum256(append(append([]byte{1}, refRoot(d[:k])...), refRoot(d[k:])...))
	return h[:]
}

// sampleSizes returns tree sizes up to n worth checking: all small ones,
// powers of two and their neighbours, n and a few random ones.
func sampleSizes(n uint64) []uint64 {
	var s []uint64
	for i := uint64(0); i <= min(n, 20); i++ {
		s = append(s, i)
	}
	for p := uint64(16); p <= n+1; p *= 2 {
		s = append(s, p-1, p)
		if p+1 <= n {
			s = append(s, p+1)
		}
	}
	if n > 0 {
		s = append(s, n-1, n)
		for range 8 {
			s = append(s, rand.Uint64N(n+1))
		}
	}
	slices.Sort(s)
	return slices.Compact(s)
}

// storedEvidence returns every evidence the store holds, read from the
// evidence table itself, message by message in the order stored.
func storedEvidence(t *testing.T, db *DB) []broker.Evidence {
	t.Helper()
	var all []broker.Evidence
	prefix := []byte("e/")
	err := db.view(context.Background(), func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true})
		defer it.Close()
		for it.Seek(prefix); it.Valid(); it.Next() {
			id, _, ok := parseEvidenceKey(it.Item().Key())
			if !ok {
				t.Fatalf("malformed evidence key %q", it.Item().Key())
			}
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			ev, err := decodeEvidence(v)
			if err != nil {
				return err
			}
			if ev.MessageID != id {
				t.Fatalf("evidence of %s stored under the key of %s", ev.MessageID, id)
			}
			all = append(all, ev)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return all
}

// checkLog checks the whole transparency log against the evidence stored:
// one leaf per evidence of the node's own log and none for evidence of
// other logs, leaf indexes without gaps and increasing in the order each
// message's evidence was stored, LogLeaf returning each, roots matching a
// reference computation for many sizes, every evidence's inclusion proof in
// the current tree and in smaller ones, and consistency proofs between many
// pairs of sizes. It returns the leaves (the evidence DER files) in order.
func checkLog(t *testing.T, db *DB) [][]byte {
	t.Helper()
	ctx := context.Background()
	n, err := db.LogSize(ctx)
	if err != nil {
		t.Fatalf("LogSize: %v", err)
	}
	byLeaf := make([]*broker.Evidence, n)
	own := 0
	last := map[string]uint64{} // each message's last leaf index so far
	for _, ev := range storedEvidence(t, db) {
		if ev.Log != "" {
			continue
		}
		own++
		if ev.LeafIndex >= n {
			t.Fatalf("evidence %s of %s has leaf index %d in a log of size %d", ev.Type, ev.MessageID, ev.LeafIndex, n)
		}
		if byLeaf[ev.LeafIndex] != nil {
			t.Fatalf("leaf index %d given to two evidence", ev.LeafIndex)
		}
		if prev, ok := last[ev.MessageID]; ok && ev.LeafIndex <= prev {
			t.Fatalf("evidence of %s stored after leaf %d has leaf index %d", ev.MessageID, prev, ev.LeafIndex)
		}
		last[ev.MessageID] = ev.LeafIndex
		byLeaf[ev.LeafIndex] = &ev
	}
	if uint64(own) != n {
		t.Fatalf("LogSize %d, but %d evidence of the node's own log stored", n, own)
	}
	// n evidence with distinct leaf indexes below n: no gaps.
	ders := make([][]byte, n)
	for i, ev := range byLeaf {
		ders[i] = ev.DER
		leaf, err := db.LogLeaf(ctx, uint64(i))
		if err != nil {
			t.Fatalf("LogLeaf(%d): %v", i, err)
		}
		if diff := cmp.Diff(*ev, leaf); diff != "" {
			t.Fatalf("LogLeaf(%d) (-want +got):\n%s", i, diff)
		}
	}

	sizes := sampleSizes(n)
	roots := map[uint64][]byte{}
	for _, s := range sizes {
		root, err := db.LogRoot(ctx, s)
		if err != nil {
			t.Fatalf("LogRoot(%d): %v", s, err)
		}
		if want := refRoot(ders[:s]); !bytes.Equal(root, want) {
			t.Fatalf("LogRoot(%d) = %x, want %x", s, root, want)
		}
		roots[s] = root
	}
	checkInclusion := func(i, s uint64) {
		t.Helper()
		p, err := db.InclusionProof(ctx, i, s)
		if err != nil {
			t.Fatalf("InclusionProof(%d, %d): %v", i, s, err)
		}
		if err := tlog.VerifyInclusion(ders[i], i, p, tlog.Checkpoint{Size: s, Root: roots[s]}); err != nil {
			t.Fatalf("leaf %d in tree of size %d: %v", i, s, err)
		}
	}
	for i := range n {
		checkInclusion(i, n)
	}
	for _, s := range sizes {
		for _, i := range sampleSizes(s) {
			if i < s {
				checkInclusion(i, s)
			}
		}
	}
	for _, s1 := range sizes {
		for _, s2 := range sizes {
			if s1 > s2 {
				continue
			}
			p, err := db.ConsistencyProof(ctx, s1, s2)
			if err != nil {
				t.Fatalf("ConsistencyProof(%d, %d): %v", s1, s2, err)
			}
			if err := tlog.VerifyConsistency(tlog.Checkpoint{Size: s1, Root: roots[s1]}, tlog.Checkpoint{Size: s2, Root: roots[s2]}, p); err != nil {
				t.Fatalf("tree of size %d to %d: %v", s1, s2, err)
			}
		}
	}
	return ders
}

// dersOf returns the DER files of evidence.
func dersOf(evs ...[]broker.Evidence) [][]byte {
	var d [][]byte
	for _, e := range evs {
		for _, ev := range e {
			d = append(d, ev.DER)
		}
	}
	return d
}

func TestDB_Log(t *testing.T) {
	ctx := context.Background()

	// Roots, proofs and their refusals are storetest's (TestConformance);
	// LogLeaf is the badger store's own.
	t.Run("LogLeaf out of range", func(t *testing.T) {
		db := openTest(t, "")
		newFixture(t, db, t0, court, kreis).create(t, db) // 3 leaves
		for _, index := range []uint64{3, ^uint64(0)} {
			if _, err := db.LogLeaf(ctx, index); !errors.Is(err, broker.ErrNotFound) {
				t.Errorf("LogLeaf(%d): err %v, want ErrNotFound", index, err)
			}
		}
	})

	t.Run("every evidence write appends", func(t *testing.T) {
		db := openTest(t, "")
		f := newFixture(t, db, t0, court, kreis, amt)
		created := f.create(t, db)
		for i, ev := range created {
			if ev.LeafIndex != uint64(i) {
				t.Errorf("CreateMessage: evidence %d has leaf index %d", i, ev.LeafIndex)
			}
		}
		if diff := cmp.Diff(dersOf(created), checkLog(t, db)); diff != "" {
			t.Fatalf("log after CreateMessage (-want +got):\n%s", diff)
		}

		s := nextStep(t, f.copies[0], "Retrieval", broker.StateRetrieved)
		ret := appendStep(t, db, s)
		rej, err := db.AddEvidence(ctx, broker.Evidence{MessageID: "other", Sender: sender, Type: "SubmissionRejection", DER: randomBytes(t, 300)})
		if err != nil {
			t.Fatal(err)
		}
		if ret.LeafIndex != 4 || rej.LeafIndex != 5 {
			t.Errorf("leaf indexes %d and %d, want 4 and 5", ret.LeafIndex, rej.LeafIndex)
		}
		want := dersOf(created, []broker.Evidence{ret, rej})

		// Refused writes append nothing.
		if _, err := db.AppendEvidence(ctx, s); !errors.Is(err, broker.ErrConflict) {
			t.Fatalf("AppendEvidence with a stale head: %v", err)
		}
		if _, err := db.AddEvidence(ctx, broker.Evidence{Log: tlog.Origin(kreisDomain), MessageID: "other", Type: "SubmissionRejection", DER: randomBytes(t, 300)}); !errors.Is(err, broker.ErrInvalid) {
			t.Fatalf("AddEvidence of another log: %v", err)
		}
		if _, err := db.CreateMessage(ctx, f.msg, f.copies, f.evs, nil); !errors.Is(err, broker.ErrExists) {
			t.Fatalf("CreateMessage again: %v", err)
		}
		if diff := cmp.Diff(want, checkLog(t, db)); diff != "" {
			t.Fatalf("log (-want +got):\n%s", diff)
		}
		evs, err := db.Evidence(ctx, f.msg.ID())
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(append(created, ret), evs); diff != "" {
			t.Errorf("Evidence with leaf indexes (-want +got):\n%s", diff)
		}
	})

	t.Run("reopen", func(t *testing.T) {
		dir := t.TempDir()
		db := openTest(t, dir)
		var first []broker.Evidence
		for i := range 5 {
			first = append(first, newFixture(t, db, t0.Add(time.Duration(i)), court, kreis).create(t, db)...)
		}
		size, err := db.LogSize(ctx)
		if err != nil {
			t.Fatal(err)
		}
		root, err := db.LogRoot(ctx, size)
		if err != nil {
			t.Fatal(err)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}

		db = openTest(t, dir)
		if n, err := db.LogSize(ctx); err != nil || n != size {
			t.Fatalf("LogSize after reopen = %d, %v; want %d", n, err, size)
		}
		if r, err := db.LogRoot(ctx, size); err != nil || !bytes.Equal(r, root) {
			t.Fatalf("LogRoot after reopen = %x, %v; want %x", r, err, root)
		}
		var second []broker.Evidence
		for i := range 4 {
			second = append(second, newFixture(t, db, t0.Add(time.Hour+time.Duration(i)), court).create(t, db)...)
		}
		if second[0].LeafIndex != size {
			t.Errorf("first leaf index after reopen %d, want %d", second[0].LeafIndex, size)
		}
		n, err := db.LogSize(ctx)
		if err != nil {
			t.Fatal(err)
		}
		newRoot, err := db.LogRoot(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		p, err := db.ConsistencyProof(ctx, size, n)
		if err != nil {
			t.Fatal(err)
		}
		if err := tlog.VerifyConsistency(tlog.Checkpoint{Size: size, Root: root}, tlog.Checkpoint{Size: n, Root: newRoot}, p); err != nil {
			t.Errorf("the log after reopen does not extend the one before: %v", err)
		}
		if diff := cmp.Diff(dersOf(first, second), checkLog(t, db)); diff != "" {
			t.Errorf("log (-want +got):\n%s", diff)
		}
	})

	t.Run("request failing in a batch", func(t *testing.T) {
		// The duplicate fails its checks; the oversized message fails
		// after it has appended leaves (the transaction overflows). Neither
		// may leave a trace: the log is as if they had never run.
		db := openTest(t, "")
		a, b := newFixture(t, db, t0, court), newFixture(t, db, t0, court)
		dup := buildFixture(t, broker.Blob{ID: b.msg.Blob, Size: b.msg.Header.PayloadSize}, t0, kreis)
		dup.msg.Header.ID = a.msg.ID()
		dup.msg.Header.PayloadSHA256 = b.msg.Header.PayloadSHA256
		dup.copies[0].MessageID, dup.evs[0].MessageID, dup.evs[1].MessageID = a.msg.ID(), a.msg.ID(), a.msg.ID()
		big := newFixture(t, db, t0, court)
		for range 24 {
			big.evs = append(big.evs, broker.Evidence{MessageID: big.msg.ID(), Type: "Delivery", DER: randomBytes(t, 45<<10)})
		}
		c := newFixture(t, db, t0, kreis)

		release := holdCommitter(t, db)
		fs := []fixture{a, dup, big, b, c}
		errs := make([]error, len(fs))
		evs := make([][]broker.Evidence, len(fs))
		var wg sync.WaitGroup
		for i, f := range fs {
			wg.Go(func() { evs[i], errs[i] = db.CreateMessage(ctx, f.msg, f.copies, f.evs, nil) })
			waitQueued(t, db, i+1)
		}
		release()
		wg.Wait()
		if errs[0] != nil || !errors.Is(errs[1], broker.ErrDuplicate) || !errors.Is(errs[2], broker.ErrTooLarge) || errs[3] != nil || errs[4] != nil {
			t.Fatalf("errors %v, want nil, ErrDuplicate, ErrTooLarge, nil, nil", errs)
		}
		want := dersOf(evs[0], evs[3], evs[4])
		if diff := cmp.Diff(want, checkLog(t, db)); diff != "" {
			t.Fatalf("log (-want +got):\n%s", diff)
		}
		// The root is that of a store that only ever got a, b and c.
		if root, err := db.LogRoot(ctx, uint64(len(want))); err != nil || !bytes.Equal(root, refRoot(want)) {
			t.Errorf("LogRoot = %x, %v; want %x", root, err, refRoot(want))
		}
	})

	t.Run("failed commit", func(t *testing.T) {
		// A request that makes the batch's commit fail for real: it reads
		// a key, then commits a write to that key outside the batch, a
		// conflict badger detects when the batch commits. The evidence of
		// that batch is not stored, and its leaf indexes (and the
		// positions of its message's evidence) are used by the next
		// evidence.
		db := openTest(t, "")
		before := newFixture(t, db, t0, court).create(t, db)
		after := sabotagedBatch(t, db, nil)
		if want := dersOf(before, after); !cmp.Equal(want, checkLog(t, db)) {
			t.Errorf("log after a failed commit is not the evidence stored before and after it")
		}
		if after[0].LeafIndex != 2 {
			t.Errorf("evidence after the failed commit has leaf index %d, want 2", after[0].LeafIndex)
		}
		lost, err := db.AddEvidence(ctx, broker.Evidence{MessageID: "lost", Type: "SubmissionRejection", DER: randomBytes(t, 100)})
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]broker.Evidence{lost}, evidenceOf(t, db, "lost")); diff != "" {
			t.Errorf("Evidence of the failed batch's message after a new one (-want +got):\n%s", diff)
		}
		if lost.LeafIndex != 3 {
			t.Errorf("leaf index %d, want 3", lost.LeafIndex)
		}
	})

	t.Run("unusable after a failed commit", func(t *testing.T) {
		// As above, but the log's state on disk is also damaged, so that
		// it cannot be read back: evidence is refused until the store is
		// reopened, other writes go on, and Open refuses the damaged log.
		dir := t.TempDir()
		db := openTest(t, dir)
		newFixture(t, db, t0, court).create(t, db) // 2 leaves: the range is the node (1, 0)
		sabotagedBatch(t, db, treeNodeKey(1, 0))
		if _, err := db.AddEvidence(ctx, broker.Evidence{MessageID: "x", Type: "SubmissionRejection"}); err == nil || !strings.Contains(err.Error(), "reopen") {
			t.Errorf("AddEvidence with an unusable log: err %v, want one that says to reopen", err)
		}
		f := newFixture(t, db, t0, kreis) // writes without evidence still work (WriteBlob uses the committer)
		if _, err := db.CreateMessage(ctx, f.msg, f.copies, f.evs, nil); err == nil {
			t.Error("CreateMessage with an unusable log succeeded")
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		if db, err := Open(dir, Options{Small: true, Logger: db.log}); err == nil {
			db.Close()
			t.Fatal("Open succeeded with a tree node missing")
		} else if !strings.Contains(err.Error(), "missing") {
			t.Errorf("Open: %v", err)
		}
	})

	t.Run("stores of earlier versions", func(t *testing.T) {
		// Earlier versions kept a node-wide evidence counter (s/evseq,
		// never 0 once written) and used it as the position in each
		// evidence key. The last of them had the log: its store opens and
		// goes on, one message's new evidence after its old. Those before
		// had no log: a store that holds evidence but no log is not
		// silently given an empty one. Both are simulated by rewriting a
		// store of this version.
		tests := []struct {
			name    string
			withLog bool
			wantErr string // "" for Open to succeed
		}{
			{"with the log", true, ""},
			{"before the log", false, "no transparency log"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				dir := t.TempDir()
				db := openTest(t, dir)
				f := newFixture(t, db, t0, court, kreis)
				f.create(t, db)
				newFixture(t, db, t0, court).create(t, db)
				want := evidenceOf(t, db, f.msg.ID())
				toLegacy(t, db, tt.withLog)
				if err := db.Close(); err != nil {
					t.Fatal(err)
				}
				// Earlier versions wrote no high-water mark.
				if err := os.Remove(filepath.Join(dir, MarkFile)); err != nil {
					t.Fatal(err)
				}
				db, err := Open(dir, Options{Small: true, Logger: db.log})
				if tt.wantErr != "" {
					if err == nil {
						db.Close()
						t.Fatal("Open succeeded")
					}
					if !strings.Contains(err.Error(), tt.wantErr) {
						t.Errorf("Open: err %v, want one with %q", err, tt.wantErr)
					}
					return
				}
				if err != nil {
					t.Fatalf("Open: %v", err)
				}
				t.Cleanup(func() { db.Close() })
				if diff := cmp.Diff(want, evidenceOf(t, db, f.msg.ID())); diff != "" {
					t.Errorf("Evidence after the upgrade (-want +got):\n%s", diff)
				}
				if err := db.bdb.View(func(txn *badger.Txn) error {
					v, ok, err := get(txn, formatKey)
					if err != nil || !ok || string(v) != string(encodeSeq(currentFormat)) {
						return fmt.Errorf("s/format %x (%v), want %d", v, err, currentFormat)
					}
					if _, ok, _ := get(txn, legacySeqKey); ok {
						return errors.New("s/evseq is still there")
					}
					return nil
				}); err != nil {
					t.Fatalf("after the upgrade: %v", err)
				}
				ret := appendStep(t, db, nextStep(t, f.copies[0], "Retrieval", broker.StateRetrieved))
				if ret.LeafIndex != 5 {
					t.Errorf("leaf index %d, want 5", ret.LeafIndex)
				}
				if diff := cmp.Diff(append(want, ret), evidenceOf(t, db, f.msg.ID())); diff != "" {
					t.Errorf("Evidence after the next step (-want +got):\n%s", diff)
				}
				checkLog(t, db)
			})
		}
	})
}

// toLegacy rewrites the store's evidence keys into the layout of the
// versions with a node-wide counter: the position of each evidence is its
// counter value (one more than its leaf index, all evidence being the
// node's own), each has an entry l/<seq> with its message id, and s/evseq
// holds the last counter value; there are no n/ counters and no s/format.
// Without withLog it also deletes the log.
func toLegacy(t *testing.T, db *DB, withLog bool) {
	t.Helper()
	err := db.bdb.Update(func(txn *badger.Txn) error {
		del := func(prefix []byte) error {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
			var keys [][]byte
			for it.Seek(prefix); it.Valid(); it.Next() {
				keys = append(keys, it.Item().KeyCopy(nil))
			}
			it.Close()
			for _, k := range keys {
				if err := txn.Delete(k); err != nil {
					return err
				}
			}
			return nil
		}
		var evs []broker.Evidence
		var vals [][]byte
		prefix := []byte("e/")
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		for it.Seek(prefix); it.Valid(); it.Next() {
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				it.Close()
				return err
			}
			ev, err := decodeEvidence(v)
			if err != nil {
				it.Close()
				return err
			}
			evs, vals = append(evs, ev), append(vals, v)
		}
		it.Close()
		for _, p := range [][]byte{prefix, []byte("n/"), formatKey} {
			if err := del(p); err != nil {
				return err
			}
		}
		var last uint64
		for i, ev := range evs {
			seq := ev.LeafIndex + 1
			k := evidenceKey(ev.MessageID, seq)
			for _, kv := range [][2][]byte{
				{k, vals[i]},
				{append([]byte("l/"), encodeSeq(seq)...), []byte(ev.MessageID)},
				{leafKey(ev.LeafIndex), k},
			} {
				if err := txn.Set(kv[0], kv[1]); err != nil {
					return err
				}
			}
			last = max(last, seq)
		}
		if err := txn.Set(legacySeqKey, encodeSeq(last)); err != nil {
			return err
		}
		if withLog {
			return nil
		}
		for _, prefix := range [][]byte{[]byte("i/"), []byte("t/"), logSizeKey} {
			if err := del(prefix); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// sabotagedBatch runs three AddEvidence in one batch whose commit fails
// with a badger transaction conflict, then one more that succeeds, and
// returns that one. If del is not nil, the key is deleted along with the
// conflicting write.
func sabotagedBatch(t *testing.T, db *DB, del []byte) []broker.Evidence {
	t.Helper()
	ctx := context.Background()
	conflict := []byte("z/test-conflict")
	release := holdCommitter(t, db)
	errs := make(chan error, 4)
	go func() {
		errs <- db.submit(ctx, 0, func(b *batch) error {
			if _, _, err := b.get(conflict); err != nil {
				return err
			}
			return db.bdb.Update(func(txn *badger.Txn) error {
				if del != nil {
					if err := txn.Delete(del); err != nil {
						return err
					}
				}
				return txn.Set(conflict, []byte("x"))
			})
		})
	}()
	waitQueued(t, db, 1)
	for i := range 3 {
		go func() {
			_, err := db.AddEvidence(ctx, broker.Evidence{MessageID: "lost", Type: "SubmissionRejection", DER: randomBytes(t, 100)})
			errs <- err
		}()
		waitQueued(t, db, i+2)
	}
	release()
	for range 4 {
		if err := <-errs; !errors.Is(err, badger.ErrConflict) {
			t.Fatalf("request of the sabotaged batch: err %v, want badger.ErrConflict", err)
		}
	}
	if evs, err := db.Evidence(ctx, "lost"); err != nil || len(evs) != 0 {
		t.Fatalf("Evidence of the failed batch = %v, %v; want none", evs, err)
	}
	if del != nil {
		return nil
	}
	id, err := envelope.NewID()
	if err != nil {
		t.Fatal(err)
	}
	ev, err := db.AddEvidence(ctx, broker.Evidence{MessageID: id, Type: "SubmissionRejection", DER: randomBytes(t, 100)})
	if err != nil {
		t.Fatalf("AddEvidence after the failed commit: %v", err)
	}
	return []broker.Evidence{ev}
}

// TestOpen_NewerFormat refuses a store written by a newer layout.
func TestOpen_NewerFormat(t *testing.T) {
	dir := t.TempDir()
	db := openTest(t, dir)
	if err := db.bdb.Update(func(txn *badger.Txn) error { return txn.Set(formatKey, encodeSeq(currentFormat+1)) }); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if db, err := Open(dir, Options{Small: true}); err == nil || !strings.Contains(err.Error(), "newer Kurier") {
		if err == nil {
			db.Close()
		}
		t.Fatalf("Open of a newer format: %v, want it refused", err)
	}
}
