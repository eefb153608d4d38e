// Package canonjson writes and reads the one JSON form that Kurier signs:
// struct fields in declaration order, no white space, no HTML escaping, no
// trailing newline. Signed JSON (envelopes, evidence statements) is accepted
// only in exactly this form, so that signed bytes have one reading: readers
// decode with Unmarshal, marshal again and compare.
package canonjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"unicode/utf8"
)

// ErrTrailing is returned for input with data after the JSON value.
var ErrTrailing = errors.New("trailing data after the JSON value")

// Marshal returns the canonical JSON of v.
func Marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// Unmarshal decodes exactly one JSON value from b into v, refusing unknown
// fields and anything after the value. It does not check canonical form;
// callers compare Marshal's output with b.
//
// Its errors are at most about 100 bytes long: decoding errors quote the
// input (an unknown key, a malformed time), which comes from others, and
// callers pass them on to them.
func Unmarshal(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return bounded(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return ErrTrailing
	}
	return nil
}

// maxErrorLen is how much of a decoding error's text Unmarshal keeps.
const maxErrorLen = 100

// bounded returns err, or an error with its text cut to maxErrorLen bytes
// (at a character boundary, marked with "…") if it is longer. The json
// package escapes what it quotes, so cutting is all that is needed.
func bounded(err error) error {
	msg := err.Error()
	if len(msg) <= maxErrorLen {
		return err
	}
	cut := maxErrorLen
	for cut > 0 && !utf8.RuneStart(msg[cut]) {
		cut--
	}
	return errors.New(msg[:cut] + "…")
}
