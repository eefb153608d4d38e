// Package envelope defines a message's routing data, the part of a message
// that nodes read: who sends what to whom, and the digest of the sealed
// payload they carry without opening it.
//
// The sender signs the envelope's bytes; nodes, recipients and auditors
// check that signature over exactly those bytes. To keep one meaning per
// signed byte string, an envelope is accepted only in its canonical form:
// the JSON that Marshal produces (fixed key order, no extra white space, no
// unknown or duplicate keys, UTC times). See docs/PROTOCOL.md.
//
// Three versions of the format are read. Version 3, which new envelopes
// use, lists each document's SHA-256 beside its name and size, so that the
// sender's signature over the envelope (and every evidence naming the
// envelope's digest) binds the documents themselves, not only the sealed
// payload. Version 2 has no document digests and is otherwise the same;
// it carries the time by which the message expires. Version 1 has no
// expiry either (the node applies its default). Each has exactly one
// canonical form: a version 1 envelope never has an "expires" key, versions
// 2 and 3 always have one; a version 3 file entry always has a "sha256"
// key, a version 1 or 2 file entry never.
package envelope

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"

	"kurier.dev/kurier/address"
	"kurier.dev/kurier/canonjson"
)

// Format versions. Version is the one to write new envelopes in; Version2
// and Version1 are still read, and written for an Envelope whose Version
// says so (old senders, tests).
const (
	Version  = 3
	Version2 = 2
	Version1 = 1
)

// Hard limits of the envelope format. A node may configure tighter limits
// (for example fewer recipients) but never looser ones.
const (
	MaxSize         = 256 << 10 // bytes of envelope JSON
	MaxRecipients   = 1000
	MaxFiles        = 1000
	MaxFileNameLen  = 255 // bytes
	MaxSubjectLen   = 1024
	MaxTypeLen      = 128
	MaxReferenceLen = 256
)

// ErrInvalid is returned for an envelope that breaks the format; the
// wrapped message names the field and the rule.
var ErrInvalid = errors.New("invalid envelope")

// Envelope is the routing data of one message. Field order and tags here
// are the canonical JSON form of the current version; envelopeV2 and
// envelopeV1 are the forms of the older ones.
type Envelope struct {
	Version   int       `json:"version"`
	ID        string    `json:"id"`
	From      string    `json:"from"`
	To        []string  `json:"to"`
	Subject   string    `json:"subject"`
	Type      string    `json:"type"`
	Reference string    `json:"reference"`
	Created   time.Time `json:"created"`
	// Expires is the time by which the message must have reached each
	// recipient's node, strictly after Created; required from version 2 on.
	// Version 1 envelopes have no expiry: Expires is zero, and the node
	// applies its default. A node may also cap Expires by its own maximum;
	// that is node policy, not part of the format.
	Expires time.Time `json:"expires"`
	// PayloadSHA256 is the lowercase hex SHA-256 of the sealed payload
	// (the CMS EnvelopedData bytes), PayloadSize its length in bytes.
	PayloadSHA256 string `json:"payload_sha256"`
	PayloadSize   int64  `json:"payload_size"`
	// Files lists the documents inside the sealed payload, so that nodes can
	// enforce limits and recipients can check that what they opened is what
	// was announced. Names, sizes and (version 3) digests are visible to
	// nodes, like the subject.
	Files []File `json:"files"`
}

// File names one document in the payload.
type File struct {
	Name string `json:"name"`
	Size int64  `json:"size"`
	// SHA256 is the lowercase hex SHA-256 of the document's bytes:
	// required from version 3 on, absent (empty) in versions 1 and 2.
	SHA256 string `json:"sha256"`
}

// fileV1 is the canonical form of a file entry in versions 1 and 2: File
// without sha256. It is frozen.
type fileV1 struct {
	Name string `json:"name"`
	Size int64  `json:"size"`
}

// envelopeV2 is the canonical form of version 2: Envelope whose files
// carry no sha256. It is frozen; new fields go into Envelope under a new
// version.
type envelopeV2 struct {
	Version       int       `json:"version"`
	ID            string    `json:"id"`
	From          string    `json:"from"`
	To            []string  `json:"to"`
	Subject       string    `json:"subject"`
	Type          string    `json:"type"`
	Reference     string    `json:"reference"`
	Created       time.Time `json:"created"`
	Expires       time.Time `json:"expires"`
	PayloadSHA256 string    `json:"payload_sha256"`
	PayloadSize   int64     `json:"payload_size"`
	Files         []fileV1  `json:"files"`
}

