package store

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Restore builds the store in a working directory beside the data
// directory and swaps it in only once it has passed its check; these are
// the parts of that which do not depend on the system (see Restore).

// errNoExchange is exchangeDirs' answer where the system or the file
// system cannot exchange two directories atomically.
var errNoExchange = errors.New("directories cannot be exchanged atomically here")

// staleWork is the age after which a working directory that a crashed
// restore left beside the data directory is removed by the next Restore.
// No restore runs that long without touching it.
const staleWork = 24 * time.Hour

// workPrefix is the name prefix of dir's working directories; the leading
// dot and the suffix keep them from being taken for a data directory.
func workPrefix(dir string) string { return "." + filepath.Base(dir) + ".restoring-" }

// newRestoreWork creates a working directory beside dir and copies the
// kept files into it, durably.
func newRestoreWork(dir string, kept map[string][]byte) (string, error) {
	work, err := os.MkdirTemp(filepath.Dir(dir), workPrefix(dir))
	if err != nil {
		return "", fmt.Errorf("create a working directory beside it: %w", err)
	}
	err = os.Chmod(work, 0o700)
	for name, b := range kept {
		if err == nil {
			err = writeSynced(filepath.Join(work, name), b)
		}
	}
	if err == nil {
		err = syncDir(work)
	}
	if err == nil {
		err = syncDir(filepath.Dir(dir))
	}
	if err != nil {
		os.RemoveAll(work)
		return "", fmt.Errorf("prepare the working directory %s: %w", work, err)
	}
	return work, nil
}

// writeSynced writes b to path, replacing what is there, and syncs it.
func writeSynced(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// removeStaleWork removes working directories of dir that crashed restores
// left behind: those older than staleWork that no process has open. It is
// best effort; one left stays harmless, as the node never opens it.
func removeStaleWork(dir string, now time.Time) {
	parent, prefix := filepath.Dir(dir), workPrefix(dir)
	entries, err := os.ReadDir(parent)
	if err != nil {
		return
	}
	for _, e := range entries {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), prefix) {
			continue
		}
		path := filepath.Join(parent, e.Name())
		if info, err := e.Info(); err != nil || now.Sub(info.ModTime()) < staleWork {
			continue
		}
		if busy, err := InUse(path); err != nil || busy {
			continue
		}
		os.RemoveAll(path)
	}
}

// swapIn puts the working directory, holding the checked store, in place
// of dir, if dir is not in use and holds exactly the kept files. On an
// error before the swap dir is as it was; after the swap the working path
// holds the old dir, which swapIn removes.
func swapIn(work, dir string, kept map[string][]byte, log *slog.Logger) error {
	unlock, err := lockDir(dir)
	if err != nil {
		return err
	}
	defer unlock()
	if err := checkKept(dir, kept); err != nil {
		return err
	}
	parent := filepath.Dir(dir)
	switch err := exchangeDirs(work, dir); {
	case errors.Is(err, errNoExchange):
		return replaceDir(work, dir, kept)
	case err != nil:
		return fmt.Errorf("put the restored store in place: %w", err)
	}
	if err := syncDir(parent); err != nil {
		return fmt.Errorf("the restored store is in place, but syncing %s failed (a crash may still undo the restore; check the directory before starting the node): %w", parent, err)
	}
	if err := os.RemoveAll(work); err != nil {
		log.Warn("store: restored; the replaced directory, holding only the kept files, could not be removed", "path", work, "err", err)
	}
	return nil
}

// replaceDir is swapIn's way where the exchange is unavailable: remove the
// kept files from dir, rename the working directory over the empty dir.
// A crash between the two leaves dir empty. On an error the kept files are
// put back.
func replaceDir(work, dir string, kept map[string][]byte) error {
	var err error
	for name := range kept {
		if err = os.Remove(filepath.Join(dir, name)); err != nil {
			break
		}
	}
	if err == nil {
		// Not os.Rename: it refuses any directory as the new name.
		if err = syscall.Rename(work, dir); err != nil {
			err = &os.LinkError{Op: "rename", Old: work, New: dir, Err: err}
		}
	}
	if err != nil {
		for name, b := range kept {
			err = errors.Join(err, writeSynced(filepath.Join(dir, name), b))
		}
		return fmt.Errorf("put the restored store in place: %w", errors.Join(err, syncDir(dir)))
	}
	if err := syncDir(filepath.Dir(dir)); err != nil {
		return fmt.Errorf("the restored store is in place, but syncing %s failed (a crash may still undo the restore; check the directory before starting the node): %w", filepath.Dir(dir), err)
	}
	return nil
}

// checkKept refuses dir unless it holds exactly the kept files, as they
// were when the restore began.
func checkKept(dir string, kept map[string][]byte) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	want := make([]string, 0, len(kept))
	for name := range kept {
		want = append(want, name)
	}
	slices.Sort(want)
	if !slices.Equal(names, want) { // ReadDir sorts by name
		if len(names) > 5 {
			names = append(names[:5], "…")
		}
		return fmt.Errorf("%w: it changed while the restore ran (it now holds %s; it held %s): was a node started in it? Stop it, leave only the kept %s in the directory, and restore again",
			ErrNotEmpty, listOrNothing(names), listOrNothing(want), MarkFile)
	}
	for name, b := range kept {
		got, err := readKept(filepath.Join(dir, name))
		if err != nil {
			return err
		}
		if !bytes.Equal(got, b) {
			return fmt.Errorf("%w: its %s changed while the restore ran; restore again", ErrNotEmpty, name)
		}
	}
	return nil
}

func listOrNothing(names []string) string {
	if len(names) == 0 {
		return "nothing"
	}
	return strings.Join(names, ", ")
}

// errInUse is the error of a dir that a node opened while the restore ran.
func errInUse(dir string) error {
	return fmt.Errorf("%w: a node has the store in %s open (was it started while the restore ran?): stop it, leave only the kept %s in the directory, and restore again",
		ErrNotEmpty, dir, MarkFile)
}
