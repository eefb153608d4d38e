package bundle

import (
	"bytes"
	"fmt"
	"time"

	"kurier.dev/kurier/address"
	"kurier.dev/kurier/canonjson"
	"kurier.dev/kurier/envelope"
	"kurier.dev/kurier/evidence"
	"kurier.dev/kurier/tlog"
)

// IndexVersion is the index format version this package writes.
const IndexVersion = 1

// maxIndexSize bounds an index's JSON: MaxEvidence digests (67 bytes each
// with quotes and comma, 67 KiB in all) and a key.
const maxIndexSize = 96 << 10

// Index is the node's signed statement about one export: which evidence it
// holds for a message as of a tree size of its log, and the key that signs
// that log's checkpoints. Signed with the node's certificate, it binds the
// log key to the federation's PKI, so a verifier needs only the CA
// certificate; and because it lists every evidence, a bundle that lost or
// reordered one no longer matches it.
type Index struct {
	Version     int
	MessageID   string
	RequestedBy string    // the participant who asked for the export
	Time        time.Time // when the node signed the index
	Origin      string    // the log's origin, tlog.Origin of the node's domain
	LogKey      string    // the log's signed-note verifier key
	TreeSize    uint64    // the size of the checkpoint in the bundle
	Evidence    []string  // SHA-256 of every evidence DER, in bundle order
	// CRLSHA256 is the SHA-256 of the CRL (DER) the node exported with it,
	// so that an older CRL cannot be swapped in.
	CRLSHA256 string
}

type indexWire struct {
	Version     int      `json:"version"`
	MessageID   string   `json:"message_id"`
	RequestedBy string   `json:"requested_by"`
	Time        string   `json:"time"`
	Origin      string   `json:"origin"`
	LogKey      string   `json:"log_key"`
	TreeSize    uint64   `json:"tree_size"`
	Evidence    []string `json:"evidence_sha256"`
	CRLSHA256   string   `json:"crl_sha256"`
}

// Marshal validates ix and returns its canonical JSON, the bytes the node
// signs.
func (ix *Index) Marshal() ([]byte, error) {
	if err := ix.validate(); err != nil {
		return nil, err
	}
	w := indexWire{
		Version: ix.Version, MessageID: ix.MessageID, RequestedBy: ix.RequestedBy,
		Time: ix.Time.UTC().Format(evidence.TimeFormat), Origin: ix.Origin,
		LogKey: ix.LogKey, TreeSize: ix.TreeSize, Evidence: ix.Evidence, CRLSHA256: ix.CRLSHA256,
	}
	b, err := canonjson.Marshal(&w)
	if err != nil {
		return nil, fmt.Errorf("marshal index: %w", err)
	}
	if len(b) > maxIndexSize {
		return nil, fmt.Errorf("%w: index of %d bytes, at most %d", ErrFormat, len(b), maxIndexSize)
	}
	return b, nil
}

// ParseIndex decodes index JSON, accepting only the canonical form.
func ParseIndex(b []byte) (*Index, error) {
	if len(b) > maxIndexSize {
		return nil, fmt.Errorf("%w: index of %d bytes, at most %d", ErrFormat, len(b), maxIndexSize)
	}
	var w indexWire
	if err := canonjson.Unmarshal(b, &w); err != nil {
		return nil, fmt.Errorf("%w: index: %v", ErrFormat, err)
	}
	t, err := time.Parse(evidence.TimeFormat, w.Time)
	if err != nil {
		return nil, fmt.Errorf("%w: index time %q: %v", ErrFormat, w.Time, err)
	}
	ix := &Index{
		Version: w.Version, MessageID: w.MessageID, RequestedBy: w.RequestedBy, Time: t,
		Origin: w.Origin, LogKey: w.LogKey, TreeSize: w.TreeSize, Evidence: w.Evidence, CRLSHA256: w.CRLSHA256,
	}
	canon, err := ix.Marshal()
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(canon, b) {
		return nil, fmt.Errorf("%w: index not in canonical form", ErrFormat)
	}
	return ix, nil
}

// Domain returns the domain whose node keeps the log, taken from Origin.
func (ix *Index) Domain() string {
	d, _ := tlog.OriginDomain(ix.Origin)
	return d
}

func (ix *Index) validate() error {
	switch {
	case ix.Version != IndexVersion:
		return fmt.Errorf("%w: index version %d, want %d", ErrFormat, ix.Version, IndexVersion)
	case ix.MessageID == "":
		return fmt.Errorf("%w: index names no message", ErrFormat)
	case ix.Time.IsZero():
		return fmt.Errorf("%w: index has no time", ErrFormat)
	case ix.LogKey == "":
		return fmt.Errorf("%w: index names no log key", ErrFormat)
	case len(ix.Evidence) == 0 || len(ix.Evidence) > MaxEvidence:
		return fmt.Errorf("%w: index lists %d evidence, want 1 to %d", ErrFormat, len(ix.Evidence), MaxEvidence)
	case ix.TreeSize == 0:
		return fmt.Errorf("%w: index names an empty log", ErrFormat)
	}
	if err := envelope.CheckID(ix.MessageID); err != nil {
		return fmt.Errorf("%w: index message id: %v", ErrFormat, err)
	}
	if !evidence.IsDigest(ix.CRLSHA256) {
		return fmt.Errorf("%w: index CRL digest %q is not lowercase hex SHA-256", ErrFormat, ix.CRLSHA256)
	}
	if _, err := address.Parse(ix.RequestedBy); err != nil {
		return fmt.Errorf("%w: index requested_by: %v", ErrFormat, err)
	}
	if _, err := tlog.OriginDomain(ix.Origin); err != nil {
		return fmt.Errorf("%w: index origin: %v", ErrFormat, err)
	}
	for _, d := range ix.Evidence {
		if !evidence.IsDigest(d) {
			return fmt.Errorf("%w: index evidence digest %q is not lowercase hex SHA-256", ErrFormat, d)
		}
	}
	return nil
}