// envelopeV1 is the canonical form of version 1: version 2 without
// expires. It is frozen.
type envelopeV1 struct {
	Version       int       `json:"version"`
	ID            string    `json:"id"`
	From          string    `json:"from"`
	To            []string  `json:"to"`
	Subject       string    `json:"subject"`
	Type          string    `json:"type"`
	Reference     string    `json:"reference"`
	Created       time.Time `json:"created"`
	PayloadSHA256 string    `json:"payload_sha256"`
	PayloadSize   int64     `json:"payload_size"`
	Files         []fileV1  `json:"files"`
}

// NewID returns a fresh message id: a UUIDv7, so ids sort by creation time.
func NewID() (string, error) {
	id, err := uuid.NewV7()
	if err != nil {
		return "", fmt.Errorf("new message id: %w", err)
	}
	return id.String(), nil
}

// Marshal validates e and returns its canonical JSON form in the format
// version e.Version names, the bytes the sender signs.
func (e *Envelope) Marshal() ([]byte, error) {
	if err := e.Validate(); err != nil {
		return nil, err
	}
	c := *e
	c.Created = c.Created.UTC()
	c.Expires = c.Expires.UTC()
	var v any = &c
	switch c.Version {
	case Version2:
		v = &envelopeV2{
			Version: c.Version, ID: c.ID, From: c.From, To: c.To,
			Subject: c.Subject, Type: c.Type, Reference: c.Reference, Created: c.Created, Expires: c.Expires,
			PayloadSHA256: c.PayloadSHA256, PayloadSize: c.PayloadSize, Files: filesV1(c.Files),
		}
	case Version1:
		v = &envelopeV1{
			Version: c.Version, ID: c.ID, From: c.From, To: c.To,
			Subject: c.Subject, Type: c.Type, Reference: c.Reference, Created: c.Created,
			PayloadSHA256: c.PayloadSHA256, PayloadSize: c.PayloadSize, Files: filesV1(c.Files),
		}
	}
	b, err := canonjson.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("marshal envelope: %w", err)
	}
	return b, nil
}

// filesV1 returns files in the form of versions 1 and 2, which Validate
// has checked carry no digest.
func filesV1(files []File) []fileV1 {
	out := make([]fileV1, len(files))
	for i, f := range files {
		out[i] = fileV1{Name: f.Name, Size: f.Size}
	}
	return out
}

// Parse decodes and validates envelope bytes of any version. It accepts
// only the canonical form, so that the bytes a signature covers have
// exactly one reading: a version 1 envelope with an expires key, a
// version 2 or 3 envelope without one, a version 3 file entry without a
// sha256 key or a version 1 or 2 entry with one is refused.
//
// Security: nodes, recipients and auditors read signed envelopes only
// through Parse.
func Parse(b []byte) (*Envelope, error) {
	if len(b) > MaxSize {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrInvalid, len(b), MaxSize)
	}
	var e Envelope
	if err := canonjson.Unmarshal(b, &e); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	canon, err := e.Marshal()
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(canon, b) {
		return nil, fmt.Errorf("%w: not in canonical form (key order, white space, escaping or time zone differ from what Kurier writes)", ErrInvalid)
	}
	return &e, nil
}

