// Package audit verifies evidence offline — a whole bundle (package
// evidence/bundle) or single evidence files — and writes the result as a
// verification report (Prüfprotokoll): every check made, each passed,
// indeterminate or failed, and who signed what and when.
//
// Nothing here touches the network. Trust comes from the CA certificates
// the caller passes; everything in a bundle, its certificates included, is
// treated as claims to check. A report passes only when every check passed.
package audit

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"strings"
	"time"
)

// Status is a check's outcome, the colours of a Prüfprotokoll.
type Status string

// The outcomes.
const (
	// Pass (green): the check held.
	Pass Status = "pass"
	// Indeterminate (yellow): nothing contradicts the claim, but it could
	// not be established, for instance because the trust anchor came from
	// the bundle itself.
	Indeterminate Status = "indeterminate"
	// Fail (red): the check did not hold.
	Fail Status = "fail"
)

// Check is one check and its outcome.
type Check struct {
	// Name is the check, one of the Check* constants.
	Name string `json:"check"`
	// Subject is what it was applied to: a file in the bundle, a
	// recipient's chain, a signer.
	Subject string `json:"subject"`
	Status  Status `json:"status"`
	// Detail says what was found, in words a person can act on.
	Detail string `json:"detail"`
}

// The names of the checks, stable so that scripts can select them.
const (
	CheckFormat            = "bundle format"
	CheckTrustAnchor       = "trust anchor"
	CheckCRL               = "CRL"
	CheckEnvelope          = "envelope"
	CheckEnvelopeSignature = "envelope signature"
	CheckEvidenceSignature = "evidence signature"
	CheckSignerRole        = "signer role"
	CheckRevocation        = "revocation"
	CheckStatement         = "statement"
	CheckEnvelopeDigest    = "envelope digest"
	CheckPayloadDigest     = "payload digest"
	CheckChain             = "evidence chain"
	CheckIndexSignature    = "index signature"
	CheckIndex             = "index"
	CheckCheckpoint        = "checkpoint signature"
	CheckLogKey            = "log key"
	CheckInclusion         = "inclusion proof"
	CheckConsistency       = "consistency"
	CheckOlderCheckpoint   = "older checkpoint"
	// The checks of a bundle's content part (content.go), made only for
	// a bundle that carries one.
	CheckContentSignature = "content signature"
	CheckDocument         = "document"
	CheckSealedPayload    = "sealed payload"
)

// Signature describes one signature in the report: who signed what, when.
type Signature struct {
	File   string    `json:"file"`
	What   string    `json:"what"`   // an evidence type, "envelope", "index" or "log key"
	Signer string    `json:"signer"` // "node amtsgericht.example", "participant eingang@…"
	Time   time.Time `json:"time"`   // the time the signed statement names
	// Recipient, Node and Reason are an evidence's statement's: the
	// recipient whose copy it is about (empty for a SubmissionRejection),
	// the node domain (or, for an Acknowledgement or a Rejection, the
	// recipient's address) that attests the event, and why, where the type
	// gives a reason. Empty for the other signatures.
	Recipient string `json:"recipient,omitempty"`
	Node      string `json:"node,omitempty"`
	Reason    string `json:"reason,omitempty"`
	// Certificate identifies the signer's certificate.
	Certificate string `json:"certificate"` // subject
	Serial      string `json:"serial"`      // hex
	Issuer      string `json:"issuer"`
	// Status is how far the signer's certificate is established at the
	// signature's time, the outcome of its revocation check: Fail where
	// it is revoked (Revoked) or revocation cannot be ruled out,
	// Indeterminate where no CRL could say. A signature that failed is
	// one a report shows only marked as unverified. Claimed signatures
	// are always Fail.
	Status  Status `json:"status"`
	Revoked bool   `json:"revoked,omitempty"`
}

// Report is the result of verifying one file.
type Report struct {
	File      string    `json:"file"`
	Verified  time.Time `json:"verified"` // when the report was made
	MessageID string    `json:"message_id,omitempty"`
	// Sender, Recipients, Subject, Type, Reference (the Aktenzeichen) and
	// Documents are read from the bundle's envelope. They are what the
	// sender signed only where MessageVerified is true; otherwise they are
	// claims, and a report must mark them as unverified.
	Sender     string     `json:"sender,omitempty"`
	Recipients []string   `json:"recipients,omitempty"`
	Subject    string     `json:"subject,omitempty"`
	Type       string     `json:"type,omitempty"`
	Reference  string     `json:"reference,omitempty"`
	Documents  []Document `json:"documents,omitempty"`
	// MessageVerified is true when the envelope's signature by its sender
	// held, its certificate not revoked, and verified evidence names the
	// envelope's digest, none another: the fields above are then what the
	// sender signed for the message the evidence is about.
	MessageVerified bool `json:"message_verified"`
	// Anchor names the trust anchor the chains were built to.
	Anchor string `json:"trust_anchor,omitempty"`
	// Log names the exporting node's checkpoint, which the evidence in
	// its log was proven against; OtherLogs the checkpoints of the other
	// logs (version 2 bundles), once opened with their vouched-for keys.
	// Each is set only where its checkpoint check did not fail and the
	// certificate of the node that vouched for its key is not revoked
	// (its revocation check did not fail): a log that is not established
	// is left out, never shown as vouched for.
	Log       *LogState  `json:"log,omitempty"`
	OtherLogs []LogState `json:"other_logs,omitempty"`
	// Entries say which log each evidence is in, as the bundle places it
	// (the inclusion proof check says whether that holds, and each
	// entry's Status).
	Entries    []LogEntry  `json:"log_entries,omitempty"`
	Chains     []Chain     `json:"chains,omitempty"`
	Signatures []Signature `json:"signatures"`
	// Claimed are the evidence files that parsed but failed their
	// signature, role or form, as their bytes claim them to be: what a
	// report may show only marked as unverified, never as fact.
	Claimed []Signature `json:"claimed,omitempty"`
	Checks  []Check     `json:"checks"`
}

