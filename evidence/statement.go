package evidence

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"kurier.dev/kurier/address"
	"kurier.dev/kurier/canonjson"
	"kurier.dev/kurier/envelope"
)

// StatementVersion is the statement format version this package writes.
const StatementVersion = 1

// MaxStatementSize bounds the JSON of one statement.
const MaxStatementSize = 16 << 10

// MaxReasonLen bounds a statement's reason text.
const MaxReasonLen = 1024

// TimeFormat is how statement times are written: RFC 3339 in UTC with
// microseconds, so that lexical and time order agree.
const TimeFormat = "2006-01-02T15:04:05.000000Z07:00"

// ErrInvalid is returned for a statement that breaks the format.
var ErrInvalid = errors.New("invalid evidence statement")

// Type names the event an evidence attests, after ETSI EN 319 522.
type Type string

// The evidence types.
const (
	SubmissionAcceptance Type = "SubmissionAcceptance"
	SubmissionRejection  Type = "SubmissionRejection"
	RelayAcceptance      Type = "RelayAcceptance"
	RelayRejection       Type = "RelayRejection"
	Delivery             Type = "Delivery"
	Retrieval            Type = "Retrieval"
	Acknowledgement      Type = "Acknowledgement"
	// Rejection is the recipient's refusal of a message it has retrieved
	// (the Zurückweisung of an elektronisches Empfangsbekenntnis), with a
	// reason code and text (see RejectionReason).
	Rejection   Type = "Rejection"
	NonDelivery Type = "NonDelivery"
)

// Types lists every evidence type.
var Types = []Type{SubmissionAcceptance, SubmissionRejection, RelayAcceptance, RelayRejection, Delivery, Retrieval, Acknowledgement, Rejection, NonDelivery}

// Valid reports whether t is one of Types.
func (t Type) Valid() bool {
	for _, v := range Types {
		if t == v {
			return true
		}
	}
	return false
}

// ByRecipient reports whether evidence of type t is issued by the recipient
// (signed with its own key) rather than by a node.
func (t Type) ByRecipient() bool { return t == Acknowledgement || t == Rejection }

// Statement is the signed content of an evidence.
type Statement struct {
	Version        int
	Type           Type
	MessageID      string
	EnvelopeSHA256 string
	PayloadSHA256  string
	Sender         string
	// Recipient is the copy's recipient; empty for evidence about a whole
	// submission (SubmissionRejection).
	Recipient string
	// Issuer is the issuing node's domain, or the recipient's address for an
	// Acknowledgement or a Rejection.
	Issuer string
	Time   time.Time
	// PreviousSHA256 is the SHA-256 of the previous evidence's DER file in
	// the same chain, empty for the first.
	PreviousSHA256 string
	Reason         string
}

// wire is the JSON form; its field order is the canonical key order.
type wire struct {
	Version        int    `json:"version"`
	Type           Type   `json:"type"`
	MessageID      string `json:"message_id"`
	EnvelopeSHA256 string `json:"envelope_sha256"`
	PayloadSHA256  string `json:"payload_sha256"`
	Sender         string `json:"sender"`
	Recipient      string `json:"recipient"`
	Issuer         string `json:"issuer"`
	Time           string `json:"time"`
	PreviousSHA256 string `json:"previous_sha256"`
	Reason         string `json:"reason"`
}

// Marshal validates s and returns its canonical JSON.
func (s *Statement) Marshal() ([]byte, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	w := wire{
		Version: s.Version, Type: s.Type, MessageID: s.MessageID,
		EnvelopeSHA256: s.EnvelopeSHA256, PayloadSHA256: s.PayloadSHA256,
		Sender: s.Sender, Recipient: s.Recipient, Issuer: s.Issuer,
		Time: s.Time.UTC().Format(TimeFormat), PreviousSHA256: s.PreviousSHA256,
		Reason: s.Reason,
	}
	b, err := canonjson.Marshal(&w)
	if err != nil {
		return nil, fmt.Errorf("marshal statement: %w", err)
	}
	return b, nil
}

// ParseStatement decodes statement JSON, accepting only the canonical form.
func ParseStatement(b []byte) (*Statement, error) {
	if len(b) > MaxStatementSize {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrInvalid, len(b), MaxStatementSize)
	}
	var w wire
	if err := canonjson.Unmarshal(b, &w); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	t, err := time.Parse(TimeFormat, w.Time)
	if err != nil {
		// time.Parse's error repeats the value; say once what is wrong.
		return nil, fmt.Errorf("%w: time %s is not of the form %s (RFC 3339 with microseconds)", ErrInvalid, envelope.Quote(w.Time), TimeFormat)
	}
	s := &Statement{
		Version: w.Version, Type: w.Type, MessageID: w.MessageID,
		EnvelopeSHA256: w.EnvelopeSHA256, PayloadSHA256: w.PayloadSHA256,
		Sender: w.Sender, Recipient: w.Recipient, Issuer: w.Issuer, Time: t,
		PreviousSHA256: w.PreviousSHA256, Reason: w.Reason,
	}
	canon, err := s.Marshal()
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(canon, b) {
		return nil, fmt.Errorf("%w: not in canonical form", ErrInvalid)
	}
	return s, nil
}

