package cms

import (
	"fmt"

	"github.com/digitorus/pkcs7"
)

// parse caps, then parses der with pkcs7, turning a panic on crafted input
// into ErrMalformed.
func parse(der []byte, max int) (*pkcs7.PKCS7, error) {
	if max <= 0 {
		max = DefaultMaxSignedSize
	}
	if len(der) > max {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrTooLarge, len(der), max)
	}
	var p7 *pkcs7.PKCS7
	err := protect(func() (err error) {
		p7, err = pkcs7.Parse(der)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return p7, nil
}

// protect runs f, returning a panic inside it as an error: pkcs7 is not
// hardened against every crafted input, and one message must not take a
// node or a client down (Decrypt keeps it around its own parser as well).
func protect(f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic on crafted input: %v", r)
		}
	}()
	return f()
}
