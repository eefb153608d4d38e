package store

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"

	"kurier.dev/kurier/tlog"
)

// The high-water mark: a small file beside badger's, MarkFile, that records
// how far the transparency log reached (its size and the root hash at that
// size). It lives outside badger because it must survive what badger does
// to itself on open: a write-ahead log that fails its checksum is cut at
// the damaged entry, silently, and everything logged after it is gone. A
// node that then went on would hand the lost leaf positions to new
// evidence, and every checkpoint it signed before would show a fork.
//
// So Open compares the log with the mark and refuses with ErrRolledBack if
// the log is shorter or has another root at the mark's size; the node
// never re-issues a log position. MarkLog makes a mark covering a size
// durable before a checkpoint of that size is signed, and a background
// writer keeps the mark close behind every commit without adding an fsync
// to the commit path: after each commit the committer hands it the new
// size and root, and it writes whatever is newest, one write at a time,
// so that many commits share one write.
//
// The file is replaced atomically: written to a temporary file, fsynced,
// renamed over the old one, and the directory fsynced.

// MarkFile is the name of the high-water mark in the store's directory.
// When restoring the directory from a backup, keep this file as it is:
// the backup's older one would hide the rollback. kurierd restore (see
// Restore) takes a directory holding only this file and refuses a backup
// behind it unless the rollback is accepted.
const MarkFile = "KURIER-LOGMARK"

// ErrRolledBack is returned by Open when the transparency log is shorter
// than the high-water mark, or differs from it at the mark's size: the
// store lost committed evidence (a damaged write-ahead log, or a restore
// from an older backup). The node must not run on it, since it would
// re-issue log positions that signed checkpoints already cover.
var ErrRolledBack = errors.New("the transparency log is behind its high-water mark")

// rolledBackHelp is the recovery, said with every ErrRolledBack.
const rolledBackHelp = "restore the data directory from a backup whose log reaches the mark, keeping the current " + MarkFile +
	" (kurierd restore takes an empty data directory holding only it, and checks the backup against it); if there is none, the log is lost: start a new log with a new log key in a new data directory, and keep this store and the checkpoints signed from it as evidence, or restore the newest backup with kurierd restore -accept-rollback, accepting that checkpoints signed after it show a fork"

// mark is the content of MarkFile.
type mark struct {
	Version int    `json:"version"`
	Size    uint64 `json:"size"`
	Root    string `json:"root"` // lowercase hex of the root of the tree of Size leaves
	// Commits is a badger version (commit timestamp) up to which every
	// transaction was durable when the mark was taken: if badger comes
	// back with a lower newest version, it lost committed transactions,
	// whatever they held. 0 in marks of versions before it.
	Commits uint64 `json:"commits,omitempty"`
	// Clean is true when Close wrote the mark after badger closed: the
	// next Open then knows that no write was under way.
	Clean bool `json:"clean"`
}

const markVersion = 1

// readMark reads the mark in dir; ok is false if there is none.
func readMark(dir string) (m mark, ok bool, err error) {
	b, err := os.ReadFile(filepath.Join(dir, MarkFile))
	if errors.Is(err, fs.ErrNotExist) {
		return mark{}, false, nil
	}
	if err != nil {
		return mark{}, false, fmt.Errorf("read the log's high-water mark: %w", err)
	}
	// Unknown keys are refused: a flipped byte in a key's name would
	// otherwise leave its field zero, a mark that defends nothing.
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil || dec.More() || m.Version != markVersion || len(m.Root) != 2*tlog.HashSize {
		return mark{}, false, fmt.Errorf("the log's high-water mark %s is malformed (restore it from the newest backup of the data directory)", filepath.Join(dir, MarkFile))
	}
	return m, true, nil
}

// writeMark replaces the mark in dir atomically and durably.
func writeMark(dir string, m mark) error {
	m.Version = markVersion
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	path := filepath.Join(dir, MarkFile)
	tmp, err := os.CreateTemp(dir, MarkFile+".*.tmp")
	if err != nil {
		return fmt.Errorf("write the log's high-water mark: %w", err)
	}
	_, err = tmp.Write(append(b, '\n'))
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write the log's high-water mark: %w", err)
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("write the log's high-water mark: %w", err)
	}
	return nil
}