// Validate checks every field of s.
func (s *Statement) Validate() error {
	if s.Version != StatementVersion {
		return fmt.Errorf("%w: version %d, want %d", ErrInvalid, s.Version, StatementVersion)
	}
	if !s.Type.Valid() {
		return fmt.Errorf("%w: unknown type %s", ErrInvalid, envelope.Quote(string(s.Type)))
	}
	if err := envelope.CheckID(s.MessageID); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	for name, h := range map[string]string{"envelope_sha256": s.EnvelopeSHA256, "payload_sha256": s.PayloadSHA256} {
		if !IsDigest(h) {
			return fmt.Errorf("%w: %s must be 64 lowercase hex digits", ErrInvalid, name)
		}
	}
	if s.PreviousSHA256 != "" && !IsDigest(s.PreviousSHA256) {
		return fmt.Errorf("%w: previous_sha256 must be empty or 64 lowercase hex digits", ErrInvalid)
	}
	if !address.Valid(s.Sender) {
		return fmt.Errorf("%w: sender %s is not an address", ErrInvalid, envelope.Quote(s.Sender))
	}
	switch {
	case s.Recipient == "" && s.Type != SubmissionRejection:
		return fmt.Errorf("%w: %s needs a recipient", ErrInvalid, s.Type)
	case s.Recipient != "" && !address.Valid(s.Recipient):
		return fmt.Errorf("%w: recipient %s is not an address", ErrInvalid, envelope.Quote(s.Recipient))
	}
	if s.Type.ByRecipient() {
		if s.Issuer != s.Recipient {
			return fmt.Errorf("%w: %s must be issued by its recipient %s, not %s", ErrInvalid, s.Type, s.Recipient, envelope.Quote(s.Issuer))
		}
	} else if err := address.CheckDomain(s.Issuer); err != nil {
		return fmt.Errorf("%w: issuer of %s must be a node domain: %v", ErrInvalid, s.Type, err)
	}
	if s.Time.IsZero() {
		return fmt.Errorf("%w: time missing", ErrInvalid)
	}
	// A reason is shown to people (the Prüfprotokoll, kurier's output),
	// who must see the characters envelopes refuse for what they are:
	// those who show it escape them (envelope.Printable). They are not
	// refused here, as evidence signed before ReasonText cleaned a node's
	// reasons (error texts with line breaks) must keep verifying.
	if err := checkReason(s.Reason); err != nil {
		return err
	}
	needsReason := s.Type == SubmissionRejection || s.Type == RelayRejection || s.Type == NonDelivery || s.Type == Rejection
	if needsReason && s.Reason == "" {
		return fmt.Errorf("%w: %s needs a reason", ErrInvalid, s.Type)
	}
	if s.Type == Rejection {
		if _, _, err := ParseRejectionReason(s.Reason); err != nil {
			return err
		}
	}
	return nil
}

// checkReason refuses a reason that is too long or not UTF-8.
func checkReason(reason string) error {
	switch {
	case len(reason) > MaxReasonLen:
		return fmt.Errorf("%w: reason longer than %d bytes", ErrInvalid, MaxReasonLen)
	case !utf8.ValidString(reason):
		return fmt.Errorf("%w: reason is not UTF-8", ErrInvalid)
	}
	return nil
}

// ReasonText returns text as a node signs a reason: invalid UTF-8
// shown as U+FFFD, each character envelope.Hostile reports (a newline of an
// error message, say) replaced by a space, and cut to MaxReasonLen at a
// character boundary. A node passes the reasons it gives, often error
// texts that quote others, through it before signing.
func ReasonText(text string) string {
	text = strings.ToValidUTF8(text, "\uFFFD")
	text = strings.Map(func(r rune) rune {
		if envelope.Hostile(r) {
			return ' '
		}
		return r
	}, text)
	if len(text) <= MaxReasonLen {
		return text
	}
	cut := MaxReasonLen
	for cut > 0 && !utf8.RuneStart(text[cut]) {
		cut--
	}
	return text[:cut]
}

// Digest returns the lowercase hex SHA-256 of an evidence's DER file, the
// value the next evidence names as previous_sha256.
func Digest(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

// IsDigest reports whether s has the form of Digest's result: 64
// lowercase hex digits.
func IsDigest(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
