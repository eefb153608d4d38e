// Package bundle is Kurier's evidence bundle: one zip file with everything
// needed to check a message's history offline, years later, with nothing
// but the federation's CA certificate — the signed envelope, every
// evidence, the signers' certificates, the CRL, the node's log checkpoint
// with an inclusion proof for every evidence, and the node's signed index
// of the export. Package evidence/audit checks a bundle; this package only
// reads and writes one, refusing anything outside the format.
//
// A zip rather than a single CMS or JSON container, because every part is
// then a file that standard tools read on their own: `openssl cms -verify`
// on each .p7m and on envelope.p7s, `openssl crl` on crl.der, any text
// viewer on envelope.json and checkpoint. docs/PROTOCOL.md lists the files.
package bundle

import (
	"archive/zip"
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"path"
	"regexp"
	"slices"
	"strings"
	"time"

	"kurier.dev/kurier/envelope"
	"kurier.dev/kurier/evidence"
	"kurier.dev/kurier/tlog"
)

// Limits of a bundle; a bundle is read from untrusted hands.
const (
	MaxSize         = 16 << 20 // bytes of the zip file
	MaxEvidence     = 1024     // evidence files
	MaxCertificates = 64
	MaxConsistency  = 16 // consistency proofs
	maxFiles        = MaxEvidence + 16
	maxCRLSize      = 8 << 20
	maxCertsSize    = 1 << 20
	maxManifestSize = 1 << 20
	// maxIndexFileSize bounds index.p7m: the index JSON and the node's
	// signature with its certificates.
	maxIndexFileSize = maxIndexSize + 32<<10
)

// ErrFormat is returned for a file that is not a well-formed bundle.
var ErrFormat = errors.New("not a well-formed Kurier bundle")

// The fixed names inside the zip.
const (
	FileManifest     = "manifest.json"
	FileEnvelope     = "envelope.json"
	FileSignature    = "envelope.p7s"
	FileIndex        = "index.p7m"
	FileCertificates = "certificates.pem"
	FileCRL          = "crl.der"
	FileCheckpoint   = "checkpoint"
	FileReadme       = "README.txt"
	evidenceDir      = "evidence/"
)

// magic starts every bundle: a zip file's first local file header, since
// Read accepts nothing before it.
const magic = "PK\x03\x04"

// Sniff reports whether data starts as a bundle does, to tell a bundle
// from a single evidence file or a checkpoint before reading it.
func Sniff(data []byte) bool { return bytes.HasPrefix(data, []byte(magic)) }

// formatName marks a manifest as a Kurier bundle's.
const formatName = "kurier-bundle"

// Bundle is one message's evidence bundle, in memory.
type Bundle struct {
	MessageID string
	// Envelope is the envelope JSON as the sender signed it; Signature its
	// detached CMS signature.
	Envelope  []byte
	Signature []byte
	// Evidence is every evidence the export covers: each recipient's chain
	// in order, recipients one after another.
	Evidence []Evidence
	// Certificates are the signers' certificates up to and including the
	// trust anchor. They help a verifier build chains; trust comes only from
	// the anchor the verifier chooses.
	Certificates []*x509.Certificate
	// CRL is the CA's CRL (DER) that was current at export.
	CRL []byte
	// Checkpoint is the node's signed checkpoint (C2SP signed note) that
	// every inclusion proof leads to.
	Checkpoint []byte
	// Index is the node's signed Index (attached CMS, DER).
	Index []byte
	// Consistency proves that Checkpoint's tree extends older trees, for
	// verifiers holding an older checkpoint of the same log.
	Consistency []Consistency
}

// Evidence is one evidence file with its place in the log.
type Evidence struct {
	// Name is the file name inside evidence/, e.g. "01-SubmissionAcceptance.p7m".
	Name      string
	DER       []byte
	LeafIndex uint64
	// Proof is the RFC 6962 inclusion proof of the leaf in Checkpoint's tree.
	Proof [][]byte
}

