// Package bundle is Kurier's evidence bundle: one zip file with everything
// needed to check a message's history offline, years later, with nothing
// but the federation's CA certificate — the signed envelope, every
// evidence, the signers' certificates, the CRL, the exporting node's log
// checkpoint, the checkpoint of every other node's log that holds some of
// the evidence (with that node's signature over its log key), an inclusion
// proof for every evidence in its own log, and the exporting node's signed
// index of the export. Package evidence/audit checks a bundle; this
// package only reads and writes one, refusing anything outside the format.
//
// A zip rather than a single CMS or JSON container, because every part is
// then a file that standard tools read on their own: `openssl cms -verify`
// on each .p7m, on envelope.p7s and on each log.vkey.p7s, `openssl crl` on
// crl.der, any text viewer on envelope.json and the checkpoints.
// docs/PROTOCOL.md lists the files.
//
// # Versions
//
// Write writes format Version 2: evidence may sit in the logs of several
// nodes (a relayed message's chain is logged partly at the sender's node,
// partly at the recipient's), so the manifest names each evidence's log
// and the bundle carries, under logs/<domain>/, the checkpoint and the
// vouched-for log key of every log other than the exporting node's.
// Version 1, in which every evidence is in the exporting node's log, is
// still read, and written again as it was (Bundle.Version 1), so that
// bundles exported before keep their bytes and their meaning.
//
// # Content
//
// A bundle of either version may also carry the message's content, which
// the exporting participant adds (the node never sees it): under content/,
// signed.p7m, the sender-signed original (CMS SignedData whose content is
// the documents' tar file, as the recipient decrypted it), and optionally
// payload.p7m, the sealed payload as delivered. Neither is covered by the
// node's index: signed.p7m carries the sender's own signature, and a
// version 3 envelope lists each document's SHA-256, which the sender
// signed and every evidence binds through the envelope's digest;
// payload.p7m must have the payload digest the envelope names. A bundle
// with content may exceed MaxSize by the content's size.
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
	"io/fs"
	"path"
	"regexp"
	"slices"
	"strings"
	"time"

	"kurier.dev/kurier/envelope"
	"kurier.dev/kurier/evidence"
	"kurier.dev/kurier/tlog"
)

// Version is the bundle format version Write writes unless Bundle.Version
// says otherwise.
const Version = 2

// Limits of a bundle; a bundle is read from untrusted hands.
const (
	// MaxSize bounds the zip file without its content entries.
	MaxSize = 16 << 20
	// MaxContentSize bounds each content entry (content/signed.p7m,
	// content/payload.p7m): the largest payload a node takes by default
	// (256 MiB) and room for CMS structure.
	MaxContentSize = 257 << 20
	// MaxSizeWithContent bounds the zip file of a bundle with content.
	MaxSizeWithContent = MaxSize + 2*MaxContentSize
	MaxEvidence        = 1024 // evidence files
	MaxCertificates    = 64
	MaxConsistency     = 16 // consistency proofs
	MaxLogs            = 64 // other nodes' logs
	maxFiles           = MaxEvidence + 3*MaxLogs + 16
	maxCRLSize         = 8 << 20
	maxCertsSize       = 1 << 20
	maxManifestSize    = 1 << 20
	// maxIndexFileSize bounds index.p7m: the index JSON and the node's
	// signature with its certificates.
	maxIndexFileSize = maxIndexSize + 32<<10
	// maxLogKeySize bounds a log's verifier key: a key named by an
	// origin of the longest domain is about 330 bytes.
	maxLogKeySize = 1 << 10
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
	logsDir          = "logs/"
	contentDir       = "content/"
	// FileContentSigned and FileContentSealed are the optional content
	// part: the sender-signed original and the payload as delivered.
	FileContentSigned = contentDir + "signed.p7m"
	FileContentSealed = contentDir + "payload.p7m"
)

// The names of each other log's files inside its folder logs/<domain>/
// (see LogFile).
const (
	FileLogCheckpoint   = "checkpoint"   // its signed checkpoint
	FileLogKey          = "log.vkey"     // its verifier key, the exact bytes signed
	FileLogKeySignature = "log.vkey.p7s" // its node's detached signature over log.vkey
)

