package store

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/pb"
	"google.golang.org/protobuf/proto"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/tlog"
)

// ErrBadBackup is returned by Restore and VerifyBackup for a stream that
// is not a whole, intact backup: cut short, damaged, of another format, or
// holding anything Backup does not write.
var ErrBadBackup = errors.New("not a whole, intact Kurier backup")

// ErrNotEmpty is returned by Restore for a data directory that holds
// anything but a high-water mark and a record of rollbacks.
var ErrNotEmpty = errors.New("the data directory is not empty")

// RollbackFile is the name, in the store's directory, of the record of
// rollbacks accepted on restore: one JSON line each, appended and never
// rewritten, so that the next operator and an auditor can see that the
// log was forked, when, and from which size to which.
const RollbackFile = "KURIER-ROLLBACKS"

// RestoreOptions configure Restore.
type RestoreOptions struct {
	// Store are the options the restored store is opened and checked with.
	Store Options
	// AcceptRollback restores a backup whose log is behind the high-water
	// mark found in the directory, or forks from it: the operator accepts
	// that the node's log forks from checkpoints signed after the backup.
	// The mark is then set to the restored log, and the rollback is
	// recorded in RollbackFile.
	AcceptRollback bool
	// Message is passed to the check of the restored store (see
	// CheckOptions.Message).
	Message func(ctx context.Context, m *broker.Message, copies []broker.Copy, evs []broker.Evidence) []string
	// Report receives each problem the check finds; nil ignores them (the
	// error counts them all the same).
	Report func(Problem)
	// Now is the clock of the rollback record, and of the age of working
	// directories crashed restores left behind. Default time.Now.
	Now func() time.Time
}

// RestoreResult says what Restore restored and how it stands to the mark
// it found.
type RestoreResult struct {
	Backup BackupInfo
	// HadMark is true if the directory held a high-water mark (the mark of
	// the node being replaced, kept there as the recovery says); MarkSize
	// and MarkRoot are its.
	HadMark  bool
	MarkSize uint64
	MarkRoot []byte
	// RolledBack is true if the restored log is behind the mark or forks
	// from it, which AcceptRollback accepted.
	RolledBack bool
	// Check is what the check of the restored store read.
	Check CheckResult
}

// rollbackRecord is one line of RollbackFile.
type rollbackRecord struct {
	Time          time.Time `json:"time"`
	MarkSize      uint64    `json:"mark_size"`
	MarkRoot      string    `json:"mark_root"`
	RestoredSize  uint64    `json:"restored_size"`
	RestoredRoot  string    `json:"restored_root"`
	BackupCreated time.Time `json:"backup_created"`
}

// Restore restores a backup written by Backup into dir, which must be
// empty, or hold nothing but the high-water mark (MarkFile) and
// RollbackFile of the node being replaced; it is created if missing. It
// loads the keys into a new badger, writes the payload files (each checked
// against its header and synced, with the folder), and a high-water mark at
// the restored log; then it opens the store as the node will, and checks
// it whole (as Check does).
//
// All of that happens in a private working directory beside dir (named
// ".<base>.restoring-*", mode 0700), into which the kept mark and
// RollbackFile are first copied: dir itself is not written until the
// restored store has passed its check. Only then, with dir's lock held (the
// one badger takes, so that a node cannot start in it meanwhile), Restore
// refuses dir if a node has it open or it no longer holds exactly what was
// kept, and else puts the working directory in its place: on Linux in one
// step, exchanging the two (renameat2 RENAME_EXCHANGE), syncing the parent,
// and removing the old directory. Where the exchange is unavailable (other
// systems, or a file system without it) it removes the kept files from dir
// and renames the working directory over the empty dir; a crash between the
// two leaves dir empty, without its mark (put the mark back from the old
// disk, as the recovery says, before starting the node).
//
// So a failure, or a crash, at any point before the swap leaves dir as it
// was. A failure removes the working directory; a crash leaves it behind,
// a sibling the node never opens (it opens dir only), which a later Restore
// beside it removes once it is a day old and not in use (a crash after
// the exchange leaves the old directory there, holding the kept files
// alone, removed alike). The working
// directory needs room and write access in dir's parent, on dir's file
// system: a dir that is a mount point is refused before anything is
// written.
//
// A mark found in dir is the node's own word on how far its log reached:
// a backup whose log is behind it, or forks from it, is refused with an
// error wrapping ErrRolledBack, unless opts.AcceptRollback (checkpoints
// signed after the backup then show a fork to whoever holds them). Other
// errors: ErrNotEmpty (also for a dir that a node opened while the restore
// ran), ErrBadBackup, broker.ErrDamaged for a restored store that fails
// the check.
func Restore(ctx context.Context, dir string, r io.Reader, opts RestoreOptions) (RestoreResult, error) {
	var res RestoreResult
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Report == nil {
		opts.Report = func(Problem) {}
	}
	dir = filepath.Clean(dir) // its parent and base name the working directory's
	kept, err := prepareRestoreDir(dir)
	if err != nil {
		return res, fmt.Errorf("restore into %s: %w", dir, err)
	}
	if err := checkSameFS(dir); err != nil {
		return res, fmt.Errorf("restore into %s: %w", dir, err)
	}
	removeStaleWork(dir, opts.Now())
	work, err := newRestoreWork(dir, kept)
	if err != nil {
		return res, fmt.Errorf("restore into %s: %w", dir, err)
	}
	rs := &restorer{dir: work, opts: opts, res: &res}
	err = rs.start(ctx, r)
	if err == nil {
		err = swapIn(work, dir, kept, opts.Store.withDefaults().Logger)
	}
	if err != nil {
		if rs.bdb != nil {
			rs.bdb.Close()
		}
		if cerr := os.RemoveAll(work); cerr != nil {
			err = errors.Join(err, fmt.Errorf("remove the working directory %s: %w", work, cerr))
		}
		return res, fmt.Errorf("restore into %s: %w", dir, err)
	}
	return res, nil
}

