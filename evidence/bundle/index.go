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

// IndexVersion is the index format version this package writes, the
// version of the bundle format it belongs to: version 2 lists the other
// logs; version 1, still read, has no such list.
const IndexVersion = 2

// maxIndexSize bounds an index's JSON: MaxEvidence digests (67 bytes each
// with quotes and comma, 67 KiB in all), MaxLogs other logs (each at most
// some 1.4 KiB with the longest origin and key, 86 KiB in all) and a key.
const maxIndexSize = 192 << 10

// Index is the exporting node's signed statement about one export: which
// evidence it holds for a message as of a tree size of its log, and the
// key that signs that log's checkpoints; in version 2 also the key and
// tree size of every other node's log whose checkpoint the bundle
// carries. Signed with the node's certificate, it binds its log key to the
// federation's PKI, so a verifier needs only the CA certificate; because
// it lists every evidence, a bundle that lost or reordered one no longer
// matches it; and because it names the other logs' checkpoints, none can
// be swapped for another the other node also signed.
type Index struct {
	Version     int
	MessageID   string
	RequestedBy string    // the participant who asked for the export
	Time        time.Time // when the node signed the index
	Origin      string    // the log's origin, tlog.Origin of the node's domain
	LogKey      string    // the log's signed-note verifier key
	TreeSize    uint64    // the size of the checkpoint in the bundle
	// Logs (version 2) are the other logs of the bundle, in any order.
	Logs     []IndexLog
	Evidence []string // SHA-256 of every evidence DER, in bundle order
	// CRLSHA256 is the SHA-256 of the CRL (DER) the node exported with it,
	// so that an older CRL cannot be swapped in.
	CRLSHA256 string
}

// IndexLog is another node's log as the exporting node used it: its
// origin, its verifier key as that node vouched for it, and the tree size
// of the checkpoint the bundle carries.
type IndexLog struct {
	Origin   string `json:"origin"`
	LogKey   string `json:"log_key"`
	TreeSize uint64 `json:"tree_size"`
}

// indexWire is the JSON form of version 1, and the form every index is
// decoded into: a version 1 index with a logs key then fails the
// comparison with its canonical form.
type indexWire struct {
	Version     int        `json:"version"`
	MessageID   string     `json:"message_id"`
	RequestedBy string     `json:"requested_by"`
	Time        string     `json:"time"`
	Origin      string     `json:"origin"`
	LogKey      string     `json:"log_key"`
	TreeSize    uint64     `json:"tree_size"`
	Logs        []IndexLog `json:"logs,omitempty"`
	Evidence    []string   `json:"evidence_sha256"`
	CRLSHA256   string     `json:"crl_sha256"`
}

// indexWireV2 is version 2's JSON form, whose logs key is always there.
type indexWireV2 struct {
	Version     int        `json:"version"`
	MessageID   string     `json:"message_id"`
	RequestedBy string     `json:"requested_by"`
	Time        string     `json:"time"`
	Origin      string     `json:"origin"`
	LogKey      string     `json:"log_key"`
	TreeSize    uint64     `json:"tree_size"`
	Logs        []IndexLog `json:"logs"`
	Evidence    []string   `json:"evidence_sha256"`
	CRLSHA256   string     `json:"crl_sha256"`
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
		LogKey: ix.LogKey, TreeSize: ix.TreeSize, Logs: ix.Logs, Evidence: ix.Evidence, CRLSHA256: ix.CRLSHA256,
	}
	var v any = &w
	if ix.Version >= 2 {
		w2 := indexWireV2(w)
		if w2.Logs == nil {
			w2.Logs = []IndexLog{}
		}
		v = &w2
	}
	b, err := canonjson.Marshal(v)
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
	if len(w.Logs) == 0 {
		w.Logs = nil // one reading of "no other logs"
	}
	ix := &Index{
		Version: w.Version, MessageID: w.MessageID, RequestedBy: w.RequestedBy, Time: t,
		Origin: w.Origin, LogKey: w.LogKey, TreeSize: w.TreeSize, Logs: w.Logs, Evidence: w.Evidence, CRLSHA256: w.CRLSHA256,
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

// Log returns the other log of origin that ix names, if it names it.
func (ix *Index) Log(origin string) (IndexLog, bool) {
	for _, l := range ix.Logs {
		if l.Origin == origin {
			return l, true
		}
	}
	return IndexLog{}, false
}

// Domain returns the domain whose node keeps the log, taken from Origin.
func (ix *Index) Domain() string {
	d, _ := tlog.OriginDomain(ix.Origin)
	return d
}

func (ix *Index) validate() error {
	switch {
	case ix.Version != 1 && ix.Version != IndexVersion:
		return fmt.Errorf("%w: index version %d, want 1 or %d", ErrFormat, ix.Version, IndexVersion)
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
	return ix.validateLogs()
}

// validateLogs checks the other logs: none in version 1; in version 2
// each a Kurier origin other than the node's own, once, with a key and a
// tree that is not empty.
func (ix *Index) validateLogs() error {
	switch {
	case ix.Version == 1 && len(ix.Logs) > 0:
		return fmt.Errorf("%w: a version 1 index lists no other logs", ErrFormat)
	case len(ix.Logs) > MaxLogs:
		return fmt.Errorf("%w: index lists %d other logs, at most %d", ErrFormat, len(ix.Logs), MaxLogs)
	}
	seen := make(map[string]bool, len(ix.Logs))
	for _, l := range ix.Logs {
		if _, err := tlog.OriginDomain(l.Origin); err != nil {
			return fmt.Errorf("%w: index log: %v", ErrFormat, err)
		}
		switch {
		case l.Origin == ix.Origin:
			return fmt.Errorf("%w: index lists its own log %s among the other logs", ErrFormat, l.Origin)
		case seen[l.Origin]:
			return fmt.Errorf("%w: index lists the log %s twice", ErrFormat, l.Origin)
		case !validLogKey(l.LogKey):
			return fmt.Errorf("%w: index names a key of log %s that is not 1 to %d printable ASCII characters without spaces", ErrFormat, l.Origin, maxLogKeySize)
		case l.TreeSize == 0:
			return fmt.Errorf("%w: index names an empty log %s", ErrFormat, l.Origin)
		}
		seen[l.Origin] = true
	}
	return nil
}
