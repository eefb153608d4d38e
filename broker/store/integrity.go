package store

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/dgraph-io/badger/v4/table"
	"github.com/dgraph-io/ristretto/v2/z"

	"kurier.dev/kurier/envelope"
)

// What badger does with damaged files, and what Kurier does about it
// (badger v4.9.6, read in its source and reproduced):
//
//   - Tables (*.sst): block checksums are verified only when asked, and
//     badger's own check of a whole table (table.VerifyChecksum, run by the
//     modes OnTableRead and OnTableAndBlockRead) dereferences nil and
//     panics when a block cannot even be decoded. So Open checks every
//     table itself before badger opens them (verifyTables), reading each
//     read-only and turning a panic into an error that names the file, and
//     refuses to open. badger then runs with OnBlockRead, which checks each
//     block as it is read: a damaged block is not served, its keys read as
//     absent (badger drops the error). Some damage makes badger panic
//     decoding a block before any check, in every mode; that stops the
//     node, and the next Open refuses the table.
//
//   - Write-ahead logs (*.mem) and the newest value log (*.vlog): badger
//     replays each from the start and cuts it at the first entry that fails
//     its checksum, without a word. A crash during a write leaves a torn
//     tail that looks the same to badger as a flipped byte in the middle:
//     both end in bytes that do not parse. What tells them apart is only
//     what came before: Kurier scans each such file before badger opens it
//     for the end of its data (the last non-zero byte; badger preallocates
//     with zeros) and compares it with the file's length afterwards
//     (reportTruncation). Data cut away is logged at ERROR with the file and
//     the byte counts; if the high-water mark says the node was shut down
//     cleanly, nothing was being written, so the cut is corruption and the
//     log says so. A write-ahead log that badger replays is flushed to a
//     table and deleted at once, sometimes before its length can be read;
//     the mark's badger version catches what it lost (checkCommits). Lost
//     evidence is refused by the high-water mark (see mark.go); lost
//     bytes of a small payload read back empty from badger, without an
//     error, and surface as broker.ErrDamaged when read and in Check
//     (large payloads are files of their own, checked as they are read).

// verifyTables checks the block checksums of every table the manifest
// lists, before badger opens them. It returns an error naming the first
// damaged table. A table the manifest does not list is not checked: a
// crash while badger flushes or compacts leaves one half written before
// it is added to the manifest, and badger deletes it on open. A manifest
// that cannot be read is left to badger, which refuses it.
func verifyTables(dir string, bo badger.Options) error {
	ids, err := manifestTables(dir, bo)
	if err != nil {
		return nil //nolint:nilerr // badger.Open reports a damaged manifest
	}
	for _, id := range ids {
		name := table.NewFilename(id, dir)
		err := verifyTable(name, bo)
		if errors.Is(err, fs.ErrNotExist) {
			continue // badger reports a listed table that is missing
		}
		if err != nil {
			return fmt.Errorf("table %s is damaged (%s): restore the data directory from a backup, keeping the current %s, and run kurierd -check-store on it",
				name, envelope.Quote(err.Error()), MarkFile)
		}
	}
	return nil
}

// manifestTables returns the ids of the tables badger's manifest in dir
// lists, in order; none if there is no manifest yet.
func manifestTables(dir string, bo badger.Options) ([]uint64, error) {
	f, err := os.Open(filepath.Join(dir, badger.ManifestFilename))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open the manifest: %w", err)
	}
	defer f.Close()
	m, _, err := badger.ReplayManifestFile(f, bo.ExternalMagicVersion, bo)
	if err != nil {
		return nil, fmt.Errorf("read the manifest: %w", err)
	}
	return slices.Sorted(maps.Keys(m.Tables)), nil
}

// verifyTable opens one table read-only and checks every block.
func verifyTable(name string, bo badger.Options) (err error) {
	mf, err := z.OpenMmapFile(name, os.O_RDONLY, 0)
	if err != nil && !errors.Is(err, z.NewFile) {
		return err
	}
	defer mf.Close(-1)
	defer func() {
		// badger's table code panics on some undecodable input (slice
		// bounds, or a nil block in VerifyChecksum).
		if r := recover(); r != nil {
			err = fmt.Errorf("unreadable: %v", r)
		}
	}()
	t, err := table.OpenTable(mf, table.Options{
		ReadOnly:             true,
		BlockSize:            bo.BlockSize,
		Compression:          bo.Compression,
		ZSTDCompressionLevel: bo.ZSTDCompressionLevel,
		// NoVerification: VerifyChecksum then checks each block itself
		// and returns an error instead of panicking.
		ChkMode: options.NoVerification,
	})
	if err != nil {
		return err
	}
	// Not t.DecrRef: dropping the last reference deletes the file.
	return t.VerifyChecksum()
}

// removeEmptyLogs deletes write-ahead and value log files of length zero.
// badger deletes a log file by truncating it to zero, closing it and then
// removing it, and creates one by creating it and then giving it its
// size; a crash in between leaves an empty file, on which badger refuses
// to open ("while opening fid: N err: Create a new file"). An empty file
// holds no entry, not even a header, so nothing is lost with it.
func removeEmptyLogs(dir string, logger *slog.Logger) error {
	for _, pattern := range []string{"*.mem", "*.vlog"} {
		names, err := filepath.Glob(filepath.Join(dir, pattern))
		if err != nil {
			return fmt.Errorf("list %s: %w", pattern, err)
		}
		for _, name := range names {
			fi, err := os.Stat(name)
			if err != nil || fi.Size() != 0 {
				continue
			}
			if err := os.Remove(name); err != nil {
				return fmt.Errorf("remove the empty log file %s: %w", name, err)
			}
			logger.Warn("removed an empty log file that a crash left while badger created or deleted it", "component", "badger", "file", name)
		}
	}
	return nil
}