// Consistency is an RFC 6962 consistency proof from a tree of From leaves
// to the bundle checkpoint's tree.
type Consistency struct {
	From  uint64
	Proof [][]byte
}

// manifest is manifest.json: what the zip holds that is not a file of its
// own.
type manifest struct {
	Format      string                `json:"format"`
	Version     int                   `json:"version"`
	MessageID   string                `json:"message_id"`
	Evidence    []manifestEvidence    `json:"evidence"`
	Consistency []manifestConsistency `json:"consistency,omitempty"`
}

type manifestEvidence struct {
	File      string   `json:"file"`
	LeafIndex uint64   `json:"leaf_index"`
	Proof     [][]byte `json:"inclusion_proof"`
}

type manifestConsistency struct {
	FromSize uint64   `json:"from_size"`
	Proof    [][]byte `json:"proof"`
}

// EvidenceName returns the conventional file name of the i-th (from 0)
// evidence of type t.
func EvidenceName(i int, t evidence.Type) string {
	return fmt.Sprintf("%02d-%s.p7m", i+1, t)
}

var evidenceName = regexp.MustCompile(`^[0-9]{2,4}-[A-Za-z]{1,32}\.p7m$`)

// Write writes b as a zip file to w. Entries are dated t, so that the same
// bundle written twice gives the same bytes.
func (b *Bundle) Write(w io.Writer, t time.Time) error {
	if err := b.Check(); err != nil {
		return fmt.Errorf("write bundle: %w", err)
	}
	mj, err := b.manifestJSON()
	if err != nil {
		return fmt.Errorf("write bundle: %w", err)
	}
	certs, err := encodeCertificates(b.Certificates)
	if err != nil {
		return fmt.Errorf("write bundle: %w", err)
	}
	files := []struct {
		name string
		data []byte
	}{
		{FileReadme, []byte(readme)},
		{FileManifest, mj},
		{FileIndex, b.Index},
		{FileEnvelope, b.Envelope},
		{FileSignature, b.Signature},
		{FileCheckpoint, b.Checkpoint},
		{FileCertificates, certs},
		{FileCRL, b.CRL},
	}
	for _, e := range b.Evidence {
		files = append(files, struct {
			name string
			data []byte
		}{evidenceDir + e.Name, e.DER})
	}
	zw := zip.NewWriter(&capped{w: w, left: MaxSize})
	for _, f := range files {
		fw, err := zw.CreateHeader(&zip.FileHeader{Name: f.name, Method: zip.Deflate, Modified: t.UTC()})
		if err != nil {
			return fmt.Errorf("write bundle: %s: %w", f.name, err)
		}
		if _, err := fw.Write(f.data); err != nil {
			return fmt.Errorf("write bundle: %s: %w", f.name, err)
		}
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("write bundle: %w", err)
	}
	return nil
}

// capped passes at most left bytes on to w, so that Write never makes a
// file that Read refuses.
type capped struct {
	w    io.Writer
	left int64
}

func (c *capped) Write(p []byte) (int, error) {
	if int64(len(p)) > c.left {
		return 0, fmt.Errorf("%w: the bundle would exceed %d bytes", ErrFormat, MaxSize)
	}
	c.left -= int64(len(p))
	return c.w.Write(p)
}

// manifestJSON returns manifest.json as Write writes it: the only form
// Read accepts.
func (b *Bundle) manifestJSON() ([]byte, error) {
	m := manifest{Format: formatName, Version: 1, MessageID: b.MessageID}
	for _, e := range b.Evidence {
		m.Evidence = append(m.Evidence, manifestEvidence{File: evidenceDir + e.Name, LeafIndex: e.LeafIndex, Proof: nonNil(e.Proof)})
	}
	for _, c := range b.Consistency {
		m.Consistency = append(m.Consistency, manifestConsistency{FromSize: c.From, Proof: nonNil(c.Proof)})
	}
	mj, err := json.MarshalIndent(&m, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(mj, '\n'), nil
}

// encodeCertificates returns certificates.pem as Write writes it: the only
// form Read accepts.
func encodeCertificates(certs []*x509.Certificate) ([]byte, error) {
	var buf bytes.Buffer
	for _, c := range certs {
		if err := pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}); err != nil {
			return nil, err
		}
	}
	return buf.Bytes(), nil
}