// LogFile returns the name inside the zip of file name (FileLogCheckpoint,
// FileLogKey or FileLogKeySignature) of the log with origin, in the folder
// of the origin's domain: logs/amtsgericht.example/checkpoint.
func LogFile(origin, name string) string {
	d, err := tlog.OriginDomain(origin)
	if err != nil {
		d = origin // not a Kurier origin; Check refuses it
	}
	return logsDir + d + "/" + name
}

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
	// Version is the format version: 0 or Version for the current format,
	// 1 for a bundle read as version 1 (one log, no Logs, no Evidence.Log).
	Version   int
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
	// Checkpoint is the exporting node's signed checkpoint (C2SP signed
	// note) that the inclusion proofs of the evidence in its log lead to.
	Checkpoint []byte
	// Logs (version 2) are the other nodes' logs that hold some of the
	// evidence, in no particular order, each origin once.
	Logs []Log
	// Index is the exporting node's signed Index (attached CMS, DER).
	Index []byte
	// Consistency proves that Checkpoint's tree extends older trees, for
	// verifiers holding an older checkpoint of the exporting node's log.
	Consistency []Consistency
	// Signed is the optional content/signed.p7m: the sender-signed
	// original (attached CMS SignedData, DER or BER, whose content is the
	// documents' tar file), which the exporting participant adds. Nil
	// when the bundle carries no content.
	Signed []byte
	// Sealed is the optional content/payload.p7m: the payload as
	// delivered (CMS EnvelopedData, encrypted to the recipient). Only
	// with Signed.
	Sealed []byte
}

// Evidence is one evidence file with its place in a log.
type Evidence struct {
	// Name is the file name inside evidence/, e.g. "01-SubmissionAcceptance.p7m".
	Name string
	DER  []byte
	// Log (version 2) is the origin of the log that holds the evidence:
	// the exporting node's (Checkpoint's origin) or one of Logs. Read
	// always sets it in version 2; in a Bundle built in memory, empty
	// means the exporting node's log, and Write writes Checkpoint's
	// origin. Empty in version 1, where every evidence is in that log.
	Log       string
	LeafIndex uint64
	// Proof is the RFC 6962 inclusion proof of the leaf in the tree of
	// its log's checkpoint.
	Proof [][]byte
}

// Log is another node's log that holds some of a bundle's evidence, as
// the exporting node fetched it from that node.
type Log struct {
	// Origin is the log's origin, tlog.Origin of the node's domain.
	Origin string
	// Checkpoint is the log's signed checkpoint (C2SP signed note).
	Checkpoint []byte
	// LogKey is the log's signed-note verifier key, and LogKeySignature
	// a detached CMS SignedData (DER) over its UTF-8 bytes by that node's
	// certificate: the node vouches for its own log key, so that the
	// exporting node need not be trusted for it.
	LogKey          string
	LogKeySignature []byte
}

// Consistency is an RFC 6962 consistency proof from a tree of From leaves
// to the bundle checkpoint's tree.
type Consistency struct {
	From  uint64
	Proof [][]byte
}

// manifest is manifest.json: what the zip holds that is not a file of its
// own. Version 1 has neither logs nor an evidence's log; the omitempty
// tags make the version 1 form fall out of the same struct.
type manifest struct {
	Format      string                `json:"format"`
	Version     int                   `json:"version"`
	MessageID   string                `json:"message_id"`
	Logs        []manifestLog         `json:"logs,omitempty"`
	Evidence    []manifestEvidence    `json:"evidence"`
	Consistency []manifestConsistency `json:"consistency,omitempty"`
}

// manifestLog names another log and its files, which follow from the
// origin: the names are there for a person reading the manifest.
type manifestLog struct {
	Origin          string `json:"origin"`
	Checkpoint      string `json:"checkpoint"`
	LogKey          string `json:"log_key"`
	LogKeySignature string `json:"log_key_signature"`
}

