package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/table"
	"github.com/transparency-dev/merkle/compact"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/broker/store/logtree"
	"kurier.dev/kurier/tlog"
)

// Problem is one piece of damage that Check found.
type Problem struct {
	// Kind is what is damaged: "table", "log file", "message", "payload",
	// "copy", "evidence", "log" or "mark".
	Kind string
	// Where names it: a file, a message id, a leaf index.
	Where  string
	Detail string
}

// String is the problem as kurierd -check-store prints it.
func (p Problem) String() string { return fmt.Sprintf("%s %s: %s", p.Kind, p.Where, p.Detail) }

// CheckResult counts what Check read and what it found damaged.
type CheckResult struct {
	Messages, Payloads, Copies, Evidence, Leaves uint64
	Problems                                     int
}

// CheckOptions configure Check.
type CheckOptions struct {
	// Store are the options the store is opened with (memory sizes,
	// logger). Check writes nothing of its own, but opening the store
	// lets badger replay and cut its logs, as Open does.
	Store Options
	// Message, if set, is called with each readable message, its copies
	// and its evidence in the order stored, for the checks the store
	// cannot make itself (signatures, chains); each string it returns is
	// reported as a problem of that message.
	Message func(ctx context.Context, m *broker.Message, copies []broker.Copy, evs []broker.Evidence) []string
	// Report receives each problem as it is found. Required.
	Report func(Problem)
}

// Check reads the whole store in dir, which must not be open elsewhere,
// and reports every damage it finds: tables whose block checksums fail,
// log files badger cuts when it opens them, messages, copies and evidence
// that cannot be read, payloads whose bytes cannot be read or do not hash
// to their envelope's digest, messages missing from their sender's sent
// index (format 4 on), evidence missing from the log, and a log
// whose stored tree does not match its leaves or does not reach its
// high-water mark. It streams: memory does not grow with the store, only
// with the largest message's evidence.
//
// Like Open, badger replays and cuts its log files; unlike Open, Check
// neither refuses nor writes the high-water mark, deletes nothing and
// upgrades nothing. Its error is for a check that could not run at all.
func Check(ctx context.Context, dir string, opts CheckOptions) (CheckResult, error) {
	var res CheckResult
	report := func(p Problem) { res.Problems++; opts.Report(p) }
	o := opts.Store.withDefaults()
	bo := badgerOptions(dir, o)
	if _, err := os.Stat(filepath.Join(dir, badger.ManifestFilename)); err != nil {
		return res, fmt.Errorf("check store %s: no store there (%w)", dir, err)
	}

	tables, err := manifestTables(dir, bo)
	if err != nil {
		report(Problem{"manifest", filepath.Join(dir, badger.ManifestFilename), err.Error()})
	}
	for _, id := range tables {
		name := table.NewFilename(id, dir)
		if err := verifyTable(name, bo); err != nil {
			report(Problem{"table", name, err.Error()})
		}
	}
	m, haveMark, err := readMark(dir)
	if err != nil {
		report(Problem{"mark", filepath.Join(dir, MarkFile), err.Error()})
	}
	if err := removeEmptyLogs(dir, o.Logger); err != nil {
		return res, fmt.Errorf("check store %s: %w", dir, err)
	}
	tails, err := scanTails(dir)
	if err != nil {
		return res, fmt.Errorf("check store %s: %w", dir, err)
	}
	bdb, err := badger.Open(bo)
	if err != nil {
		return res, fmt.Errorf("check store %s: open (is the node still running?): %w", dir, err)
	}
	defer bdb.Close()
	clean := haveMark && m.Clean
	for _, c := range cuts(tails, clean) {
		if !clean {
			// After a crash a cut is most likely the torn tail of a write
			// nobody was answered for; the mark and the commits below say
			// whether anything committed was lost.
			o.Logger.Warn("badger cut a log file after an unclean shutdown (a torn write, or damage)", "file", c.path, "cut", c.String())
			continue
		}
		report(Problem{"log file", c.path, c.String()})
	}
	if got := bdb.MaxVersion(); haveMark && got < m.Commits {
		report(Problem{"log file", "write-ahead log", fmt.Sprintf("badger came back with transactions up to version %d, the mark records %d: committed transactions were lost", got, m.Commits)})
	}
	db := &DB{dir: dir, bdb: bdb, log: o.Logger, now: o.Now}
	if err := db.checkMessages(ctx, opts, &res, report); err != nil {
		return res, fmt.Errorf("check store %s: %w", dir, err)
	}
	var mp *mark
	if haveMark {
		mp = &m
	}
	if err := bdb.View(func(txn *badger.Txn) error {
		return checkTree(ctx, txn, mp, &res, report)
	}); err != nil {
		return res, fmt.Errorf("check store %s: %w", dir, err)
	}
	return res, nil
}