func nonNil(p [][]byte) [][]byte {
	if p == nil {
		return [][]byte{}
	}
	return p
}

// Check validates the parts of b that the format itself constrains: what
// Write requires and Read ensures.
func (b *Bundle) Check() error {
	if err := envelope.CheckID(b.MessageID); err != nil {
		return fmt.Errorf("%w: message id: %v", ErrFormat, err)
	}
	if slices.Contains(b.Certificates, nil) {
		return fmt.Errorf("%w: an empty certificate", ErrFormat)
	}
	switch {
	case len(b.Envelope) == 0 || len(b.Envelope) > envelope.MaxSize:
		return fmt.Errorf("%w: envelope of %d bytes, want 1 to %d", ErrFormat, len(b.Envelope), envelope.MaxSize)
	case len(b.Signature) == 0 || len(b.Signature) > evidence.MaxSize:
		return fmt.Errorf("%w: envelope signature of %d bytes, want 1 to %d", ErrFormat, len(b.Signature), evidence.MaxSize)
	case len(b.Index) == 0 || len(b.Index) > maxIndexFileSize:
		return fmt.Errorf("%w: index of %d bytes, want 1 to %d", ErrFormat, len(b.Index), maxIndexFileSize)
	case len(b.Checkpoint) == 0 || len(b.Checkpoint) > tlog.MaxCheckpointSize:
		return fmt.Errorf("%w: checkpoint of %d bytes, want 1 to %d", ErrFormat, len(b.Checkpoint), tlog.MaxCheckpointSize)
	case len(b.CRL) == 0 || len(b.CRL) > maxCRLSize:
		return fmt.Errorf("%w: CRL of %d bytes, want 1 to %d", ErrFormat, len(b.CRL), maxCRLSize)
	case len(b.Evidence) == 0 || len(b.Evidence) > MaxEvidence:
		return fmt.Errorf("%w: %d evidence files, want 1 to %d", ErrFormat, len(b.Evidence), MaxEvidence)
	case len(b.Certificates) > MaxCertificates:
		return fmt.Errorf("%w: %d certificates, at most %d", ErrFormat, len(b.Certificates), MaxCertificates)
	case len(b.Consistency) > MaxConsistency:
		return fmt.Errorf("%w: %d consistency proofs, at most %d", ErrFormat, len(b.Consistency), MaxConsistency)
	}
	seen := make(map[string]bool, len(b.Evidence))
	for _, e := range b.Evidence {
		switch {
		case !evidenceName.MatchString(e.Name):
			return fmt.Errorf("%w: evidence file name %q", ErrFormat, e.Name)
		case seen[e.Name]:
			return fmt.Errorf("%w: evidence file %q twice", ErrFormat, e.Name)
		case len(e.DER) == 0 || len(e.DER) > evidence.MaxSize:
			return fmt.Errorf("%w: evidence %s of %d bytes, want 1 to %d", ErrFormat, e.Name, len(e.DER), evidence.MaxSize)
		}
		seen[e.Name] = true
		if err := checkProof(e.Proof); err != nil {
			return fmt.Errorf("%w: inclusion proof of %s: %v", ErrFormat, e.Name, err)
		}
	}
	for _, c := range b.Consistency {
		if err := checkProof(c.Proof); err != nil {
			return fmt.Errorf("%w: consistency proof from %d: %v", ErrFormat, c.From, err)
		}
	}
	return nil
}