type manifestEvidence struct {
	File      string   `json:"file"`
	Log       string   `json:"log,omitempty"`
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

// FormatVersion returns the format version b is written in: b.Version,
// or Version for 0.
func (b *Bundle) FormatVersion() int { return b.version() }

func (b *Bundle) version() int {
	if b.Version == 0 {
		return Version
	}
	return b.Version
}

// zipFile is one entry as Write writes it.
type zipFile struct {
	name string
	data []byte
}

// Write writes b as a zip file to w. Entries are dated t, so that the same
// bundle written twice gives the same bytes.
func (b *Bundle) Write(w io.Writer, t time.Time) error {
	if err := b.Check(); err != nil {
		return fmt.Errorf("write bundle: %w", err)
	}
	files, err := b.files()
	if err != nil {
		return fmt.Errorf("write bundle: %w", err)
	}
	// Content entries are stored, not deflated (encrypted and signed
	// documents hardly shrink), so that they add their size exactly.
	zw := zip.NewWriter(&capped{w: w, left: MaxSize + int64(len(b.Signed)+len(b.Sealed))})
	for _, f := range files {
		method := zip.Deflate
		if strings.HasPrefix(f.name, contentDir) {
			method = zip.Store
		}
		fw, err := zw.CreateHeader(&zip.FileHeader{Name: f.name, Method: method, Modified: t.UTC()})
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

// files returns the zip's entries in the order Write writes them.
func (b *Bundle) files() ([]zipFile, error) {
	mj, err := b.manifestJSON()
	if err != nil {
		return nil, err
	}
	certs, err := encodeCertificates(b.Certificates)
	if err != nil {
		return nil, err
	}
	text := readme
	if b.version() == 1 {
		text = readmeV1
	}
	if b.Signed != nil {
		text += readmeContent
	}
	files := []zipFile{
		{FileReadme, []byte(text)},
		{FileManifest, mj},
		{FileIndex, b.Index},
		{FileEnvelope, b.Envelope},
		{FileSignature, b.Signature},
		{FileCheckpoint, b.Checkpoint},
		{FileCertificates, certs},
		{FileCRL, b.CRL},
	}
	for _, l := range b.Logs {
		files = append(files,
			zipFile{LogFile(l.Origin, FileLogCheckpoint), l.Checkpoint},
			zipFile{LogFile(l.Origin, FileLogKey), []byte(l.LogKey)},
			zipFile{LogFile(l.Origin, FileLogKeySignature), l.LogKeySignature})
	}
	for _, e := range b.Evidence {
		files = append(files, zipFile{evidenceDir + e.Name, e.DER})
	}
	if b.Signed != nil {
		files = append(files, zipFile{FileContentSigned, b.Signed})
	}
	if b.Sealed != nil {
		files = append(files, zipFile{FileContentSealed, b.Sealed})
	}
	return files, nil
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
	m := manifest{Format: formatName, Version: b.version(), MessageID: b.MessageID}
	for _, l := range b.Logs {
		m.Logs = append(m.Logs, manifestLog{
			Origin: l.Origin, Checkpoint: LogFile(l.Origin, FileLogCheckpoint),
			LogKey: LogFile(l.Origin, FileLogKey), LogKeySignature: LogFile(l.Origin, FileLogKeySignature),
		})
	}
	own := ""
	for _, e := range b.Evidence {
		log := e.Log
		if log == "" && m.Version > 1 {
			if own == "" {
				var err error
				if own, err = checkpointOrigin(b.Checkpoint); err != nil {
					return nil, fmt.Errorf("%w: evidence %s names no log, and the checkpoint names none: %v", ErrFormat, e.Name, err)
				}
			}
			log = own
		}
		m.Evidence = append(m.Evidence, manifestEvidence{File: evidenceDir + e.Name, Log: log, LeafIndex: e.LeafIndex, Proof: nonNil(e.Proof)})
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

// checkpointOrigin returns the origin a signed checkpoint claims, WITHOUT
// VERIFYING it: only to name the exporting node's log in the manifest,
// which a verifier checks against the opened checkpoint.
func checkpointOrigin(signed []byte) (string, error) {
	body, _, ok := bytes.Cut(signed, []byte("\n\n"))
	if !ok {
		return "", fmt.Errorf("%w: not a signed note", tlog.ErrMalformed)
	}
	c, err := tlog.ParseCheckpoint(append(bytes.Clone(body), '\n'))
	if err != nil {
		return "", err
	}
	if _, err := tlog.OriginDomain(c.Origin); err != nil {
		return "", err
	}
	return c.Origin, nil
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
// Write requires and Read ensures. It does not check that an evidence's
// log is among the bundle's: a verifier reports that.
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
	case b.Signed != nil && (len(b.Signed) == 0 || len(b.Signed) > MaxContentSize):
		return fmt.Errorf("%w: %s of %d bytes, want 1 to %d", ErrFormat, FileContentSigned, len(b.Signed), MaxContentSize)
	case b.Sealed != nil && (len(b.Sealed) == 0 || len(b.Sealed) > MaxContentSize):
		return fmt.Errorf("%w: %s of %d bytes, want 1 to %d", ErrFormat, FileContentSealed, len(b.Sealed), MaxContentSize)
	case b.Sealed != nil && b.Signed == nil:
		return fmt.Errorf("%w: %s without %s: the payload as delivered proves nothing about the documents without the signed original", ErrFormat, FileContentSealed, FileContentSigned)
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
	if err := b.checkLogs(); err != nil {
		return err
	}
	if err := b.checkEvidence(); err != nil {
		return err
	}
	for _, c := range b.Consistency {
		if err := checkProof(c.Proof); err != nil {
			return fmt.Errorf("%w: consistency proof from %d: %v", ErrFormat, c.From, err)
		}
	}
	return nil
}

func (b *Bundle) checkEvidence() error {
	seen := make(map[string]bool, len(b.Evidence))
	for _, e := range b.Evidence {
		switch {
		case !evidenceName.MatchString(e.Name):
			return fmt.Errorf("%w: evidence file name %q", ErrFormat, e.Name)
		case seen[e.Name]:
			return fmt.Errorf("%w: evidence file %q twice", ErrFormat, e.Name)
		case len(e.DER) == 0 || len(e.DER) > evidence.MaxSize:
			return fmt.Errorf("%w: evidence %s of %d bytes, want 1 to %d", ErrFormat, e.Name, len(e.DER), evidence.MaxSize)
		case b.version() == 1 && e.Log != "":
			return fmt.Errorf("%w: evidence %s names a log, which version 1 does not", ErrFormat, e.Name)
		}
		seen[e.Name] = true
		if e.Log != "" {
			if _, err := tlog.OriginDomain(e.Log); err != nil {
				return fmt.Errorf("%w: log of evidence %s: %v", ErrFormat, e.Name, err)
			}
		}
		if err := checkProof(e.Proof); err != nil {
			return fmt.Errorf("%w: inclusion proof of %s: %v", ErrFormat, e.Name, err)
		}
	}
	return nil
}

func (b *Bundle) checkLogs() error {
	switch v := b.version(); {
	case v != 1 && v != Version:
		return fmt.Errorf("%w: format version %d, want 1 or %d", ErrFormat, b.Version, Version)
	case v == 1 && len(b.Logs) > 0:
		return fmt.Errorf("%w: a version 1 bundle holds no other logs", ErrFormat)
	case len(b.Logs) > MaxLogs:
		return fmt.Errorf("%w: %d other logs, at most %d", ErrFormat, len(b.Logs), MaxLogs)
	}
	seen := make(map[string]bool, len(b.Logs))
	for _, l := range b.Logs {
		if _, err := tlog.OriginDomain(l.Origin); err != nil {
			return fmt.Errorf("%w: log: %v", ErrFormat, err)
		}
		switch {
		case seen[l.Origin]:
			return fmt.Errorf("%w: log %s twice", ErrFormat, l.Origin)
		case len(l.Checkpoint) == 0 || len(l.Checkpoint) > tlog.MaxCheckpointSize:
			return fmt.Errorf("%w: checkpoint of log %s of %d bytes, want 1 to %d", ErrFormat, l.Origin, len(l.Checkpoint), tlog.MaxCheckpointSize)
		case !validLogKey(l.LogKey):
			return fmt.Errorf("%w: key of log %s is not 1 to %d printable ASCII characters without spaces", ErrFormat, l.Origin, maxLogKeySize)
		case len(l.LogKeySignature) == 0 || len(l.LogKeySignature) > evidence.MaxSize:
			return fmt.Errorf("%w: key signature of log %s of %d bytes, want 1 to %d", ErrFormat, l.Origin, len(l.LogKeySignature), evidence.MaxSize)
		}
		seen[l.Origin] = true
	}
	return nil
}

// validLogKey reports whether k has the form of a signed-note verifier
// key's text: printable ASCII without spaces, so that log.vkey holds
// exactly the signed bytes and nothing a reader could overlook.
func validLogKey(k string) bool {
	if k == "" || len(k) > maxLogKeySize {
		return false
	}
	for _, c := range []byte(k) {
		if c <= ' ' || c > '~' {
			return false
		}
	}
	return true
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

// Read reads a bundle from the zip file r of size bytes, of either
// version. It refuses files larger than MaxSize, entries it does not
// know, entries listed twice, evidence or log files the manifest does not
// list and the reverse, so that what a verifier reports on is all the
// file holds.
func Read(r io.ReaderAt, size int64) (*Bundle, error) {
	files, err := readZip(r, size)
	if err != nil {
		return nil, err
	}
	m, err := decodeManifest(files[FileManifest])
	if err != nil {
		return nil, err
	}
	b := &Bundle{
		Version:    m.Version,
		MessageID:  m.MessageID,
		Envelope:   files[FileEnvelope],
		Signature:  files[FileSignature],
		Index:      files[FileIndex],
		Checkpoint: files[FileCheckpoint],
		CRL:        files[FileCRL],
		Signed:     files[FileContentSigned],
		Sealed:     files[FileContentSealed],
	}
	if err := b.takeEvidence(m, files); err != nil {
		return nil, err
	}
	if err := b.takeLogs(m, files); err != nil {
		return nil, err
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

// readZip returns the entries of the zip file r by name, each within its
// limit, and checks that the fixed ones are there.
func readZip(r io.ReaderAt, size int64) (map[string][]byte, error) {
	if size > MaxSizeWithContent {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrFormat, size, MaxSizeWithContent)
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
	// Only the content entries may take the file beyond MaxSize.
	rest := size
	for _, f := range zr.File {
		if f.Name == FileContentSigned || f.Name == FileContentSealed {
			rest -= int64(min(f.CompressedSize64, uint64(size)))
		}
	}
	if rest > MaxSize {
		return nil, fmt.Errorf("%w: %d bytes besides the content, at most %d", ErrFormat, rest, MaxSize)
	}
	// What the entries inflate to is bounded as the file is: a re-zipped
	// bundle may deflate its entries, but a small file must not unpack
	// to more than the largest one Kurier reads. readEntry holds each
	// entry to its declared size.
	var declared uint64
	for _, f := range zr.File {
		if declared += min(f.UncompressedSize64, MaxSizeWithContent+1); declared > MaxSizeWithContent {
			return nil, fmt.Errorf("%w: the entries unpack to more than %d bytes", ErrFormat, MaxSizeWithContent)
		}
	}
	files := make(map[string][]byte, len(zr.File))
	for _, f := range zr.File {
		name := f.Name
		if strings.HasSuffix(name, "/") {
			// A folder entry, as zip tools add when a bundle is unzipped
			// and zipped again: only the bundle's own folders, empty.
			// Empty: nothing stored, or the two bytes of an empty deflate
			// stream.
			empty := f.UncompressedSize64 == 0 && (f.CompressedSize64 == 0 || f.Method == zip.Deflate && f.CompressedSize64 <= 2)
			if !bundleDir(name) || !empty {
				return nil, fmt.Errorf("%w: unexpected entry %q", ErrFormat, name)
			}
			continue
		}
		if f.Mode()&fs.ModeType != 0 {
			return nil, fmt.Errorf("%w: entry %q is not a regular file (%v)", ErrFormat, name, f.Mode().Type())
		}
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
	return files, nil
}

func decodeManifest(data []byte) (*manifest, error) {
	var m manifest
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrFormat, FileManifest, err)
	}
	if m.Format != formatName || m.Version != 1 && m.Version != Version {
		return nil, fmt.Errorf("%w: %s names format %q version %d, want %q version 1 or %d", ErrFormat, FileManifest, m.Format, m.Version, formatName, Version)
	}
	if len(m.Evidence) > MaxEvidence || len(m.Consistency) > MaxConsistency || len(m.Logs) > MaxLogs {
		return nil, fmt.Errorf("%w: %s lists too many entries", ErrFormat, FileManifest)
	}
	return &m, nil
}

// takeEvidence takes the evidence files the manifest lists, refusing
// evidence files it does not list.
func (b *Bundle) takeEvidence(m *manifest, files map[string][]byte) error {
	listed := make(map[string]bool, len(m.Evidence))
	for _, e := range m.Evidence {
		data, ok := files[e.File]
		if !ok || !strings.HasPrefix(e.File, evidenceDir) {
			return fmt.Errorf("%w: %s lists %s, which the bundle does not hold", ErrFormat, FileManifest, e.File)
		}
		if listed[e.File] {
			return fmt.Errorf("%w: %s lists %s twice", ErrFormat, FileManifest, e.File)
		}
		listed[e.File] = true
		b.Evidence = append(b.Evidence, Evidence{Name: path.Base(e.File), DER: data, Log: e.Log, LeafIndex: e.LeafIndex, Proof: e.Proof})
	}
	for name := range files {
		if strings.HasPrefix(name, evidenceDir) && !listed[name] {
			return fmt.Errorf("%w: %s holds %s, which %s does not list", ErrFormat, evidenceDir, name, FileManifest)
		}
	}
	return nil
}

// takeLogs takes the other logs the manifest lists, each with all three
// of its files, refusing log files it does not list.
func (b *Bundle) takeLogs(m *manifest, files map[string][]byte) error {
	listed := map[string]bool{}
	for _, ml := range m.Logs {
		if _, err := tlog.OriginDomain(ml.Origin); err != nil {
			return fmt.Errorf("%w: %s lists a log: %v", ErrFormat, FileManifest, err)
		}
		var parts [3][]byte
		for i, name := range []string{FileLogCheckpoint, FileLogKey, FileLogKeySignature} {
			file := LogFile(ml.Origin, name)
			data, ok := files[file]
			if !ok {
				return fmt.Errorf("%w: %s lists the log %s, but the bundle lacks %s", ErrFormat, FileManifest, ml.Origin, file)
			}
			if listed[file] {
				return fmt.Errorf("%w: %s lists the log %s twice", ErrFormat, FileManifest, ml.Origin)
			}
			listed[file] = true
			parts[i] = data
		}
		b.Logs = append(b.Logs, Log{Origin: ml.Origin, Checkpoint: parts[0], LogKey: string(parts[1]), LogKeySignature: parts[2]})
	}
	for name := range files {
		if strings.HasPrefix(name, logsDir) && !listed[name] {
			return fmt.Errorf("%w: %s holds %s, which %s does not list", ErrFormat, logsDir, name, FileManifest)
		}
	}
	return nil
}

// bundleDir reports whether name, ending in a slash, is one of the
// bundle's folders: evidence/, logs/, a log's logs/<domain>/ or content/.
func bundleDir(name string) bool {
	if name == evidenceDir || name == logsDir || name == contentDir {
		return true
	}
	rest, ok := strings.CutPrefix(name, logsDir)
	if !ok {
		return false
	}
	domain, ok := strings.CutSuffix(rest, "/")
	if !ok || strings.Contains(domain, "/") {
		return false
	}
	_, err := tlog.OriginDomain(tlog.Origin(domain))
	return err == nil
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
	case FileContentSigned, FileContentSealed:
		return MaxContentSize, true
	}
	if rest, ok := strings.CutPrefix(name, evidenceDir); ok && evidenceName.MatchString(rest) {
		return evidence.MaxSize, true
	}
	if rest, ok := strings.CutPrefix(name, logsDir); ok {
		domain, file, _ := strings.Cut(rest, "/")
		if _, err := tlog.OriginDomain(tlog.Origin(domain)); err != nil {
			return 0, false
		}
		switch file {
		case FileLogCheckpoint:
			return tlog.MaxCheckpointSize, true
		case FileLogKey:
			return maxLogKeySize, true
		case FileLogKeySignature:
			return evidence.MaxSize, true
		}
	}
	return 0, false
}

// readEntry inflates f into exactly the size its header declares, at
// most limit bytes, and refuses an entry that holds more or fewer bytes
// than declared (or fails its CRC-32): the header is as untrusted as the
// rest, and readZip bounds the declared sizes together.
func readEntry(f *zip.File, limit int64) ([]byte, error) {
	if f.UncompressedSize64 > uint64(limit) {
		return nil, fmt.Errorf("%d bytes, at most %d", f.UncompressedSize64, limit)
	}
	rc, err := f.Open()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	data := make([]byte, f.UncompressedSize64)
	if _, err := io.ReadFull(rc, data); err != nil {
		return nil, fmt.Errorf("fewer than the %d bytes its header declares: %v", len(data), err)
	}
	// The end, where archive/zip checks the CRC-32, and nothing more.
	switch n, err := io.ReadFull(rc, make([]byte, 1)); {
	case n > 0:
		return nil, fmt.Errorf("more than the %d bytes its header declares", len(data))
	case err != io.EOF:
		return nil, fmt.Errorf("after its %d bytes: %v", len(data), err)
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
  index.p7m                    the exporting node's signed list of the evidence (SHA-256 of
                               each file), the tree size and key of its log, and those of
                               the other logs below
  checkpoint                   the exporting node's signed log checkpoint (C2SP tlog-checkpoint)
  logs/DOMAIN/                 each other node's log that holds some of the evidence
                               (a relayed message's, at the recipient's node):
    checkpoint                 its signed checkpoint, as the exporting node fetched it
    log.vkey, log.vkey.p7s     the key that signs its checkpoints, and that node's own
                               signature over it (by a node certificate listing DOMAIN):
      openssl cms -verify -inform DER -in logs/DOMAIN/log.vkey.p7s -content logs/DOMAIN/log.vkey -binary -CAfile ca.pem -out /dev/null
  manifest.json                each evidence's log, leaf index and inclusion proof
  certificates.pem             the signers' certificates up to the CA
  crl.der                      the CA's CRL at export:  openssl crl -inform DER -in crl.der -noout -text

The formats are described in Kurier's docs/PROTOCOL.md.
`

// readmeContent is added to README.txt in a bundle with content.
const readmeContent = `
This bundle also carries the message's content, added by the participant
who exported it (the node's index does not list it; the sender's
signature and the envelope's document digests vouch for it):

  content/signed.p7m           the documents as the sender signed them (a tar file inside):
      openssl cms -verify -inform DER -in content/signed.p7m -CAfile ca.pem -out documents.tar
      tar -tvf documents.tar   (list it first: only regular files, named as envelope.json's "files")
      mkdir docs && tar -xf documents.tar -C docs; sha256sum docs/FILE
                               (into an empty folder; compare with "sha256" in envelope.json's "files")
  content/payload.p7m          the payload as delivered, encrypted to the recipient:
      sha256sum content/payload.p7m   (compare with "payload_sha256" in envelope.json)
`

// readmeV1 is README.txt as version 1 bundles hold it, written again
// unchanged so that a version 1 bundle keeps its bytes.
const readmeV1 = `Kurier evidence bundle
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
