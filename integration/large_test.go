package integration

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// TestOneNode_LargePayload sends and fetches large documents and checks
// that the node's memory does not grow with the payload: the node streams
// payloads between the wire and its store in chunks. The first transfer
// warms the store's tables and caches up; then a 16 MiB and a 160 MiB
// transfer must leave the node's memory about the same.
func TestOneNode_LargePayload(t *testing.T) {
	if testing.Short() {
		t.Skip("large payloads take a while")
	}
	if runtime.GOOS != "linux" {
		t.Skip("reads the node's memory from /proc")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	dir := t.TempDir()
	// A tight GC target keeps the node's heap close to what it holds live,
	// so that its memory shows what it keeps rather than its garbage.
	n := startDevNode(t, filepath.Join(dir, "dev"), "GOGC=20")
	agency, court := n.identity("agency"), n.identity("court")

	roundTrip := func(name string, size int64) int64 {
		t.Helper()
		path := filepath.Join(dir, name)
		want := writeRandom(t, path, size)
		var sent struct{ ID string }
		if err := n.runJSON(ctx, agency, &sent, "send", "--to", courtAddr, "--subject", name, path); err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(dir, "out-"+name)
		if _, err := n.run(ctx, court, "fetch", sent.ID, "-o", out); err != nil {
			t.Fatal(err)
		}
		if got := hashFile(t, filepath.Join(out, name)); got != want {
			t.Fatalf("fetched %s differs from the sent one", name)
		}
		os.Remove(path)
		os.RemoveAll(out)
		rss, err := n.anonRSS()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("node anonymous memory after %d MiB: %d MiB", size>>20, rss>>20)
		return rss
	}
	roundTrip("warm-up.bin", 96<<20)
	small := roundTrip("akte-16.bin", 16<<20)
	large := roundTrip("akte-160.bin", 160<<20)
	// Had the node buffered payloads, the large one would have added at
	// least 144 MiB.
	if grew := large - small; grew > 32<<20 {
		t.Fatalf("node memory grew by %d MiB from a 16 to a 160 MiB payload", grew>>20)
	}
}

func writeRandom(t *testing.T, path string, size int64) [32]byte {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyN(io.MultiWriter(f, h), rand.Reader, size); err != nil {
		t.Fatal(err)
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum
}

func hashFile(t *testing.T, path string) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum
}
