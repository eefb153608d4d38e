package cms

import (
	"bytes"
	"errors"
	"fmt"
	"io"
)

// parse caps der at max bytes and reads it as SignedData: in place with
// cryptobyte when it is DER, and with the BER reader otherwise.
func parse(der []byte, max int) (sd *signedData, err error) {
	err = protect(func() error {
		sd, err = parseSigned(der, max)
		return err
	})
	if err != nil && !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrTooLarge) && !errors.Is(err, ErrNoSigner) {
		err = fmt.Errorf("%w: %w", ErrMalformed, err) // a recovered panic
	}
	return sd, err
}

func parseSigned(der []byte, max int) (*signedData, error) {
	if len(der) > max {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrTooLarge, len(der), max)
	}
	if len(der) == 0 {
		return nil, fmt.Errorf("%w: no input", ErrMalformed)
	}
	sd, err := parseSignedDER(der)
	var nd notDER
	if !errors.As(err, &nd) {
		return sd, err
	}
	b := newBERReader(bytes.NewReader(der))
	sd, content, err := parseSignedBER(b)
	if err != nil {
		return nil, err
	}
	if content != nil {
		// The input is capped, and so is what it holds.
		if sd.content, err = io.ReadAll(content); err != nil {
			return nil, err
		}
	}
	if err := finishSignedBER(b, sd); err != nil {
		return nil, err
	}
	return sd, nil
}

// protect runs f, returning a panic inside it as an error: one crafted
// message must not take a node or a client down, whatever parser bug it
// finds (Decrypt runs its parser and the key unwrapping under it).
func protect(f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic on crafted input: %v", r)
		}
	}()
	return f()
}
