package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"kurier.dev/kurier/broker"
)

// Faults of a restore, produced for real: an input that fails partway, a
// restore killed with SIGKILL (a child process, this test binary again, as
// in TestFaultCrash), a node started in the data directory while the
// restore runs, a check that fails after a rollback was accepted. Each
// must leave the data directory as it was.

// markedBackup stores messages (in badger and in payload files), marks the
// log as before a checkpoint is signed, and backs the store up. It returns
// the backup, the mark's bytes and the log's size.
func markedBackup(t *testing.T) (backup, markBytes []byte, size uint64) {
	t.Helper()
	dir := t.TempDir()
	db := openTest(t, dir)
	payloads(t, db, 3, 1024)
	payloads(t, db, 3, largePayload)
	size = logSizeOf(t, db)
	if err := db.MarkLog(context.Background(), size); err != nil {
		t.Fatal(err)
	}
	backup, _ = backupOf(t, db)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	markBytes, err := os.ReadFile(filepath.Join(dir, MarkFile))
	if err != nil {
		t.Fatal(err)
	}
	return backup, markBytes, size
}

// keptDir returns a new data directory holding files, as the recovery
// leaves it: the old node's mark and record of rollbacks, or nothing.
func keptDir(t *testing.T, files map[string][]byte) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// assertAsKept fails unless dir holds exactly files, byte for byte.
func assertAsKept(t *testing.T, dir string, files map[string][]byte) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if want := slices.Sorted(maps.Keys(files)); !slices.Equal(names, want) {
		t.Fatalf("the data directory holds %v, want %v as it was", names, want)
	}
	for name, b := range files {
		if got, err := os.ReadFile(filepath.Join(dir, name)); err != nil || !bytes.Equal(got, b) {
			t.Errorf("%s is %q (%v), want %q as it was", name, got, err, b)
		}
	}
}

// strays returns the working directories beside dir.
func strays(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Dir(dir))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), workPrefix(dir)) {
			out = append(out, filepath.Join(filepath.Dir(dir), e.Name()))
		}
	}
	return out
}

// cutReader yields the first left bytes of r, then calls at for the error
// to return (which may never return).
type cutReader struct {
	r    io.Reader
	left int
	at   func() error
}

func (c *cutReader) Read(p []byte) (int, error) {
	if c.left == 0 {
		return 0, c.at()
	}
	if len(p) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= n
	return n, err
}

var errInput = errors.New("input/output error reading the backup")

func TestFaultRestoreInputFails(t *testing.T) {
	backup, markBytes, _ := markedBackup(t)
	for _, kept := range []map[string][]byte{
		{},
		{MarkFile: markBytes, RollbackFile: []byte(`{"time":"2026-01-02T03:04:05Z"}` + "\n")},
	} {
		for name, at := range map[string]int{
			"in the manifest":       700,
			"in the keys":           len(backup) / 3,
			"in a payload file":     len(backup) - largePayload/2,
			"before the end record": len(backup) - 1024,
			"at the very end":       len(backup) - 1,
		} {
			t.Run(fmt.Sprintf("%s, %d kept", name, len(kept)), func(t *testing.T) {
				dir := keptDir(t, kept)
				r := &cutReader{r: bytes.NewReader(backup), left: at, at: func() error { return errInput }}
				_, err := Restore(context.Background(), dir, r, restoreOpts())
				if err == nil || !strings.Contains(err.Error(), errInput.Error()) {
					t.Fatalf("Restore from a failing input = %v, want its error", err)
				}
				assertAsKept(t, dir, kept)
				if s := strays(t, dir); len(s) > 0 {
					t.Errorf("the failed restore left %v", s)
				}
			})
		}
	}
}

// The crash child: restores a backup into a directory, says "stalled" once
// it has read the first part of it, and waits to be killed.
const (
	restoreChildDir    = "KURIER_RESTORE_CHILD_DIR"
	restoreChildBackup = "KURIER_RESTORE_CHILD_BACKUP"
	restoreChildAt     = "KURIER_RESTORE_CHILD_AT"
)

func restoreChild(dir string) {
	backup, err := os.ReadFile(os.Getenv(restoreChildBackup))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	at, _ := strconv.Atoi(os.Getenv(restoreChildAt))
	r := &cutReader{r: bytes.NewReader(backup), left: at, at: func() error {
		fmt.Println("stalled")
		for {
			time.Sleep(time.Hour) // until killed
		}
	}}
	_, err = Restore(context.Background(), dir, r, restoreOpts())
	fmt.Fprintf(os.Stderr, "Restore returned %v\n", err)
	os.Exit(2)
}

