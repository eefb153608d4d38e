package tlog

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/mod/sumdb/note"
)

// Checkpoint is a log's tree head: its size and root hash, named by the
// log's origin.
type Checkpoint struct {
	Origin string
	Size   uint64
	Root   []byte // HashSize bytes
}

// Marshal returns the checkpoint's body, the signed text of a signed note:
// "origin\nsize\nbase64(root)\n". It does not check c; Sign does.
func (c Checkpoint) Marshal() []byte {
	b := make([]byte, 0, len(c.Origin)+1+20+1+base64.StdEncoding.EncodedLen(len(c.Root))+1)
	b = append(b, c.Origin...)
	b = append(b, '\n')
	b = strconv.AppendUint(b, c.Size, 10)
	b = append(b, '\n')
	b = base64.StdEncoding.AppendEncode(b, c.Root)
	return append(b, '\n')
}

// check reports whether c can be written and read back unchanged.
func (c Checkpoint) check() error {
	if err := checkOrigin(c.Origin); err != nil {
		return err
	}
	if len(c.Root) != HashSize {
		return fmt.Errorf("%w: root hash is %d bytes, want %d", ErrMalformed, len(c.Root), HashSize)
	}
	return nil
}

// checkOrigin accepts any non-empty line of valid UTF-8 without control
// characters. (Open later requires it to be a key name.)
func checkOrigin(o string) error {
	switch {
	case o == "":
		return fmt.Errorf("%w: empty origin", ErrMalformed)
	case !utf8.ValidString(o):
		return fmt.Errorf("%w: origin is not UTF-8", ErrMalformed)
	case strings.ContainsFunc(o, unicode.IsControl):
		return fmt.Errorf("%w: origin contains a control character", ErrMalformed)
	}
	return nil
}

// ParseCheckpoint parses a checkpoint body (the text of a signed note,
// without signatures). It is strict: exactly three lines, each ending in a
// newline; a size in decimal without sign or leading zeros; a root hash of
// HashSize bytes in canonical standard base64. So Marshal returns the bytes
// it parsed. Errors wrap ErrMalformed.
func ParseCheckpoint(body []byte) (Checkpoint, error) {
	if len(body) > MaxCheckpointSize {
		return Checkpoint{}, fmt.Errorf("%w: %d bytes, at most %d", ErrMalformed, len(body), MaxCheckpointSize)
	}
	rest, ok := bytes.CutSuffix(body, []byte("\n"))
	if !ok {
		return Checkpoint{}, fmt.Errorf("%w: does not end with a newline", ErrMalformed)
	}
	lines := strings.Split(string(rest), "\n")
	if len(lines) < 3 {
		return Checkpoint{}, fmt.Errorf("%w: %d lines, want origin, size and root hash", ErrMalformed, len(lines))
	}
	if len(lines) > 3 {
		return Checkpoint{}, fmt.Errorf("%w: extension lines are not accepted", ErrMalformed)
	}
	c := Checkpoint{Origin: lines[0]}
	if err := checkOrigin(c.Origin); err != nil {
		return Checkpoint{}, err
	}
	size, err := parseSize(lines[1])
	if err != nil {
		return Checkpoint{}, err
	}
	c.Size = size
	root, err := base64.StdEncoding.Strict().DecodeString(lines[2])
	if err != nil || len(root) != HashSize || base64.StdEncoding.EncodeToString(root) != lines[2] {
		return Checkpoint{}, fmt.Errorf("%w: root hash is not %d bytes in standard base64", ErrMalformed, HashSize)
	}
	c.Root = root
	return c, nil
}

func parseSize(s string) (uint64, error) {
	for _, r := range s {
		if r < '0' || r > '9' {
			return 0, fmt.Errorf("%w: tree size %q is not a decimal number", ErrMalformed, s)
		}
	}
	if s == "" || len(s) > 1 && s[0] == '0' {
		return 0, fmt.Errorf("%w: tree size %q is not a decimal number without leading zeros", ErrMalformed, s)
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: tree size %q: out of range", ErrMalformed, s)
	}
	return n, nil
}

// GenerateKey returns a new Ed25519 signing key and its verifier key in the
// signed note encodings ("PRIVATE+KEY+name+hash+key", "name+hash+key"). The
// name must be the log's origin (see Origin). Security: skey is the node's
// log signing key; keep it as secret as the node's private key.
func GenerateKey(name string) (skey, vkey string, err error) {
	skey, vkey, err = note.GenerateKey(rand.Reader, name)
	if err != nil {
		return "", "", fmt.Errorf("generate checkpoint key %q: %w", name, err)
	}
	return skey, vkey, nil
}

