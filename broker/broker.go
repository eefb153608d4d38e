// Package broker holds the domain types that a Kurier node's parts share
// (messages, mailbox copies, evidence records) and the sentinel errors its
// callers branch on. It has no logic of its own; broker/node does the work,
// broker/store keeps the state and broker/rpc puts gRPC in front.
package broker

import (
	"errors"
	"fmt"
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
	// ErrUnavailable: another node that the request needs cannot be reached
	// now; the same request may succeed later.
	ErrUnavailable = errors.New("unavailable")
	// ErrStoreUnavailable: the node cannot reach its database now (it is
	// down, restarting or failing over, or the network to it is cut); a
	// kind of ErrUnavailable, since the same request may succeed once it
	// is back. Its text is what the caller is told; what failed
	// underneath is the operator's business.
	ErrStoreUnavailable = fmt.Errorf("%w: the node's database cannot be reached now; try again shortly", ErrUnavailable)
	// ErrRateLimited: the caller sent more than the node takes from one
	// sender (or one relaying node) in a while; the same request may
	// succeed after a wait, which the error names (node.LimitError).
	ErrRateLimited = errors.New("over the node's rate limit")
	// ErrQuota: the caller handed in more payload bytes than its daily
	// quota; a kind of ErrRateLimited, since the quota refills.
	ErrQuota = fmt.Errorf("%w: daily quota used up", ErrRateLimited)
	// ErrNoSpace: the node's disk is almost full, so it takes no new
	// messages until its operator makes room; reading the mailbox and
	// acknowledging still work.
	ErrNoSpace = errors.New("the node's disk is almost full")
	// ErrUnknownOutcome: a write failed in a way that leaves open whether
	// it was stored (the commit or its fsync failed, or the request was
	// given up while in a batch being committed). Sending the same sealed
	// message again is safe and tells which: the first receipt if it was
	// stored, a new acceptance if not. Its text is what the caller is told.
	ErrUnknownOutcome = errors.New("the outcome is unknown; resubmit the same sealed message to learn it")
	// ErrDamaged: stored data cannot be read back whole or does not match
	// its recorded digest (disk corruption, or a file cut by the store on
	// start); it is never served in part. The operator must restore it.
	ErrDamaged = errors.New("stored data damaged")
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
	// Expires is when the message must have reached every recipient's
	// node: the envelope's expiry capped by the node's maximum, or the
	// node's default for envelopes that name none.
	Expires time.Time `json:"expires"`
}

// ID returns the message id.
func (m *Message) ID() string { return m.Header.ID }

// State is where a recipient's copy of a message stands.
type State string

// States of a copy. A local copy is delivered, then retrieved, then
// acknowledged or rejected by its recipient. A copy for a recipient of another node is relaying until
// that node accepts it, and then follows the states that node reports
// back. Undeliverable ends a copy that NonDelivery or a relay refusal
// ended.
const (
	StateRelaying      State = "relaying"
	StateDelivered     State = "delivered"
	StateRetrieved     State = "retrieved"
	StateAcknowledged  State = "acknowledged"
	StateRejected      State = "rejected"
	StateUndeliverable State = "undeliverable"
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
	// Local is true for a copy in a mailbox of this node, false for the
	// sender node's record of a copy relayed to another node.
	Local bool `json:"local"`
	// Deadline is when the node must act on the copy if nothing else
	// happens first: the message's expiry while it is relaying, the end of
	// retention while it waits to be retrieved; zero when nothing is due.
	Deadline time.Time `json:"deadline,omitzero"`
}

// Step moves one copy on by one evidence: the store appends Evidence to
// the copy's chain only if its head is still PrevHead, and then writes
// Next as the copy's record (its Received time stays as stored).
type Step struct {
	Evidence Evidence
	PrevHead string
	Next     Copy
	// Push names the domain whose node must be sent Evidence (the sender's
	// node, for evidence about a relayed message); "" for none.
	Push string
}

// Outbound is a message waiting in the queue to another domain's node.
// Which recipients it carries follows from the message and its copies:
// those of that domain still relaying.
type Outbound struct {
	Domain    string    `json:"-"`
	MessageID string    `json:"-"`
	Attempts  int       `json:"attempts"`
	NextTry   time.Time `json:"next_try"`
	LastError string    `json:"last_error,omitempty"`
	// Uncertain is set once a failed try may still have reached the other
	// node (the connection broke after the message was sent, say): what
	// became of it there is known only from the next answer.
	Uncertain bool `json:"uncertain,omitempty"`
}

// Blob describes a stored payload.
type Blob struct {
	ID     string
	Size   int64
	SHA256 [32]byte
}

// Evidence is one evidence file as a node keeps it.
type Evidence struct {
	// Log names the transparency log that holds the evidence: empty for
	// this node's own log, which holds what this node issued or first
	// received from its issuer (an Acknowledgement or a Rejection);
	// otherwise the origin
	// of the log of the node that did (tlog.Origin of its domain), for
	// evidence relayed back from there.
	Log string `json:"log,omitempty"`
	// LeafIndex is the evidence's position in that log. For the node's own
	// log the store assigns it: 0 for the first evidence, then one more
	// for each, without gaps; it is also the node-wide order of issue.
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

// SentEntry is a message with its recipients' copies, as the sender's
// listing shows it. The copies are those of the node that lists them: at
// the sender's node, one for every recipient (a relayed one follows the
// evidence the recipient's node sent back).
type SentEntry struct {
	Message *Message
	Copies  []Copy
}

// Backlog is what waits at a node, for its operators: what it has not
// relayed yet, and what its mailboxes' owners have not fetched or
// answered. Metrics and alerts are built on it.
type Backlog struct {
	// Queued is, by destination domain, the messages waiting to be
	// relayed to that domain's node; Oldest is when the node received the
	// oldest copy still waiting for it.
	Queued map[string]Waiting
	// Unfetched are local copies delivered but not retrieved yet.
	Unfetched Waiting
	// Unanswered are local copies retrieved but neither acknowledged nor
	// rejected yet.
	Unanswered Waiting
}

// Waiting counts what waits, and says since when the oldest of it has
// waited (when the node received it; zero if nothing waits).
type Waiting struct {
	Count  int
	Oldest time.Time
}

// Add counts one more that waits since t.
func (w *Waiting) Add(t time.Time) {
	if w.Count == 0 || t.Before(w.Oldest) {
		w.Oldest = t
	}
	w.Count++
}