// crashRestore restores backup into dir in a child and kills it with
// SIGKILL once it has read all but the last half of its last payload file
// (the keys loaded into badger, the other payload files written). It
// returns the working directory the child left.
func crashRestore(t *testing.T, dir string, backup []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "backup.tar")
	if err := os.WriteFile(path, backup, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd, line := startChild(t, "^TestFaultRestoreCrash$", restoreChildDir+"="+dir, restoreChildBackup+"="+path,
		restoreChildAt+"="+strconv.Itoa(len(backup)-largePayload/2))
	if line != "stalled\n" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("child said %q, want it stalled", line)
	}
	// What a crash now cuts short: a store in the making.
	s := strays(t, dir)
	if len(s) != 1 {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("working directories beside the data directory: %v, want one", s)
	}
	written, _ := os.ReadDir(filepath.Join(s[0], payloadDir))
	_, manifestErr := os.Stat(filepath.Join(s[0], "MANIFEST"))
	if err := cmd.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	cmd.Wait()
	if len(written) == 0 || manifestErr != nil {
		t.Fatalf("the child was killed before it wrote badger's files and payload files (%d payload files, %v)", len(written), manifestErr)
	}
	return s[0]
}

func TestFaultRestoreCrash(t *testing.T) {
	if dir := os.Getenv(restoreChildDir); dir != "" {
		restoreChild(dir)
	}
	backup, markBytes, size := markedBackup(t)

	t.Run("the old mark kept", func(t *testing.T) {
		kept := map[string][]byte{MarkFile: markBytes}
		dir := keptDir(t, kept)
		crashRestore(t, dir, backup)
		assertAsKept(t, dir, kept)
		// The node refuses the directory as it refused it before the
		// restore: its mark says the log reached size, the store is empty.
		_, err := Open(dir, restoreOpts().Store)
		if !errors.Is(err, ErrRolledBack) || !strings.Contains(err.Error(), strconv.FormatUint(size, 10)) {
			t.Errorf("Open after a crashed restore = %v, want ErrRolledBack naming the mark's %d leaves", err, size)
		}
	})

	t.Run("nothing kept", func(t *testing.T) {
		dir := keptDir(t, nil)
		crashRestore(t, dir, backup)
		assertAsKept(t, dir, nil)
		// Nothing of the backup: the node opens a new, empty store.
		db := openTest(t, dir)
		if got := logSizeOf(t, db); got != 0 {
			t.Errorf("Open after a crashed restore has %d leaves, want an empty store", got)
		}
	})

	t.Run("a later restore", func(t *testing.T) {
		kept := map[string][]byte{MarkFile: markBytes}
		dir := keptDir(t, kept)
		stray := crashRestore(t, dir, backup)
		opts := restoreOpts()
		opts.Now = func() time.Time { return time.Now().Add(staleWork - time.Minute) }
		r := &cutReader{r: bytes.NewReader(backup), left: 700, at: func() error { return errInput }}
		if _, err := Restore(context.Background(), dir, r, opts); err == nil {
			t.Fatal("Restore from a failing input succeeded")
		}
		if s := strays(t, dir); !slices.Equal(s, []string{stray}) {
			t.Errorf("a restore removed a working directory less than a day old: %v left, want %s", s, stray)
		}
		opts.Now = func() time.Time { return time.Now().Add(staleWork + time.Minute) }
		res, err := Restore(context.Background(), dir, bytes.NewReader(backup), opts)
		if err != nil || res.Backup.LogSize != size {
			t.Fatalf("Restore after a crashed one = %+v, %v", res, err)
		}
		if s := strays(t, dir); len(s) != 0 {
			t.Errorf("the crashed restore's working directory, a day old, is still there: %v", s)
		}
		if got := logSizeOf(t, openTest(t, dir)); got != size {
			t.Errorf("restored log has %d leaves, want %d", got, size)
		}
	})
}

