// Package address parses and validates participant addresses and node
// domains, the names under which Kurier routes messages.
//
// An address is local@domain, as in poststelle@kreis-soest.example. Kurier
// accepts a deliberately narrow form (ASCII letters, digits and a few
// punctuation characters, lowercase domains) so that an address compares
// equal byte for byte wherever it appears: in a certificate, an envelope, an
// evidence statement and a store key.
package address

import (
	"errors"
	"fmt"
	"strings"
)

// Limits on the length of an address and its parts, after RFC 5321.
const (
	MaxLocalLen  = 64
	MaxDomainLen = 253
	MaxLen       = MaxLocalLen + 1 + MaxDomainLen
)

// ErrInvalid is returned for any address or domain that is not in the
// accepted form; the wrapped message says what is wrong.
var ErrInvalid = errors.New("invalid address")

// Address is a parsed participant address.
type Address struct {
	Local  string
	Domain string
}

// String returns the address as local@domain.
func (a Address) String() string { return a.Local + "@" + a.Domain }

// Parse checks s and splits it into its parts. It does not lowercase or
// otherwise normalise: an address in another form is refused, so that two
// spellings of one mailbox cannot exist.
//
// Errors quote at most the first 64 characters of s (%.64q): addresses come
// from others, and refusals are passed on to them.
func Parse(s string) (Address, error) {
	if len(s) > MaxLen {
		return Address{}, fmt.Errorf("%w: %d bytes, at most %d", ErrInvalid, len(s), MaxLen)
	}
	local, domain, ok := strings.Cut(s, "@")
	if !ok {
		return Address{}, fmt.Errorf("%w: %.64q has no @", ErrInvalid, s)
	}
	if err := checkLocal(local); err != nil {
		return Address{}, fmt.Errorf("%w: %.64q: %v", ErrInvalid, s, err)
	}
	if err := CheckDomain(domain); err != nil {
		return Address{}, fmt.Errorf("parse %.64q: %w", s, err)
	}
	return Address{Local: local, Domain: domain}, nil
}

// Valid reports whether s is an address in the accepted form.
func Valid(s string) bool {
	_, err := Parse(s)
	return err == nil
}

// DomainOf returns the domain part of an address, or "" if s has no @.
func DomainOf(s string) string {
	_, d, _ := strings.Cut(s, "@")
	return d
}

func checkLocal(local string) error {
	if local == "" {
		return errors.New("empty local part")
	}
	if len(local) > MaxLocalLen {
		return fmt.Errorf("local part longer than %d bytes", MaxLocalLen)
	}
	if local[0] == '.' || local[len(local)-1] == '.' || strings.Contains(local, "..") {
		return errors.New("local part has a leading, trailing or double dot")
	}
	for _, c := range []byte(local) {
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '.', c == '-', c == '_', c == '+':
		default:
			return fmt.Errorf("local part has character %q (allowed: a-z 0-9 . - _ +)", c)
		}
	}
	return nil
}

// CheckDomain checks that d is a lowercase DNS name of at least two labels.
func CheckDomain(d string) error {
	if d == "" {
		return fmt.Errorf("%w: empty domain", ErrInvalid)
	}
	if len(d) > MaxDomainLen {
		return fmt.Errorf("%w: domain longer than %d bytes", ErrInvalid, MaxDomainLen)
	}
	labels := strings.Split(d, ".")
	if len(labels) < 2 {
		return fmt.Errorf("%w: domain %.64q needs at least two labels", ErrInvalid, d)
	}
	for _, l := range labels {
		if l == "" || len(l) > 63 {
			return fmt.Errorf("%w: domain %.64q has an empty or over-long label", ErrInvalid, d)
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return fmt.Errorf("%w: domain %.64q has a label starting or ending with -", ErrInvalid, d)
		}
		for _, c := range []byte(l) {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("%w: domain %.64q has character %q (allowed: a-z 0-9 -)", ErrInvalid, d, c)
			}
		}
	}
	return nil
}