func checkProof(p [][]byte) error {
	if len(p) > tlog.MaxProofLen {
		return fmt.Errorf("%d hashes, at most %d", len(p), tlog.MaxProofLen)
	}
	for _, h := range p {
		if len(h) != tlog.HashSize {
			return fmt.Errorf("a hash of %d bytes, want %d", len(h), tlog.HashSize)
		}
	}
	return nil
}

// Read reads a bundle from the zip file r of size bytes. It refuses files
// larger than MaxSize, entries it does not know, entries listed twice,
// evidence the manifest does not list and the reverse, so that what a
// verifier reports on is all the file holds.
func Read(r io.ReaderAt, size int64) (*Bundle, error) {
	if size > MaxSize {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrFormat, size, MaxSize)
	}
	// Nothing may hide before the first entry or in a comment.
	head := make([]byte, len(magic))
	if _, err := r.ReadAt(head, 0); err != nil || !Sniff(head) {
		return nil, fmt.Errorf("%w: not a zip file starting with its first entry", ErrFormat)
	}
	zr, err := zip.NewReader(r, size)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrFormat, err)
	}
	if zr.Comment != "" {
		return nil, fmt.Errorf("%w: the zip file has a comment", ErrFormat)
	}
	if len(zr.File) > maxFiles {
		return nil, fmt.Errorf("%w: %d entries, at most %d", ErrFormat, len(zr.File), maxFiles)
	}
	files := make(map[string][]byte, len(zr.File))
	for _, f := range zr.File {
		name := f.Name
		if _, dup := files[name]; dup {
			return nil, fmt.Errorf("%w: entry %q twice", ErrFormat, name)
		}
		limit, ok := entryLimit(name)
		if !ok {
			return nil, fmt.Errorf("%w: unexpected entry %q", ErrFormat, name)
		}
		data, err := readEntry(f, limit)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrFormat, name, err)
		}
		files[name] = data
	}
	for _, name := range []string{FileManifest, FileEnvelope, FileSignature, FileIndex, FileCheckpoint, FileCertificates, FileCRL} {
		if _, ok := files[name]; !ok {
			return nil, fmt.Errorf("%w: %s is missing", ErrFormat, name)
		}
	}
	var m manifest
	dec := json.NewDecoder(bytes.NewReader(files[FileManifest]))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrFormat, FileManifest, err)
	}
	if m.Format != formatName || m.Version != 1 {
		return nil, fmt.Errorf("%w: %s names format %q version %d, want %q version 1", ErrFormat, FileManifest, m.Format, m.Version, formatName)
	}
	if len(m.Evidence) > MaxEvidence || len(m.Consistency) > MaxConsistency {
		return nil, fmt.Errorf("%w: %s lists too many entries", ErrFormat, FileManifest)
	}
	b := &Bundle{
		MessageID:  m.MessageID,
		Envelope:   files[FileEnvelope],
		Signature:  files[FileSignature],
		Index:      files[FileIndex],
		Checkpoint: files[FileCheckpoint],
		CRL:        files[FileCRL],
	}
	listed := make(map[string]bool, len(m.Evidence))
	for _, e := range m.Evidence {
		data, ok := files[e.File]
		if !ok || !strings.HasPrefix(e.File, evidenceDir) {
			return nil, fmt.Errorf("%w: %s lists %s, which the bundle does not hold", ErrFormat, FileManifest, e.File)
		}
		if listed[e.File] {
			return nil, fmt.Errorf("%w: %s lists %s twice", ErrFormat, FileManifest, e.File)
		}
		listed[e.File] = true
		b.Evidence = append(b.Evidence, Evidence{Name: path.Base(e.File), DER: data, LeafIndex: e.LeafIndex, Proof: e.Proof})
	}
	for name := range files {
		if strings.HasPrefix(name, evidenceDir) && !listed[name] {
			return nil, fmt.Errorf("%w: %s holds %s, which %s does not list", ErrFormat, evidenceDir, name, FileManifest)
		}
	}
	for _, c := range m.Consistency {
		b.Consistency = append(b.Consistency, Consistency{From: c.FromSize, Proof: c.Proof})
	}
	if b.Certificates, err = parseCertificates(files[FileCertificates]); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrFormat, FileCertificates, err)
	}
	if err := b.Check(); err != nil {
		return nil, err
	}
	// Only the form Write writes: no duplicate or differently cased keys,
	// nothing after the JSON or between the certificates.
	if mj, err := b.manifestJSON(); err != nil || !bytes.Equal(mj, files[FileManifest]) {
		return nil, fmt.Errorf("%w: %s is not in the form Kurier writes", ErrFormat, FileManifest)
	}
	if certs, err := encodeCertificates(b.Certificates); err != nil || !bytes.Equal(certs, files[FileCertificates]) {
		return nil, fmt.Errorf("%w: %s is not in the form Kurier writes", ErrFormat, FileCertificates)
	}
	return b, nil
}