// start reads the mark kept in the working directory and restores there.
func (rs *restorer) start(ctx context.Context, r io.Reader) error {
	var err error
	if rs.prev, rs.res.HadMark, err = readMark(rs.dir); err != nil {
		return err
	}
	if rs.res.HadMark {
		rs.res.MarkSize = rs.prev.Size
		rs.res.MarkRoot, _ = hex.DecodeString(rs.prev.Root)
	}
	return rs.run(ctx, r)
}

// maxKeptFile bounds the mark and the record of rollbacks Restore keeps:
// both are a few lines, and Restore holds them in memory to compare and,
// if need be, to put back.
const maxKeptFile = 1 << 20

// prepareRestoreDir makes dir if it is missing and refuses it if it holds
// anything but a mark and a record of rollbacks; it returns those it holds,
// by name, with their content.
func prepareRestoreDir(dir string) (map[string][]byte, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	kept := map[string][]byte{}
	var others []string
	for _, e := range entries {
		if (e.Name() == MarkFile || e.Name() == RollbackFile) && e.Type().IsRegular() {
			b, err := readKept(filepath.Join(dir, e.Name()))
			if err != nil {
				return nil, err
			}
			kept[e.Name()] = b
			continue
		}
		others = append(others, e.Name())
	}
	if len(others) > 0 {
		if len(others) > 5 {
			others = append(others[:5], "…")
		}
		return nil, fmt.Errorf("%w (it holds %s): restore only into an empty directory; move the old one aside, and keep its %s in the new one so that the restore can tell a rollback",
			ErrNotEmpty, strings.Join(others, ", "), MarkFile)
	}
	return kept, nil
}

// readKept reads a kept file whole, if it is not absurdly large.
func readKept(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxKeptFile+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(b) > maxKeptFile {
		return nil, fmt.Errorf("%s is larger than %d bytes: it is no mark or record of rollbacks Kurier wrote", path, maxKeptFile)
	}
	return b, nil
}

// restorer is Restore's state, and the backupSink that writes the store.
type restorer struct {
	dir  string
	opts RestoreOptions
	res  *RestoreResult
	prev mark // the mark found, if res.HadMark
	bdb  *badger.DB
	m    backupManifest

	files uint64
}

