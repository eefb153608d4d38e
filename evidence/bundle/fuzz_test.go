package bundle_test

import (
	"bytes"
	"testing"

	"kurier.dev/kurier/evidence/bundle"
)

// FuzzRead: any bytes either read as a bundle that writes back and reads
// again the same, or are refused with ErrFormat; never a panic.
func FuzzRead(f *testing.F) {
	f.Add(fx.zip)
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
		if _, err := bundle.Read(bytes.NewReader(buf.Bytes()), int64(buf.Len())); err != nil {
			t.Fatalf("a written bundle does not read: %v", err)
		}
	})
}

// FuzzParseIndex: what ParseIndex accepts marshals to the same bytes.
func FuzzParseIndex(f *testing.F) {
	if b, err := validIndex().Marshal(); err == nil {
		f.Add(b)
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
