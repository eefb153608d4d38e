package integration

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kurier.dev/kurier/client"
	"kurier.dev/kurier/internal/logbuf"
	"kurier.dev/kurier/pki"
)

var flipsPerKind = flag.Int("flips", 1, "byte flips per kind of store file in TestFault_ByteFlips")

// storeFileKinds are the kinds of file in a node's store, by the pattern
// of their names, and the bytes of each that no data depends on (where a
// flipped byte need not be found, but must not lose or change anything).
var storeFileKinds = []struct {
	pattern string
	unused  func(off int64) bool
}{
	{"*.mem", nil}, // badger's write-ahead logs of memtables not yet flushed
	// the value log: values of 64 KiB or more, which payloads no longer
	// are (a large one has a file of its own, below), so here it holds
	// its 20-byte header alone: the key id (a flip names a key the
	// registry lacks) and 12 bytes of IV that only an encrypted store uses.
	{"*.vlog", func(off int64) bool { return off >= 8 && off < 20 }},
	{"*.sst", nil},      // the LSM tree's tables
	{"MANIFEST", nil},   // which tables make up the tree
	{"payloads/*", nil}, // payloads of 256 KiB or more, a file each
	// badger's registry of encryption keys: its first 16 bytes are an IV
	// that only an encrypted store uses (Kurier's is not encrypted); the
	// rest is checked.
	{"KEYREGISTRY", func(off int64) bool { return off < 16 }},
	{"KURIER-LOGMARK", nil},
	// statistics for value-log garbage collection: a flipped byte can at
	// most make collection pick another file. All zero until the first
	// collection, and then there is nothing to flip.
	{"DISCARD", func(int64) bool { return true }},
}

// TestFault_ByteFlips damages, one byte at a time, every kind of file in a
// real node's store, and requires each damage to be refused at start or
// reported by `kurierd -check-store`, and nothing damaged ever served: a
// node that starts on a damaged store serves each message whole (the
// client checks every digest and signature) or not at all.
//
// The store is made to hold every kind of file at once: messages sent,
// the node stopped cleanly (its memtable flushed to a table), more
// messages sent, and the node killed (their write-ahead log not yet
// flushed). Each flip is at a random offset inside the file's data, not in
// the holes of a sparse file.
func TestFault_ByteFlips(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	pristine := filepath.Join(t.TempDir(), "dev")
	var ids []string
	n := startDevNode(t, pristine)
	ids = append(ids, sendSome(ctx, t, n, 6)...)
	n.stop()
	n = startDevNode(t, pristine)
	ids = append(ids, sendSome(ctx, t, n, 6)...)
	// A checkpoint is signed only once the high-water mark covers it: the
	// mark now reaches the last commit.
	if _, err := devClient(ctx, t, n, "agency").Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	n.kill()

	for _, kind := range storeFileKinds {
		files, _ := filepath.Glob(filepath.Join(pristine, "store", kind.pattern))
		if len(files) == 0 {
			t.Errorf("the store holds no %s file; the test no longer covers it", kind.pattern)
			continue
		}
		for i := range *flipsPerKind {
			t.Run(fmt.Sprintf("%s#%d", kind.pattern, i), func(t *testing.T) {
				dir := filepath.Join(t.TempDir(), "dev")
				if err := copyTree(pristine, dir); err != nil {
					t.Fatal(err)
				}
				file := files[rng.IntN(len(files))]
				rel, err := filepath.Rel(filepath.Join(pristine, "store"), file)
				if err != nil {
					t.Fatal(err)
				}
				target := filepath.Join(dir, "store", rel)
				off, err := flipByte(target, rng)
				if errors.Is(err, errNoData) && kind.unused != nil {
					t.Skipf("%s holds no data yet", filepath.Base(file))
				}
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("flipped the byte at %d of %s", off, filepath.Base(file))
				outcome, withheld := startDamaged(ctx, t, dir, ids)
				switch unused := kind.unused != nil && kind.unused(off); {
				case unused && withheld > 0:
					t.Fatalf("a flipped byte at %d of %s, where nothing depends on it, cost %d messages", off, filepath.Base(file), withheld)
				case !unused && outcome == "":
					t.Fatalf("a flipped byte at %d of %s was neither refused at start nor reported by -check-store", off, filepath.Base(file))
				}
				t.Log(outcome)
			})
		}
	}
}

