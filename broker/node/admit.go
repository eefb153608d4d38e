package node

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/pki"
)

// LimitError is the error of a request refused for now by a rate limit, a
// quota or a sender's share of the upload slots: it wraps the reason
// (broker.ErrRateLimited) and says when the same request may succeed, so
// that broker/rpc can tell the caller.
type LimitError struct {
	Err        error
	RetryAfter time.Duration
}

// Error returns the reason, which names the limit and when to try again.
func (e *LimitError) Error() string { return e.Err.Error() }

// Unwrap returns the reason.
func (e *LimitError) Unwrap() error { return e.Err }

// Admission defaults. A participant's are generous for a person or a
// Fachverfahren and far below what one node can take (a flood reached
// ~950 messages a second); a relaying node's are ten times higher, since
// it carries all of its domains' senders.
const (
	DefaultMessagesPerSecond      = 10
	DefaultMessageBurst           = 100
	DefaultQuotaBytesPerDay       = 10 << 30
	DefaultRelayMessagesPerSecond = 100
	DefaultRelayMessageBurst      = 1000
	DefaultRelayQuotaBytesPerDay  = 100 << 30
)

// maxBuckets is how many senders' buckets the node keeps before it drops
// those that are full again (whose senders have been quiet long enough
// that forgetting them changes nothing).
const maxBuckets = 10000

// quota is what one kind of sender may hand in.
type quota struct {
	perSecond   float64 // messages
	burst       int     // messages
	bytesPerDay int64
}

// bucketsOf is one sender's token buckets: messages, and payload bytes
// refilled evenly over a day (a rolling day, not a calendar one).
type bucketsOf struct {
	msgs, bytes *rate.Limiter
}

// admission holds each sender's buckets. Payloads are never deleted, so
// a quota on bytes held would lock a busy sender out for good; the node
// bounds instead how fast each sender may fill its disk, and the disk
// alarm (Config.Space) protects the rest.
type admission struct {
	participant, relay quota

	mu      sync.Mutex
	senders map[string]*bucketsOf // by pki.Peer.String()
}

// bucketsFor returns the buckets of caller, made on first use.
func (a *admission) bucketsFor(caller pki.Peer, now time.Time) *bucketsOf {
	q := a.participant
	if caller.Kind == pki.KindNode {
		q = a.relay
	}
	key := caller.String()
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.senders == nil {
		a.senders = map[string]*bucketsOf{}
	}
	if b := a.senders[key]; b != nil {
		return b
	}
	if len(a.senders) >= maxBuckets {
		for k, b := range a.senders {
			if b.msgs.TokensAt(now) >= float64(b.msgs.Burst()) && b.bytes.TokensAt(now) >= float64(b.bytes.Burst()) {
				delete(a.senders, k)
			}
		}
	}
	b := &bucketsOf{
		msgs:  rate.NewLimiter(rate.Limit(q.perSecond), q.burst),
		bytes: rate.NewLimiter(rate.Limit(float64(q.bytesPerDay)/(24*60*60)), int(min(q.bytesPerDay, math.MaxInt))),
	}
	a.senders[key] = b
	return b
}

// takeMessage charges one message to caller, or refuses it with a
// *LimitError that says when the next one fits.
func (a *admission) takeMessage(caller pki.Peer, now time.Time) error {
	b := a.bucketsFor(caller, now)
	r := b.msgs.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		wait := roundUp(d)
		return &LimitError{RetryAfter: wait, Err: fmt.Errorf("%w: %s has handed in more than %g messages a second (%d at once); try again in %s",
			broker.ErrRateLimited, caller, b.msgs.Limit(), b.msgs.Burst(), wait)}
	}
	return nil
}

// takeBytes charges a payload of size bytes to caller and returns the
// function that gives them back, for a message that is not stored after
// all. A payload that does not fit now is refused with a *LimitError; one
// larger than the whole day's quota with broker.ErrTooLarge.
func (a *admission) takeBytes(caller pki.Peer, size int64, now time.Time) (refund func(), err error) {
	b := a.bucketsFor(caller, now)
	if size > int64(b.bytes.Burst()) {
		return nil, fmt.Errorf("%w: a payload of %d bytes is over the %d bytes %s may hand in a day", broker.ErrTooLarge, size, b.bytes.Burst(), caller)
	}
	r := b.bytes.ReserveN(now, int(size))
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		wait := roundUp(d)
		return nil, &LimitError{RetryAfter: wait, Err: fmt.Errorf("%w: %s has used its quota of %d payload bytes a day; a payload of %d bytes fits again in %s",
			broker.ErrQuota, caller, b.bytes.Burst(), size, wait)}
	}
	return func() { r.CancelAt(now) }, nil
}

// roundUp rounds d up to whole seconds, at least one: the hint a caller
// waits for.
func roundUp(d time.Duration) time.Duration {
	return max(time.Second, (d + time.Second - 1).Truncate(time.Second))
}

// admitPayload asks the disk alarm for room for m's payload, then
// charges it to caller's quota. It returns the function that ends the
// admission: done false gives the quota back (nothing was stored), and
// either way the room is given back, since a stored payload is counted by
// the filesystem.
func (n *Node) admitPayload(caller pki.Peer, m *broker.Message) (end func(stored bool), err error) {
	if m.Header.PayloadSize > n.limits.MaxPayload {
		// Refused for its size before anything is written, and told so.
		return func(bool) {}, nil
	}
	room := func() {}
	if n.space != nil {
		if room, err = n.space(m.Header.PayloadSize); err != nil {
			if errors.Is(err, broker.ErrNoSpace) {
				return nil, err
			}
			// Any other failure (the free space unreadable) names the
			// node's store: the operator's log gets it, the sender a
			// reason to try again.
			n.log.Error("cannot tell whether the disk has room for a message", slog.String(broker.LogMsgID, m.ID()), slog.Any(broker.LogErr, err))
			return nil, fmt.Errorf("%w: this node cannot tell now whether its disk has room for the message; try again later", broker.ErrUnavailable)
		}
	}
	refund, err := n.admit.takeBytes(caller, m.Header.PayloadSize, n.now())
	if err != nil {
		room()
		return nil, err
	}
	return func(stored bool) {
		room()
		if !stored {
			refund()
		}
	}, nil
}

// commitError says what a failed write means for whoever asked for it: a
// new message, relayed copies or rejections, or a step of a copy
// (Retrieval, Acknowledgement, Rejection). A refusal the store made before
// writing (a bad blob, a record too large, a copy changed meanwhile)
// stays what it is; anything else (the commit or its fsync failed, the
// request was given up while in a batch being committed) may have stored
// the write, so the caller is told that the outcome is unknown and to ask
// again, which the node answers with what it stored if it did.
func commitError(what string, err error) error {
	for _, known := range []error{broker.ErrInvalid, broker.ErrNotFound, broker.ErrTooLarge, broker.ErrState, broker.ErrConflict, broker.ErrExists} {
		if errors.Is(err, known) {
			return fmt.Errorf("%s: %w", what, err)
		}
	}
	return fmt.Errorf("%s: %w: %w", what, broker.ErrUnknownOutcome, err)
}
