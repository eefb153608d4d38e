package envelope

import (
	"errors"
	"fmt"
	"io"
)

// ErrTarTrailing is wrapped by CheckTarEnd when something other than zero
// bytes follows the end of a payload's tar file.
var ErrTarTrailing = errors.New("data after the end of the tar file")

// CheckTarEnd reads what follows the end of a payload's tar file of
// documents from r, which a tar.Reader over r has just reported with
// io.EOF, and refuses anything but zero bytes: the end-of-archive blocks
// and the padding to a record size (Python's tarfile pads to 10240 bytes)
// are zeros, and the tar file is all the signed content holds, nothing
// more. At most max bytes are read; more is refused too.
//
// Security-sensitive: bytes after the end would be covered by the sender's
// signature and by no document digest, a place to hide a second archive
// that tools other than Kurier might show.
func CheckTarEnd(r io.Reader, max int64) error {
	buf := make([]byte, 32<<10)
	var n int64
	for {
		k, err := r.Read(buf)
		for i, c := range buf[:k] {
			if c != 0 {
				return fmt.Errorf("%w: a byte other than zero %d bytes after its end", ErrTarTrailing, n+int64(i))
			}
		}
		if n += int64(k); n > max {
			return fmt.Errorf("%w: more than %d bytes after its end", ErrTarTrailing, max)
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