// checkMessages walks every message with its copies, evidence and
// payload.
func (db *DB) checkMessages(ctx context.Context, opts CheckOptions, res *CheckResult, report func(Problem)) error {
	prefix := []byte("m/")
	return db.bdb.View(func(txn *badger.Txn) error {
		// A store of an older format has no sent index until Open builds it.
		indexed := false
		if v, ok, err := get(txn, formatKey); err == nil && ok {
			f, err := decodeSeq(v)
			indexed = err == nil && f >= 4
		}
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		for it.Seek(prefix); it.Valid(); it.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			id := string(it.Item().Key()[len(prefix):])
			res.Messages++
			m, err := loadMessage(txn, id)
			if err != nil {
				report(Problem{"message", id, fmt.Sprintf("cannot be read: %v", err)})
				continue
			}
			if indexed && m.Header != nil {
				switch ok, err := has(txn, sentKey(m.Header.From, m.Received, id)); {
				case err != nil:
					report(Problem{"message", id, fmt.Sprintf("its sent index entry cannot be read: %v", err)})
				case !ok:
					report(Problem{"message", id, "missing from the sent index of " + m.Header.From + ", so its sender's outbox does not list it"})
				}
			}
			copies, evs := checkRecords(txn, id, res, report)
			res.Payloads++
			if detail := db.checkPayload(ctx, m); detail != "" {
				report(Problem{"payload", id, detail})
			}
			if opts.Message != nil {
				for _, d := range opts.Message(ctx, m, copies, evs) {
					report(Problem{"message", id, d})
				}
			}
		}
		if indexed {
			checkSentIndex(txn, report)
		}
		return nil
	})
}

// checkSentIndex reports sent index entries that name no stored message,
// or a message under another sender or time than the message says: the
// outbox leaves the first out and would list the second wrongly.
func checkSentIndex(txn *badger.Txn, report func(Problem)) {
	scan(txn, []byte("y/"), func(k, _ []byte, err error) {
		sender, rest, ok := readStr(k[len("y/"):])
		id, idOK := parseInboxSuffix(rest)
		switch {
		case err != nil:
			report(Problem{"sent index", string(k), fmt.Sprintf("cannot be read: %v", err)})
			return
		case !ok || !idOK:
			report(Problem{"sent index", fmt.Sprintf("%q", k), "malformed key"})
			return
		}
		m, err := loadMessage(txn, id)
		switch {
		case errors.Is(err, broker.ErrNotFound):
			report(Problem{"sent index", id, "the outbox of " + sender + " names a message that is not stored"})
		case err != nil:
			// The message's own check reports it.
		case m.Header == nil || !bytes.Equal(k, sentKey(m.Header.From, m.Received, id)):
			report(Problem{"sent index", id, "the outbox of " + sender + " lists the message under another sender or time than the message has"})
		}
	})
}

// checkRecords reads a message's copies and evidence and checks that each
// evidence of the node's own log is at its leaf.
func checkRecords(txn *badger.Txn, id string, res *CheckResult, report func(Problem)) ([]broker.Copy, []broker.Evidence) {
	var copies []broker.Copy
	var evs []broker.Evidence
	scan(txn, appendStr(key("c/", 2+len(id)), id), func(k, v []byte, err error) {
		res.Copies++
		c, derr := decodeCopy(v)
		if err == nil {
			err = derr
		}
		if err != nil {
			report(Problem{"copy", id, fmt.Sprintf("a copy cannot be read: %v", err)})
			return
		}
		copies = append(copies, *c)
	})
	scan(txn, evidencePrefix(id), func(k, v []byte, err error) {
		res.Evidence++
		ev, derr := decodeEvidence(v)
		if err == nil {
			err = derr
		}
		if err != nil {
			report(Problem{"evidence", id, fmt.Sprintf("an evidence cannot be read: %v", err)})
			return
		}
		evs = append(evs, ev)
		if ev.Log != "" {
			return
		}
		at, ok, err := get(txn, leafKey(ev.LeafIndex))
		if err != nil || !ok || !bytes.Equal(at, k) {
			report(Problem{"evidence", id, fmt.Sprintf("%s evidence is not at its leaf %d of the log", ev.Type, ev.LeafIndex)})
		}
	})
	return copies, evs
}