// Sign signs c with skey and returns the signed note. The key's name must
// be c.Origin. Security: a log must never sign two checkpoints that are not
// consistent with each other; the caller signs only tree heads its own
// store computed.
func Sign(c Checkpoint, skey string) ([]byte, error) {
	if err := c.check(); err != nil {
		return nil, fmt.Errorf("sign checkpoint: %w", err)
	}
	s, err := note.NewSigner(skey)
	if err != nil {
		return nil, fmt.Errorf("sign checkpoint: signing key: %w", err)
	}
	if s.Name() != c.Origin {
		return nil, fmt.Errorf("sign checkpoint: key %q cannot sign for origin %q", s.Name(), c.Origin)
	}
	signed, err := note.Sign(&note.Note{Text: string(c.Marshal())}, s)
	if err != nil {
		return nil, fmt.Errorf("sign checkpoint: %w", err)
	}
	return signed, nil
}

// Open verifies a signed checkpoint with the verifier key vkey and returns
// the checkpoint. It returns an error wrapping ErrMalformed if the note or
// its body does not parse (or is larger than MaxCheckpointSize), and
// ErrSignature if the note bears no valid signature by vkey or if its
// origin is not vkey's name. Other signatures are ignored.
//
// Security: Open is what makes a checkpoint evidence of the log's state;
// vkey must come from a trusted source, not from the same file.
func Open(signed []byte, vkey string) (Checkpoint, error) {
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("open checkpoint: verifier key: %w", err)
	}
	if len(signed) > MaxCheckpointSize {
		return Checkpoint{}, fmt.Errorf("open checkpoint: %w: %d bytes, at most %d", ErrMalformed, len(signed), MaxCheckpointSize)
	}
	n, err := note.Open(signed, note.VerifierList(v))
	if err != nil {
		var unverified *note.UnverifiedNoteError
		var invalid *note.InvalidSignatureError
		switch {
		case errors.As(err, &unverified):
			return Checkpoint{}, fmt.Errorf("open checkpoint: %w: not signed by %s", ErrSignature, v.Name())
		case errors.As(err, &invalid):
			return Checkpoint{}, fmt.Errorf("open checkpoint: %w: signature by %s does not match the checkpoint", ErrSignature, v.Name())
		}
		return Checkpoint{}, fmt.Errorf("open checkpoint: %w: %v", ErrMalformed, err)
	}
	c, err := ParseCheckpoint([]byte(n.Text))
	if err != nil {
		return Checkpoint{}, fmt.Errorf("open checkpoint: %w", err)
	}
	if c.Origin != v.Name() {
		return Checkpoint{}, fmt.Errorf("open checkpoint: %w: origin %q is not the key's name %q", ErrSignature, c.Origin, v.Name())
	}
	return c, nil
}

// VerifierKey returns the signed-note verifier key that matches the
// private key skey (as GenerateKey returns them), so that a node needs to
// be configured with its private key only.
func VerifierKey(skey string) (string, error) {
	// The format is note's: PRIVATE+KEY+<name>+<hash>+<base64(alg || seed)>.
	rest, ok := strings.CutPrefix(skey, "PRIVATE+KEY+")
	if !ok {
		return "", errors.New("checkpoint key: not a signed-note private key")
	}
	// Names cannot hold '+', the base64 key can.
	name, rest, ok1 := strings.Cut(rest, "+")
	_, b64, ok2 := strings.Cut(rest, "+")
	if !ok1 || !ok2 {
		return "", errors.New("checkpoint key: malformed private key")
	}
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(raw) != 1+ed25519.SeedSize || raw[0] != algEd25519 {
		return "", errors.New("checkpoint key: not an Ed25519 signed-note private key")
	}
	pub := ed25519.NewKeyFromSeed(raw[1:]).Public().(ed25519.PublicKey)
	vkey, err := note.NewEd25519VerifierKey(name, pub)
	if err != nil {
		return "", fmt.Errorf("checkpoint key: %w", err)
	}
	// The derived key must be the one the private key signs for.
	s, err := note.NewSigner(skey)
	if err != nil {
		return "", fmt.Errorf("checkpoint key: %w", err)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil || v.KeyHash() != s.KeyHash() {
		return "", errors.New("checkpoint key: private key's hash does not match its key")
	}
	return vkey, nil
}

// algEd25519 is the signed-note algorithm byte for Ed25519.
const algEd25519 = 1

// PeekSize returns the tree size a signed checkpoint claims, WITHOUT
// VERIFYING its signature: only to know which consistency proof to ask a
// node for, which the verifier then checks against the opened checkpoint.
func PeekSize(signed []byte) (uint64, error) {
	if len(signed) > MaxCheckpointSize {
		return 0, fmt.Errorf("%w: %d bytes, at most %d", ErrMalformed, len(signed), MaxCheckpointSize)
	}
	body, _, ok := bytes.Cut(signed, []byte("\n\n"))
	if !ok {
		return 0, fmt.Errorf("%w: not a signed note", ErrMalformed)
	}
	c, err := ParseCheckpoint(append(body, '\n'))
	if err != nil {
		return 0, err
	}
	return c.Size, nil
}