// entryLimit returns how large an entry may be once inflated, and whether
// the bundle format has such an entry at all.
func entryLimit(name string) (int64, bool) {
	switch name {
	case FileManifest:
		return maxManifestSize, true
	case FileEnvelope:
		return envelope.MaxSize, true
	case FileSignature:
		return evidence.MaxSize, true
	case FileIndex:
		return maxIndexFileSize, true
	case FileCheckpoint:
		return tlog.MaxCheckpointSize, true
	case FileCertificates:
		return maxCertsSize, true
	case FileCRL:
		return maxCRLSize, true
	case FileReadme:
		return 64 << 10, true
	}
	if rest, ok := strings.CutPrefix(name, evidenceDir); ok && evidenceName.MatchString(rest) {
		return evidence.MaxSize, true
	}
	return 0, false
}

// readEntry inflates f, refusing more than limit bytes whatever the
// header claims: the header is as untrusted as the rest.
func readEntry(f *zip.File, limit int64) ([]byte, error) {
	if f.UncompressedSize64 > uint64(limit) {
		return nil, fmt.Errorf("%d bytes, at most %d", f.UncompressedSize64, limit)
	}
	rc, err := f.Open()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("more than %d bytes", limit)
	}
	return data, nil
}

func parseCertificates(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for len(bytes.TrimSpace(data)) > 0 {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, errors.New("not PEM")
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("unexpected PEM block %q", block.Type)
		}
		if len(certs) == MaxCertificates {
			return nil, fmt.Errorf("more than %d certificates", MaxCertificates)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		certs = append(certs, c)
	}
	return certs, nil
}

// readme is README.txt inside every bundle: how to check it by hand.
const readme = `Kurier evidence bundle
======================

This file proves the history of one message. Check all of it at once with

    kurier verify THIS-FILE --ca ca.pem [--report report.html]

where ca.pem is the federation's CA certificate, obtained independently.
Every part can also be checked with standard tools:

  envelope.json, envelope.p7s  the envelope as the sender signed it:
      openssl cms -verify -inform DER -in envelope.p7s -content envelope.json -binary -CAfile ca.pem -out /dev/null
  evidence/NN-Type.p7m         each evidence, signed by its issuer:
      openssl cms -verify -inform DER -in evidence/01-SubmissionAcceptance.p7m -CAfile ca.pem -purpose any
  index.p7m                    the node's signed list of the evidence (SHA-256 of each
                               file), the log's tree size and the key of its checkpoints
  checkpoint                   the node's signed log checkpoint (C2SP tlog-checkpoint)
  manifest.json                each evidence's leaf index and inclusion proof
  certificates.pem             the signers' certificates up to the CA
  crl.der                      the CA's CRL at export:  openssl crl -inform DER -in crl.der -noout -text

The formats are described in Kurier's docs/PROTOCOL.md.
`