func (rs *restorer) run(ctx context.Context, r io.Reader) error {
	info, err := readBackup(ctx, r, rs)
	if err != nil {
		return err
	}
	rs.res.Backup = info
	if err := syncDir(filepath.Join(rs.dir, payloadDir)); err != nil {
		return fmt.Errorf("sync the payload folder: %w", err)
	}
	commits := rs.bdb.MaxVersion()
	err, rs.bdb = rs.bdb.Close(), nil
	if err != nil {
		return fmt.Errorf("close the restored badger: %w", err)
	}
	if rs.res.RolledBack {
		if err := rs.recordRollback(); err != nil {
			return err
		}
	}
	if err := writeMark(rs.dir, mark{Size: rs.m.LogSize, Root: rs.m.LogRoot, Commits: commits, Clean: true}); err != nil {
		return err
	}
	// The node's own gate first, then the whole check.
	db, err := Open(rs.dir, rs.opts.Store)
	if err != nil {
		return fmt.Errorf("open the restored store: %w", err)
	}
	if err := db.Close(); err != nil {
		return fmt.Errorf("close the restored store: %w", err)
	}
	var first []string
	rs.res.Check, err = Check(ctx, rs.dir, CheckOptions{Store: rs.opts.Store, Message: rs.opts.Message, Report: func(p Problem) {
		if len(first) < 3 {
			first = append(first, p.String())
		}
		rs.opts.Report(p)
	}})
	if err != nil {
		return err
	}
	if n := rs.res.Check.Problems; n > 0 {
		return fmt.Errorf("%w: the restored store has %d problems (%s): the backup is damaged; restore another one",
			broker.ErrDamaged, n, strings.Join(first, "; "))
	}
	return nil
}

// rollback returns nil if the restored log (of size, with root at the
// mark's size, nil if size is below it) reaches the mark found with its
// root, and else an error wrapping ErrRolledBack, unless the restore
// accepts the rollback.
func (rs *restorer) rollback(size uint64, rootAtMark []byte) error {
	if !rs.res.HadMark {
		return nil
	}
	var why string
	switch {
	case size < rs.prev.Size:
		why = fmt.Sprintf("the backup's log has %d leaves, but the node's %s records %d", size, MarkFile, rs.prev.Size)
	case !equalRoot(rs.prev, rootAtMark):
		why = fmt.Sprintf("the backup's log has another root at the %d leaves %s records: it forks from the node's log", rs.prev.Size, MarkFile)
	default:
		return nil
	}
	if rs.opts.AcceptRollback {
		rs.res.RolledBack = true
		return nil
	}
	return fmt.Errorf("%w: %s. Checkpoints the node signed after the backup cover leaves a node restored from it would issue again, so peers and witnesses holding them would see a fork. Restore a newer backup whose log reaches the mark; only if there is none, and you accept the fork, accept the rollback explicitly (kurierd restore -accept-rollback)",
		ErrRolledBack, why)
}

// recordRollback appends the accepted rollback to RollbackFile, durably.
func (rs *restorer) recordRollback() error {
	b, err := json.Marshal(rollbackRecord{
		Time: rs.opts.Now().UTC(), MarkSize: rs.prev.Size, MarkRoot: rs.prev.Root,
		RestoredSize: rs.m.LogSize, RestoredRoot: rs.m.LogRoot, BackupCreated: rs.m.Created,
	})
	if err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(rs.dir, RollbackFile), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("record the rollback: %w", err)
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = syncDir(rs.dir)
	}
	if err != nil {
		return fmt.Errorf("record the rollback: %w", err)
	}
	return nil
}

func (rs *restorer) manifest(m backupManifest) error {
	rs.m = m
	if rs.res.HadMark && m.LogSize <= rs.prev.Size {
		// Decided by the manifest alone: refuse before writing anything.
		var root []byte
		if m.LogSize == rs.prev.Size {
			root, _ = hex.DecodeString(m.LogRoot)
		}
		if err := rs.rollback(m.LogSize, root); err != nil {
			return err
		}
	}
	if err := makePayloadDir(rs.dir); err != nil {
		return err
	}
	bdb, err := badger.Open(badgerOptions(rs.dir, rs.opts.Store.withDefaults()))
	if err != nil {
		return fmt.Errorf("create badger: %w", err)
	}
	rs.bdb = bdb
	return nil
}

func (rs *restorer) frame(b []byte) error {
	if err := rs.bdb.Load(bytes.NewReader(b), 16); err != nil {
		return fmt.Errorf("load keys: %w", err)
	}
	return nil
}

