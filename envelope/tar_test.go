package envelope_test

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"kurier.dev/kurier/envelope"
)

// TestHostile_CheckTarEnd: after a tar file's end only zero bytes pass,
// as many as a record's padding; a byte other than zero anywhere, more
// zeros than the bound, or a failing reader are refused.
func TestHostile_CheckTarEnd(t *testing.T) {
	for name, tc := range map[string]struct {
		r    io.Reader
		want string // "" to pass
	}{
		"nothing":                {r: bytes.NewReader(nil)},
		"tarfile's record":       {r: bytes.NewReader(make([]byte, 10240-2048))},
		"up to the bound":        {r: bytes.NewReader(make([]byte, 1<<16))},
		"one byte at the end":    {r: bytes.NewReader(append(make([]byte, 40000), 'x')), want: "a byte other than zero 40000 bytes after its end"},
		"a second tar file":      {r: strings.NewReader("anlage.pdf\x00"), want: "a byte other than zero 0 bytes after its end"},
		"zeros beyond the bound": {r: bytes.NewReader(make([]byte, 1<<16+1)), want: "more than 65536 bytes after its end"},
		"one byte at a time":     {r: iotest.OneByteReader(bytes.NewReader([]byte{0, 0, 7})), want: "zero 2 bytes"},
		"the reader fails":       {r: iotest.ErrReader(errors.New("signed data damaged")), want: "signed data damaged"},
	} {
		t.Run(name, func(t *testing.T) {
			err := envelope.CheckTarEnd(tc.r, 1<<16)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("CheckTarEnd: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("CheckTarEnd = %v, want an error containing %q", err, tc.want)
			}
			if strings.Contains(name, "fails") == errors.Is(err, envelope.ErrTarTrailing) {
				t.Errorf("CheckTarEnd = %v: ErrTarTrailing only for data after the end", err)
			}
		})
	}
}