// Document is one document of the message, as the envelope lists it.
type Document struct {
	Name string `json:"name"`
	Size int64  `json:"size"`
	// SHA256 is the document's lowercase hex SHA-256 as the envelope lists
	// it; empty for envelopes of versions that list none.
	SHA256 string `json:"sha256,omitempty"`
	// Content is the outcome of checking the document itself against
	// SHA256 and Size, where the bundle carries the sender-signed original;
	// empty where it does not.
	Content Status `json:"content,omitempty"`
}

// LogState is a verified checkpoint.
type LogState struct {
	Origin   string `json:"origin"`
	TreeSize uint64 `json:"tree_size"`
	Root     string `json:"root_sha256"` // hex
	// Key is the log's signed-note verifier key, as the node's index names
	// it: compare it with keys published or kept elsewhere, since a node
	// that starts a new log under a new key is only caught that way.
	Key string `json:"key"`
	// Node is the node that vouched for the key: the signer of the index
	// for the exporting node's log, of the key itself for another log.
	Node string `json:"node,omitempty"`
}

// LogEntry is where a bundle places one evidence: leaf LeafIndex of the
// log with origin Log.
type LogEntry struct {
	File      string `json:"file"`
	Log       string `json:"log"`
	LeafIndex uint64 `json:"leaf_index"`
	// Status is Pass only where the inclusion proof held against a
	// checkpoint that is established (the log is the report's Log or one
	// of its OtherLogs); Fail otherwise, for an entry a report shows only
	// marked as unverified.
	Status Status `json:"status"`
}

// Chain is one recipient's evidence chain as verified.
type Chain struct {
	Recipient string   `json:"recipient"`
	Types     []string `json:"types"`
	// State is where the message stands for this recipient: the last
	// evidence type.
	State string `json:"state"`
	// Reason is the last evidence's reason, where it gives one: why the
	// recipient refused the message (Rejection, "CODE: TEXT") or why it
	// was not delivered (NonDelivery).
	Reason string `json:"reason,omitempty"`
}

// OK reports whether every check passed: the only result on which a
// verifier exits 0.
func (r *Report) OK() bool { return r.Worst() == Pass }

// Failed returns the checks that did not pass.
func (r *Report) Failed() []Check {
	var out []Check
	for _, c := range r.Checks {
		if c.Status != Pass {
			out = append(out, c)
		}
	}
	return out
}

// Worst returns the worst status among the checks.
func (r *Report) Worst() Status {
	w := Pass
	for _, c := range r.Checks {
		switch {
		case c.Status == Fail:
			return Fail
		case c.Status == Indeterminate:
			w = Indeterminate
		}
	}
	if len(r.Checks) == 0 {
		return Fail
	}
	return w
}

// Worst returns the worst status of several reports; Fail for none.
func Worst(reports []*Report) Status {
	if len(reports) == 0 {
		return Fail
	}
	w := Pass
	for _, r := range reports {
		switch r.Worst() {
		case Fail:
			return Fail
		case Indeterminate:
			w = Indeterminate
		}
	}
	return w
}

func (r *Report) add(name, subject string, s Status, format string, args ...any) {
	r.Checks = append(r.Checks, Check{Name: name, Subject: subject, Status: s, Detail: fmt.Sprintf(format, args...)})
}

func (r *Report) pass(name, subject, format string, args ...any) {
	r.add(name, subject, Pass, format, args...)
}

func (r *Report) fail(name, subject, format string, args ...any) {
	r.add(name, subject, Fail, format, args...)
}

// Fingerprint returns a certificate's SHA-256 fingerprint as colon-separated
// uppercase hex, the form `openssl x509 -fingerprint -sha256` prints, for
// comparing a trust anchor by eye.
func Fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	h := strings.ToUpper(hex.EncodeToString(sum[:]))
	var b strings.Builder
	for i := 0; i < len(h); i += 2 {
		if i > 0 {
			b.WriteByte(':')
		}
		b.WriteString(h[i : i+2])
	}
	return b.String()
}
