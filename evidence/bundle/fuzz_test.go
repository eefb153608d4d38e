package bundle_test

import (
	"bytes"
	"testing"

	"kurier.dev/kurier/evidence/bundle"
)

// FuzzRead: any bytes either read as a bundle (of either version) that
// writes back and reads again, or are refused with ErrFormat; never a
// panic.
func FuzzRead(f *testing.F) {
	if fx.zip != nil { // not in a fuzzing worker, which runs no node
		f.Add(fx.zip)
		f.Add(write(f, withLogs(f)))
	}
	f.Add(readV1(f))
	f.Add([]byte("PK\x03\x04"))
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := bundle.Read(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			return
		}
		var buf bytes.Buffer
		if err := b.Write(&buf, written); err != nil {
			t.Fatalf("a bundle Read accepted does not write: %v", err)
		}
		again, err := bundle.Read(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
		if err != nil {
			t.Fatalf("a written bundle does not read: %v", err)
		}
		var buf2 bytes.Buffer
		if err := again.Write(&buf2, written); err != nil || !bytes.Equal(buf.Bytes(), buf2.Bytes()) {
			t.Fatalf("a written bundle read back writes other bytes (%v)", err)
		}
	})
}

// FuzzParseIndex: what ParseIndex accepts marshals to the same bytes.
func FuzzParseIndex(f *testing.F) {
	for _, ix := range []*bundle.Index{validIndex(), validIndexV1(), validIndexV2()} {
		if b, err := ix.Marshal(); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ix, err := bundle.ParseIndex(data)
		if err != nil {
			return
		}
		b, err := ix.Marshal()
		if err != nil || !bytes.Equal(b, data) {
			t.Fatalf("ParseIndex accepted %q, which marshals to %q (%v)", data, b, err)
		}
	})
}