// keysDone checks the restored keys against the manifest and the mark.
func (rs *restorer) keysDone() error {
	return rs.bdb.View(func(txn *badger.Txn) error {
		v, ok, err := get(txn, formatKey)
		if err != nil || !ok {
			return fmt.Errorf("%w: the keys hold no store format (%v)", ErrBadBackup, err)
		}
		if f, err := decodeSeq(v); err != nil || f != rs.m.StoreFormat {
			return fmt.Errorf("%w: the keys' store format is not the manifest's", ErrBadBackup)
		}
		tree, err := loadLog(txn)
		if err != nil {
			return fmt.Errorf("%w: the restored transparency log cannot be read: %v", ErrBadBackup, err)
		}
		root, err := rootAt(txn, tree.End())
		if err != nil {
			return err
		}
		if tree.End() != rs.m.LogSize || hex.EncodeToString(root) != rs.m.LogRoot {
			return fmt.Errorf("%w: the restored log (%d leaves, root %x) is not the one the manifest records (%d leaves, root %s)",
				ErrBadBackup, tree.End(), root, rs.m.LogSize, rs.m.LogRoot)
		}
		if rs.res.HadMark && rs.prev.Size < rs.m.LogSize {
			at, err := rootAt(txn, rs.prev.Size)
			if err != nil {
				return err
			}
			return rs.rollback(rs.m.LogSize, at)
		}
		return nil
	})
}

// payload writes one payload file, checking it against its restored
// header as it goes.
func (rs *restorer) payload(id string, size int64, r io.Reader) error {
	var h blobHeader
	var referenced bool
	if err := rs.bdb.View(func(txn *badger.Txn) error {
		v, ok, err := get(txn, blobHeaderKey(id))
		if err != nil || !ok {
			return err
		}
		if h, err = decodeBlobHeader(v); err != nil {
			return err
		}
		referenced, err = has(txn, blobRefKey(id))
		return err
	}); err != nil {
		return err
	}
	want, err := hex.DecodeString(h.SHA256)
	if !h.Complete || !h.File || !referenced || h.Size != size || err != nil || len(want) != sha256.Size {
		return fmt.Errorf("%w: payload file %s is not that of a stored message's payload of %d bytes", ErrBadBackup, id, size)
	}
	f, err := os.OpenFile(filepath.Join(rs.dir, payloadDir, id), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("create payload file: %w", err)
	}
	defer f.Close() // after Close below, a no-op
	sum := sha256.New()
	if _, err := io.Copy(io.MultiWriter(f, sum), r); err != nil {
		return fmt.Errorf("write payload file %s: %w", id, err)
	}
	if !bytes.Equal(sum.Sum(nil), want) {
		return fmt.Errorf("%w: payload file %s does not have the SHA-256 its header records", ErrBadBackup, id)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync payload file: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close payload file: %w", err)
	}
	rs.files++
	return nil
}

// end checks that every payload file the restored messages reference came.
func (rs *restorer) end(backupEnd) error {
	var want uint64
	if err := rs.bdb.View(func(txn *badger.Txn) error {
		return referencedFiles(context.Background(), txn, func(string, blobHeader) error { want++; return nil })
	}); err != nil {
		return err
	}
	if want != rs.files {
		return fmt.Errorf("%w: the messages reference %d payload files, the backup holds %d", ErrBadBackup, want, rs.files)
	}
	return nil
}

// VerifyBackup reads a backup whole and checks that it is one: its
// manifest, every frame of keys, the order and names of its payload files,
// and its end record's counts and digest. It writes nothing. A payload
// file's own digest is checked by Restore, against the header restored
// with the keys (and was checked by Backup when it copied the file).
func VerifyBackup(ctx context.Context, r io.Reader) (BackupInfo, error) {
	info, err := readBackup(ctx, r, verifier{})
	if err != nil {
		return info, fmt.Errorf("verify backup: %w", err)
	}
	return info, nil
}

// verifier is the backupSink of VerifyBackup.
type verifier struct{}

func (verifier) manifest(backupManifest) error { return nil }
func (verifier) frame([]byte) error            { return nil }
func (verifier) keysDone() error               { return nil }
func (verifier) end(backupEnd) error           { return nil }
func (verifier) payload(_ string, _ int64, r io.Reader) error {
	_, err := io.Copy(io.Discard, r)
	return err
}

// backupSink receives a backup's entries from readBackup, each checked
// as far as the stream alone allows, in order: the manifest, the frames of
// keys, keysDone once, the payload files (r yields exactly size bytes),
// then the end record.
type backupSink interface {
	manifest(m backupManifest) error
	frame(b []byte) error
	keysDone() error
	payload(id string, size int64, r io.Reader) error
	end(e backupEnd) error
}