// scan calls fn with every key under prefix and its value (or the error
// reading it).
func scan(txn *badger.Txn, prefix []byte, fn func(k, v []byte, err error)) {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
	defer it.Close()
	for it.Seek(prefix); it.Valid(); it.Next() {
		k := it.Item().KeyCopy(nil)
		v, err := it.Item().ValueCopy(nil)
		fn(k, v, err)
	}
}

// checkPayload reads a message's payload whole and compares it with the
// envelope; it returns what is wrong, or "".
func (db *DB) checkPayload(ctx context.Context, m *broker.Message) string {
	if m.Header == nil {
		return "the message has no decoded envelope"
	}
	r, err := db.OpenBlob(ctx, m.Blob)
	if err != nil {
		return fmt.Sprintf("cannot be opened: %v", err)
	}
	defer r.Close()
	h := sha256.New()
	n, err := io.Copy(h, r)
	switch {
	case err != nil:
		return fmt.Sprintf("cannot be read whole: %v", err)
	case n != m.Header.PayloadSize:
		return fmt.Sprintf("holds %d bytes, the envelope says %d", n, m.Header.PayloadSize)
	case hex.EncodeToString(h.Sum(nil)) != m.Header.PayloadSHA256:
		return "SHA-256 does not match the envelope's"
	}
	return ""
}

// checkTree recomputes the log from its leaves: each leaf entry must name a
// stored evidence whose DER hashes to the stored leaf hash, every stored
// tree node must be the hash of its children, and the root at the mark's
// size must be the mark's. Memory is that of one compact range.
func checkTree(ctx context.Context, txn *badger.Txn, m *mark, res *CheckResult, report func(Problem)) error {
	size, err := logSize(txn)
	if err != nil {
		report(Problem{"log", "size", err.Error()})
		return nil
	}
	if m != nil && size < m.Size {
		report(Problem{"mark", MarkFile, fmt.Sprintf("the log has %d leaves, the high-water mark %d: committed evidence was lost (%s)", size, m.Size, rolledBackHelp)})
	}
	cr := logtree.Empty()
	for i := uint64(0); i < size; i++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		res.Leaves++
		where := fmt.Sprintf("leaf %d", i)
		leaf, err := leafHash(txn, i)
		if err != nil {
			report(Problem{"log", where, err.Error()})
			// Go on with the stored hash, to check the tree above it.
			if leaf, _, err = get(txn, treeNodeKey(0, i)); err != nil || len(leaf) != tlog.HashSize {
				leaf = make([]byte, tlog.HashSize)
			}
		}
		var bad []string
		if err := cr.Append(leaf, func(id compact.NodeID, h []byte) {
			stored, ok, err := get(txn, treeNodeKey(id.Level, id.Index))
			if err != nil || !ok || !bytes.Equal(stored, h) {
				bad = append(bad, fmt.Sprintf("tree node %d at level %d is missing or wrong", id.Index, id.Level))
			}
		}); err != nil {
			return err
		}
		for _, b := range bad {
			report(Problem{"log", where, b})
		}
		if m != nil && i+1 == m.Size {
			if root, err := cr.GetRootHash(nil); err != nil || !equalRoot(*m, root) {
				report(Problem{"mark", MarkFile, fmt.Sprintf("the log's root at the mark's size %d is not the mark's: the log was replaced or forked (%s)", m.Size, rolledBackHelp)})
			}
		}
	}
	return nil
}

// leafHash reads leaf i's evidence and checks its hash against the stored
// leaf hash; it returns the hash of the DER.
func leafHash(txn *badger.Txn, i uint64) ([]byte, error) {
	ek, ok, err := get(txn, leafKey(i))
	if err != nil || !ok {
		return nil, fmt.Errorf("leaf entry missing or unreadable (%v)", err)
	}
	v, ok, err := get(txn, ek)
	if err != nil || !ok {
		return nil, fmt.Errorf("its evidence %q is missing or unreadable (%v)", ek, err)
	}
	ev, err := decodeEvidence(v)
	if err != nil {
		return nil, err
	}
	if ev.LeafIndex != i || ev.Log != "" {
		return nil, errors.New("its evidence names another leaf")
	}
	h := tlog.LeafHash(ev.DER)
	stored, ok, err := get(txn, treeNodeKey(0, i))
	if err != nil || !ok || !bytes.Equal(stored, h) {
		return h, fmt.Errorf("stored leaf hash is missing or does not match its evidence")
	}
	return h, nil
}
