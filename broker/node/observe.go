package node

import (
	"context"
	"errors"

	"kurier.dev/kurier/broker"
)

// Observer learns what the node does, for its metrics. Its methods are
// called on the request's goroutine once the outcome is known, and must
// not block. Labels come from small fixed sets, so that a hostile caller
// cannot grow a metric's label space.
type Observer interface {
	// Submission is called once per submission with its outcome: one of
	// SubmissionOutcomes.
	Submission(outcome string)
	// EvidenceStored is called for each evidence once the store has made
	// it durable: the node's own and recipients' acknowledgements and
	// rejections alike, with the evidence type.
	EvidenceStored(typ string)
}

// Submission outcomes: accepted, the same sealed message again (answered
// with its first receipt), and the reasons for a refusal.
const (
	OutcomeAccepted = "accepted"
	OutcomeRepeated = "repeated"
	OutcomeOther    = "other"
)

// outcomeReasons names a refusal by the first sentinel it wraps, in this
// order.
var outcomeReasons = []struct {
	err  error
	name string
}{
	{broker.ErrUnknownOutcome, "unknown_outcome"},
	{broker.ErrUnauthenticated, "unauthenticated"},
	{broker.ErrForbidden, "forbidden"},
	{broker.ErrSignature, "signature"},
	{broker.ErrInvalid, "invalid"},
	{broker.ErrDuplicate, "duplicate_id"},
	{broker.ErrUnknownRecipient, "unknown_recipient"},
	{broker.ErrTooLarge, "too_large"},
	{broker.ErrRateLimited, "rate_limited"},
	{broker.ErrNoSpace, "no_space"},
	{broker.ErrUnavailable, "unavailable"},
	{context.Canceled, "canceled"},
	{context.DeadlineExceeded, "deadline_exceeded"},
}

// SubmissionOutcomes are all the outcomes Observer.Submission is given.
var SubmissionOutcomes = func() []string {
	out := []string{OutcomeAccepted, OutcomeRepeated}
	for _, r := range outcomeReasons {
		out = append(out, r.name)
	}
	return append(out, OutcomeOther)
}()

// submissionOutcome names what became of a submission.
func submissionOutcome(err error, repeated bool) string {
	switch {
	case err == nil && repeated:
		return OutcomeRepeated
	case err == nil:
		return OutcomeAccepted
	}
	for _, r := range outcomeReasons {
		if errors.Is(err, r.err) {
			return r.name
		}
	}
	return OutcomeOther
}

// noObserver is the Observer of a node configured without one.
type noObserver struct{}

func (noObserver) Submission(string)     {}
func (noObserver) EvidenceStored(string) {}

// observedStore tells the observer of every evidence its store made
// durable; it wraps exactly the Store methods that store evidence.
type observedStore struct {
	Store
	obs Observer
}

func (s observedStore) stored(evs ...broker.Evidence) {
	for _, ev := range evs {
		s.obs.EvidenceStored(ev.Type)
	}
}

func (s observedStore) CreateMessage(ctx context.Context, m *broker.Message, copies []broker.Copy, evs []broker.Evidence, out []broker.Outbound) ([]broker.Evidence, error) {
	stored, err := s.Store.CreateMessage(ctx, m, copies, evs, out)
	if err == nil {
		s.stored(stored...)
	}
	return stored, err
}

func (s observedStore) AddCopies(ctx context.Context, id, envSHA256 string, copies []broker.Copy, evs []broker.Evidence) ([]broker.Evidence, error) {
	stored, err := s.Store.AddCopies(ctx, id, envSHA256, copies, evs)
	if err == nil {
		s.stored(stored...)
	}
	return stored, err
}

func (s observedStore) AppendEvidence(ctx context.Context, step broker.Step) (broker.Evidence, error) {
	ev, err := s.Store.AppendEvidence(ctx, step)
	if err == nil {
		s.stored(ev)
	}
	return ev, err
}

func (s observedStore) AddEvidence(ctx context.Context, ev broker.Evidence) (broker.Evidence, error) {
	ev, err := s.Store.AddEvidence(ctx, ev)
	if err == nil {
		s.stored(ev)
	}
	return ev, err
}

func (s observedStore) FinishRelay(ctx context.Context, domain, id string, steps []broker.Step, done bool) ([]broker.Evidence, error) {
	stored, err := s.Store.FinishRelay(ctx, domain, id, steps, done)
	if err == nil {
		s.stored(stored...)
	}
	return stored, err
}