// readBackup reads a backup and hands its entries to sink. Every size is
// bounded before anything is allocated for it, and an entry that Backup
// does not write, or out of its place, is refused.
func readBackup(ctx context.Context, r io.Reader, sink backupSink) (BackupInfo, error) {
	br := &backupReader{tr: tar.NewReader(r), sum: sha256.New()}
	var info BackupInfo
	hdr, err := br.next()
	if err != nil {
		return info, err
	}
	if hdr.Name != backupManifestN {
		return info, fmt.Errorf("%w: it does not begin with its manifest %s (is it a Kurier backup?)", ErrBadBackup, backupManifestN)
	}
	var m backupManifest
	if err := br.record(hdr, &m, true); err != nil {
		return info, err
	}
	if err := checkManifest(m); err != nil {
		return info, err
	}
	info = BackupInfo{Created: m.Created, StoreFormat: m.StoreFormat, LogSize: m.LogSize}
	info.LogRoot, _ = hex.DecodeString(m.LogRoot)
	if err := sink.manifest(m); err != nil {
		return info, err
	}
	frames, keysDone, last := 0, false, ""
	finishKeys := func() error {
		if keysDone {
			return nil
		}
		keysDone = true
		return sink.keysDone()
	}
	for {
		if err := ctx.Err(); err != nil {
			return info, err
		}
		hdr, err := br.next()
		if err != nil {
			return info, err
		}
		name := hdr.Name
		switch id, isPayload := strings.CutPrefix(name, payloadDir+"/"); {
		case name == fmt.Sprintf("%s%08d", backupKeysDir, frames) && !keysDone:
			n, err := br.frame(hdr, m.ReadTS, sink)
			if err != nil {
				return info, err
			}
			info.Keys += n
			frames++
		case isPayload:
			if !validBlobID(id) || id <= last {
				return info, fmt.Errorf("%w: entry %q is not a payload file in its place", ErrBadBackup, name)
			}
			last = id
			if err := finishKeys(); err != nil {
				return info, err
			}
			if err := br.payload(hdr, id, sink); err != nil {
				return info, err
			}
			info.PayloadFiles++
			info.PayloadBytes += uint64(hdr.Size)
		case name == backupEndN:
			if err := finishKeys(); err != nil {
				return info, err
			}
			return info, br.end(hdr, info, sink)
		default:
			return info, fmt.Errorf("%w: unexpected entry %q", ErrBadBackup, name)
		}
	}
}

// oldestRestored is the oldest store format a backup may hold: format 3
// differs from the current one only by the sent index, which Open builds
// when it first opens the restored store.
const oldestRestored = 3

// checkManifest refuses a manifest this version cannot restore.
func checkManifest(m backupManifest) error {
	switch {
	case m.Version != backupVersion:
		return fmt.Errorf("%w: backup format %d; this Kurier reads format %d", ErrBadBackup, m.Version, backupVersion)
	case m.StoreFormat > currentFormat:
		return fmt.Errorf("%w: the backup holds a store of format %d, written by a newer Kurier; this version reads format %d", ErrBadBackup, m.StoreFormat, currentFormat)
	case m.StoreFormat < oldestRestored:
		return fmt.Errorf("%w: the backup holds a store of format %d; this version restores formats %d to %d", ErrBadBackup, m.StoreFormat, oldestRestored, currentFormat)
	case m.Created.IsZero() || m.ReadTS == 0:
		return fmt.Errorf("%w: the manifest lacks its time or read version", ErrBadBackup)
	}
	if root, err := hex.DecodeString(m.LogRoot); err != nil || len(root) != tlog.HashSize || hex.EncodeToString(root) != m.LogRoot {
		return fmt.Errorf("%w: the manifest's log root is malformed", ErrBadBackup)
	}
	return nil
}

// backupReader reads a backup's entries and hashes them.
type backupReader struct {
	tr  *tar.Reader
	sum hash.Hash
}

// next returns the next entry's header; the end of the stream before the
// end record is an error.
func (br *backupReader) next() (*tar.Header, error) {
	hdr, err := br.tr.Next()
	switch {
	case errors.Is(err, io.EOF):
		return nil, fmt.Errorf("%w: it ends before its end record (cut short?)", ErrBadBackup)
	case err != nil:
		return nil, fmt.Errorf("%w: %v", ErrBadBackup, err)
	case hdr.Typeflag != tar.TypeReg || hdr.Size < 0:
		return nil, fmt.Errorf("%w: entry %q is not a regular file", ErrBadBackup, hdr.Name)
	}
	return hdr, nil
}