// tail is where a log file's data ended before badger opened it.
type tail struct {
	path    string
	dataEnd int64 // offset after the last non-zero byte
}

// walHeaderSize is the header badger writes at the start of every log
// file; badger never cuts one shorter (vlogHeaderSize in badger).
const walHeaderSize = 20

// scanTails records the end of the data in every write-ahead log and in
// the newest value log, the files badger cuts on open.
func scanTails(dir string) ([]tail, error) {
	mems, err := filepath.Glob(filepath.Join(dir, "*.mem"))
	if err != nil {
		return nil, err
	}
	vlogs, err := filepath.Glob(filepath.Join(dir, "*.vlog"))
	if err != nil {
		return nil, err
	}
	slices.Sort(vlogs) // fixed-width ids: the last is the newest
	if len(vlogs) > 0 {
		mems = append(mems, vlogs[len(vlogs)-1])
	}
	var tails []tail
	for _, p := range mems {
		end, err := dataEnd(p)
		if err != nil {
			return nil, fmt.Errorf("scan %s: %w", p, err)
		}
		tails = append(tails, tail{path: p, dataEnd: end})
	}
	return tails, nil
}

// dataEnd returns the offset after the last non-zero byte of the file.
func dataEnd(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	end, err := lastData(f)
	if err != nil {
		return 0, err
	}
	buf := make([]byte, 1<<20)
	for end > 0 {
		n := min(int64(len(buf)), end)
		if _, err := f.ReadAt(buf[:n], end-n); err != nil && !errors.Is(err, io.EOF) {
			return 0, err
		}
		for i := n - 1; i >= 0; i-- {
			if buf[i] != 0 {
				return end - n + i + 1, nil
			}
		}
		end -= n
	}
	return 0, nil
}

// cut is a log file that badger cut below the end of its data.
type cut struct {
	path          string
	dataEnd, kept int64
	cause         string
}

func (c cut) String() string {
	return fmt.Sprintf("badger cut %s on open at byte %d of %d, discarding %d bytes of data: %s",
		c.path, c.kept, c.dataEnd, c.dataEnd-c.kept, c.cause)
}

// cuts compares the files badger opened with where their data ended
// before.
func cuts(tails []tail, cleanShutdown bool) []cut {
	var cs []cut
	for _, t := range tails {
		fi, err := os.Stat(t.path)
		if err != nil || fi.Size() < walHeaderSize {
			// Gone or emptied: badger replayed a write-ahead log and flushed
			// it to a table already (a cut of it would have happened
			// first), so its length says nothing now. The mark catches
			// what it lost.
			continue
		}
		size := fi.Size()
		if size >= t.dataEnd {
			continue
		}
		cause := "a write under way at a crash (its caller was never answered), or corruption"
		if cleanShutdown {
			cause = "corruption: the node had been shut down cleanly, so no write was under way"
		}
		cs = append(cs, cut{path: t.path, dataEnd: t.dataEnd, kept: size, cause: cause})
	}
	return cs
}

// reportTruncation logs, at ERROR, every log file that badger cut below
// the end of its data when it opened.
func reportTruncation(tails []tail, cleanShutdown bool, logger *slog.Logger) {
	for _, c := range cuts(tails, cleanShutdown) {
		logger.Error("badger cut a damaged log file on open, discarding data; run kurierd -check-store to see what is lost, and restore the data directory from a backup if anything is",
			"component", "badger", "file", c.path, "data_end", c.dataEnd, "kept", c.kept,
			"discarded_bytes", c.dataEnd-c.kept, "cause", c.cause)
	}
}

// badgerLogger passes badger's warnings and errors to slog. Of its info
// messages, those about damage or repair (truncating, deleting, replaying)
// become warnings; the rest are dropped, as are its debug messages.
type badgerLogger struct{ l *slog.Logger }

func (a badgerLogger) Errorf(format string, args ...any) {
	a.l.Error(strings.TrimSpace(fmt.Sprintf(format, args...)), "component", "badger")
}

func (a badgerLogger) Warningf(format string, args ...any) {
	a.l.Warn(strings.TrimSpace(fmt.Sprintf(format, args...)), "component", "badger")
}

func (a badgerLogger) Infof(format string, args ...any) {
	msg := strings.TrimSpace(fmt.Sprintf(format, args...))
	if damageWord(msg) {
		a.l.Warn(msg, "component", "badger")
		return
	}
	a.l.Debug(msg, "component", "badger")
}

func (badgerLogger) Debugf(string, ...any) {}

// damageWord reports whether a badger info message speaks of damage or of
// files cut.
func damageWord(msg string) bool {
	m := strings.ToLower(msg)
	for _, w := range []string{"truncat", "corrupt", "checksum", "invalid", "error", "fail"} {
		if strings.Contains(m, w) {
			return true
		}
	}
	return false
}