// removeMarkTemps removes temporary files of mark writes that a crash cut
// short; the mark itself is whole, the old one or the new one.
func removeMarkTemps(dir string) {
	names, _ := filepath.Glob(filepath.Join(dir, MarkFile+".*.tmp"))
	for _, n := range names {
		os.Remove(n) // a leftover stays harmless if this fails
	}
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// checkMark compares the log as badger has it with the mark. It returns
// an error wrapping ErrRolledBack if the log does not reach the mark or
// has another root at its size.
func checkMark(txn *badger.Txn, m mark, size uint64) error {
	if size < m.Size {
		return fmt.Errorf("%w: the log has %d leaves, but %d were committed and may have been covered by signed checkpoints (%s records them); committed evidence was lost (a damaged write-ahead log, or a restore from an older backup). Recovery: %s",
			ErrRolledBack, size, m.Size, MarkFile, rolledBackHelp)
	}
	root, err := rootAt(txn, m.Size)
	if err != nil {
		return fmt.Errorf("compare the log with its high-water mark: %w", err)
	}
	if hex.EncodeToString(root) != m.Root {
		return fmt.Errorf("%w: the log's first %d leaves have root %x, but %s records %s: the log was replaced or forked. Recovery: %s",
			ErrRolledBack, m.Size, root, MarkFile, m.Root, rolledBackHelp)
	}
	return nil
}

// checkCommits logs at ERROR if badger came back with fewer committed
// transactions than the mark records. Not a refusal by itself: what the
// log lost is refused by checkMark, and the rest (payload chunks being
// uploaded, retry state) a node can do without.
func checkCommits(bdb *badger.DB, m mark, logger *slog.Logger) {
	if got := bdb.MaxVersion(); got < m.Commits {
		logger.Error("badger lost committed transactions on open (a damaged write-ahead log); run kurierd -check-store to see what is lost",
			"component", "badger", "newest_version", got, "version_in_mark", m.Commits)
	}
}

// marker is the background writer of the mark. Its fields are guarded by
// mu; the write itself happens outside it.
type marker struct {
	dir    string
	log    *slog.Logger
	kick   chan struct{} // buffered 1: something newer to write
	urgent chan struct{} // buffered 1: MarkLog waits, write without a pause
	stop   chan struct{} // closed by DB.Close
	done   chan struct{} // closed when the writer has stopped

	mu       sync.Mutex
	want     mark          // the newest committed size and root
	durable  uint64        // the size of the mark on disk
	err      error         // the last write's failure, nil after a success
	written  chan struct{} // closed (and replaced) after every write attempt
	advanced chan struct{} // closed (and replaced) by every advance
}

func newMarker(dir string, m mark, logger *slog.Logger) *marker {
	k := &marker{
		dir: dir, log: logger, kick: make(chan struct{}, 1), urgent: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
		want: m, durable: m.Size, written: make(chan struct{}), advanced: make(chan struct{}),
	}
	go k.loop()
	return k
}

// advance records a newly committed log state (called by the committer)
// and wakes the writer. It never blocks.
func (k *marker) advance(size uint64, root []byte, commits uint64) {
	k.mu.Lock()
	if size > k.want.Size {
		k.want = mark{Size: size, Root: hex.EncodeToString(root), Commits: max(commits, k.want.Commits)}
		close(k.advanced)
		k.advanced = make(chan struct{})
	}
	k.mu.Unlock()
	k.wake()
}

func (k *marker) wake() { signal(k.kick) }

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// markPause is the least time between two writes of the mark in the
// background, so that a node committing one small batch after another
// spends at most a few fsyncs a second on it rather than one per batch.
// MarkLog does not wait for it.
const markPause = 50 * time.Millisecond

func (k *marker) loop() {
	defer close(k.done)
	pause := time.NewTimer(0)
	defer pause.Stop()
	for {
		hurry := false
		select {
		case <-k.stop:
			return
		case <-k.kick:
		case <-k.urgent:
			hurry = true
		}
		if !hurry {
			select { // the pause since the last write, unless someone waits
			case <-k.stop:
				return
			case <-pause.C:
			case <-k.urgent:
			}
		}
		pause.Reset(markPause) // Go 1.23 timers: no stale tick survives Reset
		k.mu.Lock()
		m := k.want
		k.mu.Unlock()
		if m.Size <= k.durableSize() {
			continue
		}
		err := writeMark(k.dir, m)
		k.mu.Lock()
		if err == nil {
			k.durable = m.Size
		}
		k.report(err)
		k.err = err
		close(k.written)
		k.written = make(chan struct{})
		k.mu.Unlock()
	}
}

// markRetry is how soon a failed write of the mark is tried again, with
// or without new commits.
const markRetry = time.Second

// report logs a write of the mark that failed after one that did not, and
// the first that succeeds again (called with mu held), and schedules a
// retry of a failed one: checkpoints wait for the mark, so a mark that
// cannot be written stops them, and an operator must hear of it.
func (k *marker) report(err error) {
	switch {
	case err != nil && k.err == nil:
		k.log.Error("cannot write the log's high-water mark; checkpoints wait until it can be written", "file", filepath.Join(k.dir, MarkFile), "err", err)
	case err == nil && k.err != nil:
		k.log.Info("the log's high-water mark is written again", "file", filepath.Join(k.dir, MarkFile))
	}
	if err != nil {
		time.AfterFunc(markRetry, k.wake)
	}
}

func (k *marker) durableSize() uint64 {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.durable
}

// advanceWait bounds how long wait waits for the committer to hand over a
// size that a reader has already seen: a commit is visible to readers as
// soon as badger has made it, a moment before the committer advances the
// mark, so a checkpoint's size can be a little ahead of it.
const advanceWait = 10 * time.Second

// wait returns once a mark of at least size is durable, or with the
// writer's error; failed is the store's, which ends the wait for an
// advance that will not come.
func (k *marker) wait(ctx context.Context, size uint64, failed <-chan struct{}) error {
	var giveUp <-chan time.Time
	for {
		k.mu.Lock()
		if k.durable >= size {
			k.mu.Unlock()
			return nil
		}
		if size > k.want.Size {
			advanced, want := k.advanced, k.want.Size
			k.mu.Unlock()
			if giveUp == nil {
				t := time.NewTimer(advanceWait)
				defer t.Stop()
				giveUp = t.C
			}
			select {
			case <-advanced:
				continue
			case <-giveUp:
				return fmt.Errorf("mark the log at %d leaves: the committed log has only %d", size, want)
			case <-failed:
				return ErrFailed
			case <-k.stop:
				return ErrClosed
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		written := k.written
		k.mu.Unlock()
		signal(k.urgent)
		select {
		case <-written:
		case <-k.stop:
			return ErrClosed
		case <-ctx.Done():
			return ctx.Err()
		}
		k.mu.Lock()
		err := k.err
		k.mu.Unlock()
		if err != nil {
			return err
		}
	}
}

// close stops the writer and waits for it.
func (k *marker) close() {
	close(k.stop)
	<-k.done
}

// MarkLog returns once the high-water mark on disk covers at least the
// first size leaves of the log, writing it if it does not yet. The node
// calls it before it signs a checkpoint of that size, so that no
// checkpoint is ever handed out that a later Open would not defend. It
// returns an error if size exceeds the committed log or the mark cannot be
// written.
func (db *DB) MarkLog(ctx context.Context, size uint64) error {
	if err := db.Err(); err != nil {
		// The log as read may hold a batch whose commit failed: no
		// checkpoint may cover it.
		return fmt.Errorf("mark the transparency log durably: %w", err)
	}
	if err := db.mark.wait(ctx, size, db.failed); err != nil {
		return fmt.Errorf("mark the transparency log durably: %w", err)
	}
	return nil
}

// equalRoot reports whether a mark's hex root is root.
func equalRoot(m mark, root []byte) bool {
	b, err := hex.DecodeString(m.Root)
	return err == nil && bytes.Equal(b, root)
}
