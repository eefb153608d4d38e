package storetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"testing"
	"time"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/broker/node"
)

// pieces yields what r holds at most n bytes per Read, as a network
// stream does.
type pieces struct {
	r io.Reader
	n int
}

func (p *pieces) Read(b []byte) (int, error) { return p.r.Read(b[:min(len(b), p.n)]) }

// endless yields zeros until it has yielded limit bytes, then errEndless:
// a sender that does not stop.
type endless struct {
	read, limit int64
}

var errEndless = errors.New("the endless reader was read to its end")

func (e *endless) Read(b []byte) (int, error) {
	if e.read >= e.limit {
		return 0, errEndless
	}
	n := int(min(int64(len(b)), e.limit-e.read))
	clear(b[:n])
	e.read += int64(n)
	return n, nil
}

// readBlob reads a blob whole, 1000 bytes at a time.
func readBlob(t *testing.T, st node.Store, id string) []byte {
	t.Helper()
	rc, err := st.OpenBlob(context.Background(), id)
	if err != nil {
		t.Fatalf("OpenBlob(%s): %v", id, err)
	}
	defer rc.Close()
	var got bytes.Buffer
	if _, err := io.CopyBuffer(&got, struct{ io.Reader }{rc}, make([]byte, 1000)); err != nil {
		t.Fatalf("read blob %s: %v", id, err)
	}
	return got.Bytes()
}

func testBlob(t *testing.T, open Open) {
	ctx := context.Background()
	st := open(t)
	ids := map[string]bool{}
	// Up to a multi-MiB payload, streamed in pieces of an odd size; each
	// exactly at its limit, which is allowed.
	for _, size := range []int{0, 1, 100, 64<<10 + 1, 3<<20 + 17} {
		data := random(t, size)
		blob, err := st.WriteBlob(ctx, &pieces{bytes.NewReader(data), 4093}, int64(size))
		if err != nil {
			t.Fatalf("WriteBlob of %d bytes: %v", size, err)
		}
		if blob.Size != int64(size) || blob.SHA256 != sha256.Sum256(data) || blob.ID == "" {
			t.Errorf("WriteBlob = id %q, size %d, SHA-256 %x; want size %d, SHA-256 %x", blob.ID, blob.Size, blob.SHA256, size, sha256.Sum256(data))
		}
		if ids[blob.ID] {
			t.Errorf("WriteBlob gave blob id %s twice", blob.ID)
		}
		ids[blob.ID] = true
		if got := readBlob(t, st, blob.ID); !bytes.Equal(got, data) {
			t.Errorf("blob of %d bytes read back as %d other bytes", size, len(got))
		}
	}
}

func testBlobTooLarge(t *testing.T, open Open) {
	ctx := context.Background()
	st := open(t)
	if _, err := st.WriteBlob(ctx, bytes.NewReader(random(t, 1001)), 1000); !errors.Is(err, broker.ErrTooLarge) {
		t.Errorf("WriteBlob of 1001 bytes, at most 1000: %v, want ErrTooLarge", err)
	}
	// A sender that streams without end is cut off soon after the limit.
	const max = 1 << 20
	r := &endless{limit: 64 << 20}
	if _, err := st.WriteBlob(ctx, r, max); !errors.Is(err, broker.ErrTooLarge) {
		t.Errorf("WriteBlob of an endless stream, at most %d bytes: %v, want ErrTooLarge", max, err)
	}
	if r.read > max+16<<20 {
		t.Errorf("WriteBlob read %d bytes of an endless stream with a limit of %d", r.read, max)
	}
}

// failing yields n bytes of zeros in pieces, then err: an upload that
// breaks off.
type failing struct {
	n   int
	err error
}

func (f *failing) Read(b []byte) (int, error) {
	if f.n == 0 {
		return 0, f.err
	}
	k := min(len(b), f.n, 10_000)
	clear(b[:k])
	f.n -= k
	return k, nil
}

func testBlobReaderFails(t *testing.T, open Open) {
	ctx := context.Background()
	st := open(t)
	broken := errors.New("stream broken off")
	for _, n := range []int{0, 100, 3 << 20} {
		if _, err := st.WriteBlob(ctx, &failing{n, broken}, 8<<20); !errors.Is(err, broken) {
			t.Errorf("WriteBlob of an upload broken off after %d bytes: %v, want the reader's error", n, err)
		}
	}
	// The store takes the next upload as if nothing had happened.
	data := random(t, 1000)
	blob, err := st.WriteBlob(ctx, bytes.NewReader(data), 1000)
	if err != nil {
		t.Fatalf("WriteBlob after broken uploads: %v", err)
	}
	if got := readBlob(t, st, blob.ID); !bytes.Equal(got, data) {
		t.Error("blob after broken uploads read back as other bytes")
	}
}

func testBlobNotFound(t *testing.T, open Open) {
	ctx := context.Background()
	st := open(t)
	blob, err := st.WriteBlob(ctx, bytes.NewReader(random(t, 10)), 10)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteBlob(ctx, blob.ID); err != nil {
		t.Fatalf("DeleteBlob: %v", err)
	}
	for _, id := range []string{blob.ID, "", "no-such-blob", "../../etc/passwd"} {
		rc, err := st.OpenBlob(ctx, id)
		if !errors.Is(err, broker.ErrNotFound) {
			t.Errorf("OpenBlob(%q): %v, want ErrNotFound", id, err)
		}
		if err == nil {
			rc.Close()
		}
	}
}

func testDeleteBlob(t *testing.T, open Open) {
	ctx := context.Background()
	st := open(t)
	m := Create(t, st, Agency, t0, Court)
	free, err := st.WriteBlob(ctx, bytes.NewReader(random(t, 300<<10)), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	for _, again := range []string{"", " again"} {
		if err := st.DeleteBlob(ctx, free.ID); err != nil {
			t.Errorf("DeleteBlob%s: %v", again, err)
		}
	}
	if _, err := st.OpenBlob(ctx, free.ID); !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("OpenBlob of a deleted blob: %v, want ErrNotFound", err)
	}

	// A stored message's payload stays.
	if err := st.DeleteBlob(ctx, m.Msg.Blob); err == nil {
		t.Errorf("DeleteBlob of a stored message's payload succeeded")
	}
	readBlob(t, st, m.Msg.Blob)

	// A message whose payload was deleted is refused.
	g := build(t, st, Agency, t0.Add(time.Second), Court)
	if err := st.DeleteBlob(ctx, g.Msg.Blob); err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateMessage(ctx, g.Msg, g.Copies, g.Evidence, nil); !unfitBlob(err) {
		t.Errorf("CreateMessage with a deleted payload: %v, want ErrNotFound or ErrInvalid", err)
	}
}

// unfitBlob reports whether err refuses a blob not fit for a message.
func unfitBlob(err error) bool {
	return errors.Is(err, broker.ErrNotFound) || errors.Is(err, broker.ErrInvalid)
}
