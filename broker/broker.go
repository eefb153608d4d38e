// Package broker holds the domain types that a Kurier node's parts share
// (messages, mailbox copies, evidence records) and the sentinel errors its
// callers branch on. It has no logic of its own; broker/node does the work,
// broker/store keeps the state and broker/rpc puts gRPC in front.
package broker

import (
	"errors"
	"time"

	"kurier.dev/kurier/envelope"
)

// Sentinel errors. The node and the store wrap them with context; the rpc
// layer maps them to gRPC status codes in one place.
var (
	// ErrNotFound: no such message, copy or blob (or the caller may not know of it).
	ErrNotFound = errors.New("not found")
	// ErrDuplicate: a message id is already taken by different content.
	ErrDuplicate = errors.New("message id already used for different content")
	// ErrExists: the same message was stored before (an idempotent repeat).
	ErrExists = errors.New("already exists")
	// ErrForbidden: the caller's certificate does not allow the request.
	ErrForbidden = errors.New("forbidden")
	// ErrInvalid: the request is malformed or breaks a format rule.
	ErrInvalid = errors.New("invalid request")
	// ErrTooLarge: a size or count limit was exceeded.
	ErrTooLarge = errors.New("limit exceeded")
	// ErrUnknownRecipient: no mailbox at the address.
	ErrUnknownRecipient = errors.New("unknown recipient")
	// ErrConflict: the state changed under a conditional update; retry.
	ErrConflict = errors.New("concurrent update")
	// ErrState: the request does not fit the message's state (acknowledging
	// before fetching, for example).
	ErrState = errors.New("wrong state")
	// ErrSignature: a signature, certificate chain or revocation check failed.
	ErrSignature = errors.New("signature not valid")
	// ErrUnauthenticated: the caller presented no usable, unrevoked
	// certificate.
	ErrUnauthenticated = errors.New("not authenticated")
)

// Log attribute keys, the same in every package of the node.
const (
	LogMsgID   = "msg_id"
	LogPeer    = "peer"
	LogMailbox = "mailbox"
	LogErr     = "err"
)

// Message is a message as a node stores it: the sender's signed envelope,
// decoded, and a reference to the sealed payload.
type Message struct {
	Envelope       []byte             `json:"envelope"`  // the signed bytes, as submitted
	Signature      []byte             `json:"signature"` // detached CMS SignedData over Envelope
	Header         *envelope.Envelope `json:"header"`    // Envelope decoded
	EnvelopeSHA256 string             `json:"envelope_sha256"`
	Received       time.Time          `json:"received"`
	Blob           string             `json:"blob"` // where the payload is stored
}

// ID returns the message id.
func (m *Message) ID() string { return m.Header.ID }

// State is where a recipient's copy of a message stands.
type State string

// States of a copy, in the only order they can follow each other.
const (
	StateDelivered    State = "delivered"
	StateRetrieved    State = "retrieved"
	StateAcknowledged State = "acknowledged"
)

// Copy is one recipient's copy of a message: its mailbox entry.
type Copy struct {
	MessageID string    `json:"message_id"`
	Recipient string    `json:"recipient"`
	Received  time.Time `json:"received"`
	State     State     `json:"state"`
	// Head is the lowercase hex SHA-256 of the newest evidence in this copy's
	// chain, the previous_sha256 of the next one.
	Head string `json:"head"`
}

// Evidence is one evidence file as a node keeps it.
type Evidence struct {
	// Seq orders all evidence of one node in the order it was issued.
	Seq uint64 `json:"seq"`
	// LeafIndex is the evidence's position in the node's transparency log:
	// 0 for the first evidence, then one more for each, in Seq order but
	// without gaps. The store sets it, with Seq.
	LeafIndex uint64 `json:"leaf_index"`
	MessageID string `json:"message_id"`
	// Sender is the message's sender, who may see all of its evidence.
	Sender string `json:"sender"`
	// Recipient names the copy the evidence is about; it is empty for
	// evidence about the whole submission (a SubmissionRejection).
	Recipient string `json:"recipient"`
	Type      string `json:"type"`
	DER       []byte `json:"der"`
}

// InboxEntry is a copy with the message it belongs to, as a mailbox lists it.
type InboxEntry struct {
	Copy    Copy
	Message *Message
}