func TestHostile_RestoreNodeStarts(t *testing.T) {
	backup, _, _ := markedBackup(t)
	for _, tc := range []struct {
		name  string
		close bool   // the node stops again before the restore ends
		want  string // in the error
	}{
		{"node running", false, "has the store in"},
		{"node started and stopped", true, "changed while the restore ran"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := keptDir(t, nil)
			var db *DB
			var served map[string][]byte
			// Started as systemd restarts a node: while the restore reads
			// its keys.
			r := &cutReader{r: bytes.NewReader(backup), left: len(backup) / 3, at: func() error { return nil }}
			r.at = func() error {
				db = openTest(t, dir)
				served = payloads(t, db, 2, largePayload)
				if tc.close {
					if err := db.Close(); err != nil {
						t.Fatal(err)
					}
				}
				r.left = len(backup) // and the rest
				return nil
			}
			_, err := Restore(context.Background(), dir, r, restoreOpts())
			if !errors.Is(err, ErrNotEmpty) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Restore while a node started in the directory = %v, want ErrNotEmpty saying %q", err, tc.want)
			}
			if s := strays(t, dir); len(s) > 0 {
				t.Errorf("the refused restore left %v", s)
			}
			if !tc.close {
				if n := checkServed(t, db, served); n > 0 {
					t.Errorf("the running node serves %d payloads damaged", n)
				}
				if err := db.Close(); err != nil {
					t.Fatalf("Close the node: %v", err)
				}
			}
			db = openTest(t, dir)
			if n := checkServed(t, db, served); n > 0 {
				t.Errorf("the node, reopened, serves %d payloads damaged", n)
			}
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			if res, _ := checkStore(t, dir); res.Problems > 0 || res.Messages != 2 {
				t.Errorf("the node's store after the refused restore: %+v", res)
			}
		})
	}
}

func TestHostile_RestoreLockKeepsNodeOut(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the restore holds the directory's lock through the swap on Linux only")
	}
	dir := t.TempDir()
	unlock, err := lockDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if db, err := Open(dir, restoreOpts().Store); err == nil {
		db.Close()
		t.Fatal("a node opened the store while the restore held the directory's lock")
	}
	unlock()
	openTest(t, dir)
	if _, err := lockDir(dir); !errors.Is(err, ErrNotEmpty) {
		t.Errorf("lockDir of an open store = %v, want ErrNotEmpty", err)
	}
}

func TestFaultRestoreRollbackCheckFails(t *testing.T) {
	ctx := context.Background()
	src := openTest(t, "")
	payloads(t, src, 2, 1024)
	old, _ := backupOf(t, src)
	payloads(t, src, 2, largePayload)
	if err := src.MarkLog(ctx, logSizeOf(t, src)); err != nil {
		t.Fatal(err)
	}
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}
	markBytes, err := os.ReadFile(filepath.Join(src.dir, MarkFile))
	if err != nil {
		t.Fatal(err)
	}
	kept := map[string][]byte{MarkFile: markBytes, RollbackFile: []byte(`{"time":"2026-01-02T03:04:05Z","mark_size":9}` + "\n")}
	dir := keptDir(t, kept)
	opts := restoreOpts()
	opts.AcceptRollback = true
	opts.Message = func(context.Context, *broker.Message, []broker.Copy, []broker.Evidence) []string {
		return []string{"its sender's signature does not verify"}
	}
	_, err = Restore(ctx, dir, bytes.NewReader(old), opts)
	if !errors.Is(err, broker.ErrDamaged) {
		t.Fatalf("Restore whose check fails = %v, want broker.ErrDamaged", err)
	}
	// No record of a rollback that did not happen, and the old mark.
	assertAsKept(t, dir, kept)
	if s := strays(t, dir); len(s) > 0 {
		t.Errorf("the failed restore left %v", s)
	}
}

func TestRestore_ReplaceDir(t *testing.T) {
	kept := map[string][]byte{MarkFile: []byte("mark\n"), RollbackFile: []byte("rollback\n")}
	t.Run("in place", func(t *testing.T) {
		dir := keptDir(t, kept)
		work, err := newRestoreWork(dir, kept)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(work, "MANIFEST"), []byte("restored"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := replaceDir(work, dir, kept); err != nil {
			t.Fatal(err)
		}
		assertAsKept(t, dir, map[string][]byte{MarkFile: kept[MarkFile], RollbackFile: kept[RollbackFile], "MANIFEST": []byte("restored")})
		if s := strays(t, dir); len(s) > 0 {
			t.Errorf("left %v", s)
		}
	})
	t.Run("rename fails", func(t *testing.T) {
		dir := keptDir(t, kept)
		if err := replaceDir(filepath.Join(filepath.Dir(dir), "missing"), dir, kept); err == nil {
			t.Fatal("replaceDir from a missing directory succeeded")
		}
		assertAsKept(t, dir, kept)
	})
}