// Digest returns the lowercase hex SHA-256 of envelope bytes, as evidence
// statements name them.
func Digest(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// Validate checks every field against the format's rules.
func (e *Envelope) Validate() error {
	switch e.Version {
	case Version, Version2:
	case Version1:
		if !e.Expires.IsZero() {
			return fmt.Errorf("%w: a version %d envelope has no expires; write version %d to set one", ErrInvalid, Version1, Version)
		}
	default:
		return fmt.Errorf("%w: version %d, want %d (or %d or %d)", ErrInvalid, e.Version, Version, Version2, Version1)
	}
	if err := CheckID(e.ID); err != nil {
		return err
	}
	if _, err := address.Parse(e.From); err != nil {
		return fmt.Errorf("%w: from: %v", ErrInvalid, err)
	}
	if len(e.To) == 0 {
		return fmt.Errorf("%w: no recipients", ErrInvalid)
	}
	if len(e.To) > MaxRecipients {
		return fmt.Errorf("%w: %d recipients, at most %d", ErrInvalid, len(e.To), MaxRecipients)
	}
	seen := make(map[string]bool, len(e.To))
	for _, to := range e.To {
		if _, err := address.Parse(to); err != nil {
			return fmt.Errorf("%w: to: %v", ErrInvalid, err)
		}
		if seen[to] {
			return fmt.Errorf("%w: recipient %s listed twice", ErrInvalid, to)
		}
		seen[to] = true
	}
	if err := CheckText("subject", e.Subject, MaxSubjectLen); err != nil {
		return err
	}
	if strings.TrimSpace(e.Subject) == "" {
		return fmt.Errorf("%w: subject is empty", ErrInvalid)
	}
	if err := CheckText("type", e.Type, MaxTypeLen); err != nil {
		return err
	}
	if err := CheckText("reference", e.Reference, MaxReferenceLen); err != nil {
		return err
	}
	if e.Created.IsZero() {
		return fmt.Errorf("%w: created time missing", ErrInvalid)
	}
	if e.Version != Version1 {
		if e.Expires.IsZero() {
			return fmt.Errorf("%w: expires time missing", ErrInvalid)
		}
		if !e.Expires.After(e.Created) {
			return fmt.Errorf("%w: expires %s is not after created %s", ErrInvalid,
				e.Expires.UTC().Format(time.RFC3339Nano), e.Created.UTC().Format(time.RFC3339Nano))
		}
	}
	if !IsDigest(e.PayloadSHA256) {
		return fmt.Errorf("%w: payload_sha256 must be 64 lowercase hex digits", ErrInvalid)
	}
	if e.PayloadSize <= 0 {
		return fmt.Errorf("%w: payload_size must be positive", ErrInvalid)
	}
	if len(e.Files) == 0 {
		return fmt.Errorf("%w: no files", ErrInvalid)
	}
	if len(e.Files) > MaxFiles {
		return fmt.Errorf("%w: %d files, at most %d", ErrInvalid, len(e.Files), MaxFiles)
	}
	names := make(map[string]bool, len(e.Files))
	for _, f := range e.Files {
		if err := CheckFileName(f.Name); err != nil {
			return err
		}
		if names[f.Name] {
			return fmt.Errorf("%w: file name %q listed twice", ErrInvalid, f.Name)
		}
		names[f.Name] = true
		if f.Size < 0 {
			return fmt.Errorf("%w: file %q has a negative size", ErrInvalid, f.Name)
		}
		switch {
		case e.Version < Version && f.SHA256 != "":
			return fmt.Errorf("%w: file %s has a sha256, which a version %d envelope does not carry; write version %d", ErrInvalid, Quote(f.Name), e.Version, Version)
		case e.Version >= Version && !IsDigest(f.SHA256):
			return fmt.Errorf("%w: file %s: sha256 must be 64 lowercase hex digits", ErrInvalid, Quote(f.Name))
		}
	}
	return nil
}

// IsDigest reports whether s is a SHA-256 as the envelope writes one: 64
// lowercase hex digits.
func IsDigest(s string) bool {
	if len(s) != 2*sha256.Size {
		return false
	}
	for _, c := range []byte(s) {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// CheckID checks that id is a message id in canonical form: a lowercase
// UUIDv7.
func CheckID(id string) error {
	u, err := uuid.Parse(id)
	if err != nil || u.String() != id {
		return &invalidID{fmt.Sprintf("%s is not a lowercase UUID", Quote(id))}
	}
	if u.Version() != 7 {
		return &invalidID{fmt.Sprintf("%s is a version %d UUID, want version 7", id, u.Version())}
	}
	return nil
}

// ErrInvalidID is wrapped by CheckID's errors: the id given is no message
// id. They wrap ErrInvalid too, as an envelope with such an id is invalid,
// but say "invalid message id", which is what a caller that typed one
// needs to read.
var ErrInvalidID = errors.New("invalid message id")

// invalidID is CheckID's error.
type invalidID struct{ detail string }

func (e *invalidID) Error() string { return ErrInvalidID.Error() + ": " + e.detail }

// Is makes the error match ErrInvalidID and ErrInvalid.
func (e *invalidID) Is(target error) bool { return target == ErrInvalidID || target == ErrInvalid }

// CheckFileName checks that name can be written as one file on any common
// file system: no path separators, no control characters, not "." or "..",
// at most MaxFileNameLen bytes of UTF-8.
func CheckFileName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty file name", ErrInvalid)
	case len(name) > MaxFileNameLen:
		return fmt.Errorf("%w: file name %s is %d bytes, at most %d", ErrInvalid, Quote(name), len(name), MaxFileNameLen)
	case !utf8.ValidString(name):
		return fmt.Errorf("%w: file name %q is not UTF-8", ErrInvalid, name)
	case name == "." || name == "..":
		return fmt.Errorf("%w: file name %q is not allowed", ErrInvalid, name)
	case strings.ContainsAny(name, `/\`):
		return fmt.Errorf("%w: file name %q contains a path separator", ErrInvalid, name)
	}
	if r, ok := hostileRune(name); ok {
		return fmt.Errorf("%w: file name %s contains %s", ErrInvalid, Quote(name), describeRune(r))
	}
	return nil
}

// CheckText checks a text field that people are shown (subject, type,
// reference): at most max bytes of UTF-8, without control or bidirectional
// control characters. field names it in the error.
func CheckText(field, s string, max int) error {
	if len(s) > max {
		return fmt.Errorf("%w: %s is %d bytes, at most %d", ErrInvalid, field, len(s), max)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%w: %s is not UTF-8", ErrInvalid, field)
	}
	if r, ok := hostileRune(s); ok {
		return fmt.Errorf("%w: %s contains %s", ErrInvalid, field, describeRune(r))
	}
	return nil
}

// Hostile reports whether r could make text shown to a person say
// something else than it does: a C0 or C1 control character (or DEL),
// which terminals obey, or a bidirectional embedding, override or isolate
// (U+202A–U+202E, U+2066–U+2069), which reorders what follows it
// ("rechnung\u202Efdp.exe" shows as "rechnungexe.pdf"). Envelopes refuse
// such characters; tools that print others' text escape them.
func Hostile(r rune) bool {
	return r < 0x20 || r == 0x7f || r >= 0x80 && r <= 0x9f ||
		r >= 0x202a && r <= 0x202e || r >= 0x2066 && r <= 0x2069
}

// Printable returns text that others control (subjects, file names,
// reasons, what a forged file claims) fit to be shown to a person:
// control characters, bidirectional embeddings, overrides and isolates,
// every other character that does not print (direction marks, line
// separators, zero-width characters) written as \uXXXX escapes, and
// invalid UTF-8 as \xXX, so that a person sees them for what they are.
func Printable(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(&b, "\\x%02x", s[i])
		case Hostile(r) || !unicode.IsPrint(r):
			fmt.Fprintf(&b, "\\u%04x", r)
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

// hostileRune returns the first character of s that Hostile reports.
func hostileRune(s string) (rune, bool) {
	for _, r := range s {
		if Hostile(r) {
			return r, true
		}
	}
	return 0, false
}

func describeRune(r rune) string {
	if r >= 0x202a {
		return fmt.Sprintf("U+%04X, a bidirectional control character", r)
	}
	return fmt.Sprintf("U+%04X, a control character", r)
}

// maxQuote is how much of someone else's text an error message quotes.
const maxQuote = 64

// Quote returns s as an error message quotes text that someone else sent:
// at most its first 64 bytes, cut at a character boundary and followed by
// "…" when cut, in Go quotes with every character that is not printable
// escaped (which includes all that Hostile reports, and bytes that are not
// UTF-8). So a message never grows with its input and never shows
// something else than it says.
func Quote(s string) string {
	if len(s) <= maxQuote {
		return strconv.Quote(s)
	}
	cut := maxQuote
	for i := 0; i < utf8.UTFMax && cut > 0 && !utf8.RuneStart(s[cut]); i++ {
		cut--
	}
	return strconv.Quote(s[:cut]) + "…"
}