// read reads an entry of at most max bytes whole, hashing it.
func (br *backupReader) read(hdr *tar.Header, max int64, hashed bool) ([]byte, error) {
	if hdr.Size > max {
		return nil, fmt.Errorf("%w: entry %q is %d bytes, more than the %d it may be", ErrBadBackup, hdr.Name, hdr.Size, max)
	}
	b := make([]byte, hdr.Size)
	if _, err := io.ReadFull(br.tr, b); err != nil {
		return nil, fmt.Errorf("%w: entry %q cannot be read whole: %v", ErrBadBackup, hdr.Name, err)
	}
	if hashed {
		entryDigest(br.sum, hdr.Name, hdr.Size)
		br.sum.Write(b)
	}
	return b, nil
}

// record reads a JSON entry into v, refusing unknown fields.
func (br *backupReader) record(hdr *tar.Header, v any, hashed bool) error {
	b, err := br.read(hdr, maxBackupRecord, hashed)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil || dec.More() {
		return fmt.Errorf("%w: %s is malformed (%v)", ErrBadBackup, hdr.Name, err)
	}
	return nil
}

// frame reads and checks a frame of keys and returns how many it holds.
func (br *backupReader) frame(hdr *tar.Header, readTS uint64, sink backupSink) (uint64, error) {
	b, err := br.read(hdr, 8+maxBackupFrame, true)
	if err != nil {
		return 0, err
	}
	if len(b) < 8 || binary.LittleEndian.Uint64(b) != uint64(len(b)-8) {
		return 0, fmt.Errorf("%w: frame %s has a wrong length", ErrBadBackup, hdr.Name)
	}
	var list pb.KVList
	if err := proto.Unmarshal(b[8:], &list); err != nil {
		return 0, fmt.Errorf("%w: frame %s cannot be decoded: %v", ErrBadBackup, hdr.Name, err)
	}
	for _, kv := range list.Kv {
		if len(kv.Key) == 0 || len(kv.Key) > maxBadgerKey || bytes.HasPrefix(kv.Key, []byte("!badger")) ||
			kv.Version == 0 || kv.Version > readTS || len(kv.Meta) > 0 || slices.ContainsFunc(kv.UserMeta, func(b byte) bool { return b != 0 }) ||
			kv.ExpiresAt != 0 || kv.StreamDone || kv.StreamId != 0 {
			return 0, fmt.Errorf("%w: frame %s holds an entry Backup does not write", ErrBadBackup, hdr.Name)
		}
	}
	if err := sink.frame(b); err != nil {
		return 0, err
	}
	return uint64(len(list.Kv)), nil
}

// maxBadgerKey is badger's limit on a key's length.
const maxBadgerKey = 65000

// payload hands a payload file to the sink, hashing it, and checks that
// the sink read it whole.
func (br *backupReader) payload(hdr *tar.Header, id string, sink backupSink) error {
	entryDigest(br.sum, hdr.Name, hdr.Size)
	cr := &countingReader{r: io.TeeReader(br.tr, br.sum)}
	if err := sink.payload(id, hdr.Size, cr); err != nil {
		return err
	}
	if cr.n != hdr.Size {
		return fmt.Errorf("%w: payload file %s is cut short", ErrBadBackup, id)
	}
	return nil
}

// end reads the end record, compares it with what was read, and checks
// that nothing follows.
func (br *backupReader) end(hdr *tar.Header, info BackupInfo, sink backupSink) error {
	sum := hex.EncodeToString(br.sum.Sum(nil))
	var e backupEnd
	if err := br.record(hdr, &e, false); err != nil {
		return err
	}
	if e.SHA256 != sum {
		return fmt.Errorf("%w: its content does not have the SHA-256 its end record names (damaged?)", ErrBadBackup)
	}
	if e.Keys != info.Keys || e.PayloadFiles != info.PayloadFiles || e.PayloadBytes != info.PayloadBytes {
		return fmt.Errorf("%w: its end record counts other keys or payload files than it holds", ErrBadBackup)
	}
	switch _, err := br.tr.Next(); {
	case err == nil:
		return fmt.Errorf("%w: something follows its end record", ErrBadBackup)
	case !errors.Is(err, io.EOF):
		return fmt.Errorf("%w: after its end record: %v", ErrBadBackup, err)
	}
	return sink.end(e)
}

// countingReader counts what it reads.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if errors.Is(err, io.ErrUnexpectedEOF) {
		err = fmt.Errorf("%w: cut short", ErrBadBackup)
	}
	return n, err
}