// sendSome sends count messages from the agency to the court of n, every
// third one large enough for a payload file, and returns their ids.
func sendSome(ctx context.Context, t *testing.T, n *nodeProc, count int) []string {
	t.Helper()
	c := devClient(ctx, t, n, "agency")
	var ids []string
	for i := range count {
		size := 3 << 10
		if i%3 == 0 {
			size = 300 << 10
		}
		r, err := c.Send(ctx, client.Message{To: []string{courtAddr}, Subject: fmt.Sprintf("Akte %d", i),
			Documents: []client.Document{{Name: "akte.bin", Data: chaosDoc(i, size)}}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, r.MessageID)
	}
	return ids
}

// devClient dials n as one of the development setup's identities.
func devClient(ctx context.Context, t *testing.T, n *nodeProc, name string) *client.Client {
	t.Helper()
	id, err := pki.LoadIdentity(n.identity(name))
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.Dial(ctx, n.addr, id, client.WithRetry(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// startDamaged starts a node on the damaged store in dir and says how the
// damage was found: refused at start, or reported by -check-store ("" if
// it was found nowhere), and how many messages of ids were not served. A
// message is served whole or not at all: the client checks every digest
// and signature.
func startDamaged(ctx context.Context, t *testing.T, dir string, ids []string) (outcome string, withheld int) {
	t.Helper()
	if msg, refused := refusesToStart(ctx, t, dir); refused {
		return "refused at start: " + msg, len(ids)
	}
	n := startDevNode(t, dir)
	c := devClient(ctx, t, n, "court")
	served := 0
	for _, id := range ids {
		out := t.TempDir()
		if _, err := c.Fetch(ctx, id, out); err != nil {
			withheld++
			continue
		}
		served++
	}
	n.stop()
	check := exec.CommandContext(ctx, kurierd, "-check-store", "-dev", "-data", dir)
	var out bytes.Buffer
	check.Stdout, check.Stderr = &out, &out
	err := check.Run()
	t.Logf("started; %d messages served whole, %d withheld", served, withheld)
	if err == nil {
		return "", withheld
	}
	return "reported by -check-store: " + lastLines(out.String(), 3), withheld
}

// refusesToStart runs kurierd on dir until it listens or exits; it
// reports whether it exited with an error before listening, and why.
func refusesToStart(ctx context.Context, t *testing.T, dir string) (string, bool) {
	t.Helper()
	cmd := exec.CommandContext(ctx, kurierd, "-dev", "-data", dir, "-listen", "127.0.0.1:0")
	var logs logbuf.Buffer
	cmd.Stderr = &logs
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stdout) // ends when the node exits
	for sc.Scan() {
		if strings.Contains(sc.Text(), "listening on") {
			cmd.Process.Kill()
			cmd.Wait()
			return "", false
		}
	}
	err = cmd.Wait()
	return lastLines(logs.String(), 2), err != nil
}

var errNoData = errors.New("the file holds no data")

// flipByte inverts the bits of one byte at a random offset below the
// file's last non-zero byte, and returns the offset.
func flipByte(path string, rng *rand.Rand) (int64, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	end, err := dataEnd(f)
	if err != nil {
		return 0, err
	}
	if end == 0 {
		return 0, fmt.Errorf("%s: %w", path, errNoData)
	}
	off := rng.Int64N(end)
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		return 0, err
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, off); err != nil {
		return 0, err
	}
	return off, f.Close()
}

// dataEnd returns the offset just past f's last non-zero byte. badger's
// files are sparse and preallocated (a value log of 2 GiB may hold a few
// KiB), so it skips the holes (SEEK_DATA, SEEK_HOLE) and reads only the
// last stretch of data, backwards.
func dataEnd(f *os.File) (int64, error) {
	const seekData, seekHole = 3, 4
	var start, stop int64 // the last stretch of data
	for pos := int64(0); ; {
		d, err := f.Seek(pos, seekData)
		if err != nil {
			break // ENXIO: no data after pos
		}
		h, err := f.Seek(d, seekHole)
		if err != nil {
			return 0, err
		}
		start, stop, pos = d, h, h
	}
	buf := make([]byte, 1<<20)
	for stop > start {
		n := min(int64(len(buf)), stop-start)
		if _, err := f.ReadAt(buf[:n], stop-n); err != nil {
			return 0, err
		}
		if i := bytes.LastIndexFunc(buf[:n], func(r rune) bool { return r != 0 }); i >= 0 {
			return stop - n + int64(i) + 1, nil
		}
		stop -= n
	}
	return 0, nil
}

// copyTree copies the folder src to dst, sparse files as sparse files.
func copyTree(src, dst string) error {
	if out, err := exec.Command("cp", "-a", "--sparse=always", src, dst).CombinedOutput(); err != nil {
		return fmt.Errorf("cp %s: %v: %s", src, err, out)
	}
	return nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
