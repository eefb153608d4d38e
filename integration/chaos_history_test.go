package integration

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// history records what the fault harness's senders and recipients saw,
// as Jepsen records the operations of its clients: every send as it was
// sealed and how its submission ended, and every message a recipient
// fetched. The checker reads it once the run is over.
type history struct {
	mu       sync.Mutex
	start    time.Time
	sends    map[string]*sendRecord // by key: one logical message of one sender
	received []receiveRecord
	faults   []faultRecord
}

// sendOutcome is how a send's submission ended, as the sender knows it.
type sendOutcome int

const (
	// sendPending: sealed, and the submission has not ended yet, or ended
	// without a receipt or a rejection (the node could not be reached, or
	// was out of room); the harness resubmits those at the end.
	sendPending sendOutcome = iota
	// sendAccepted: the node's verified receipt is in hand; the message
	// must arrive exactly once.
	sendAccepted
	// sendRefused: the node refused it for good (a SubmissionRejection);
	// it must not arrive.
	sendRefused
)

// sendRecord is one logical message: the sealed message's id stays the
// same however often it is submitted.
type sendRecord struct {
	Key, ID, To string
	Outcome     sendOutcome
	Tries       int // submissions of the same sealed bytes
	Err         string
}

// receiveRecord is one message a recipient fetched and opened.
type receiveRecord struct {
	Mailbox, ID, Key string
	At               time.Duration
}

// faultRecord is one fault the nemesis injected.
type faultRecord struct {
	Kind, Target string
	At, Took     time.Duration
}

func newHistory() *history {
	return &history{start: time.Now(), sends: map[string]*sendRecord{}}
}

func (h *history) sealed(key, id, to string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.sends[key] = &sendRecord{Key: key, ID: id, To: to}
}

// submitted records the end of one submission of key's sealed message.
func (h *history) submitted(key string, o sendOutcome, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.sends[key]
	s.Tries++
	s.Outcome = o
	s.Err = ""
	if err != nil {
		s.Err = err.Error()
	}
}

func (h *history) receivedMsg(mailbox, id, key string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.received = append(h.received, receiveRecord{Mailbox: mailbox, ID: id, Key: key, At: time.Since(h.start)})
}

func (h *history) fault(kind, target string, began time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.faults = append(h.faults, faultRecord{Kind: kind, Target: target, At: began.Sub(h.start), Took: time.Since(began)})
}

// lastError is how key's last submission failed.
func (h *history) lastError(key string) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.sends[key].Err
}

// pending returns the keys whose submission has no answer yet.
func (h *history) pending() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var keys []string
	for k, s := range h.sends {
		if s.Outcome == sendPending {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}

// verdict classifies every message of a run.
type verdict struct {
	OK, Lost, Duplicated, Unexpected, Refused, Unresolved []string
}

func (v verdict) String() string {
	return fmt.Sprintf("ok %d, lost %d, duplicated %d, unexpected %d, refused %d, unresolved %d",
		len(v.OK), len(v.Lost), len(v.Duplicated), len(v.Unexpected), len(v.Refused), len(v.Unresolved))
}

// clean reports whether nothing was lost, duplicated, unexpected or left
// unresolved.
func (v verdict) clean() bool {
	return len(v.Lost)+len(v.Duplicated)+len(v.Unexpected)+len(v.Unresolved) == 0
}

// check classifies every message:
//   - ok: accepted by the node, and fetched by its recipient exactly once
//     under the id it was sealed with;
//   - lost: accepted, but never fetched;
//   - duplicated: fetched more than once, or under more than one id (a
//     second message created by a retry);
//   - unexpected: fetched, but never accepted (refused or unknown to the
//     senders), or by a mailbox it was not sent to;
//   - refused: refused by the node and never fetched;
//   - unresolved: still without an answer after the final resubmission.
func (h *history) check() verdict {
	h.mu.Lock()
	defer h.mu.Unlock()
	got := map[string][]receiveRecord{} // by key
	cameAnyway := map[string]bool{}     // refused, yet fetched
	var v verdict
	for _, r := range h.received {
		s := h.sends[r.Key]
		if s == nil || s.To != r.Mailbox || s.Outcome == sendRefused {
			v.Unexpected = append(v.Unexpected, fmt.Sprintf("%s %s at %s", r.Key, r.ID, r.Mailbox))
			if s != nil && s.Outcome == sendRefused {
				cameAnyway[r.Key] = true
			}
			continue
		}
		got[r.Key] = append(got[r.Key], r)
	}
	for _, k := range slices.Sorted(mapKeys(h.sends)) {
		s := h.sends[k]
		switch n := len(got[k]); {
		case cameAnyway[k]:
		case n > 1:
			v.Duplicated = append(v.Duplicated, k)
		case s.Outcome == sendPending:
			v.Unresolved = append(v.Unresolved, k)
		case s.Outcome == sendRefused:
			v.Refused = append(v.Refused, k)
		case n == 0:
			v.Lost = append(v.Lost, k)
		default:
			v.OK = append(v.OK, k)
		}
	}
	return v
}

// summary describes the run for the log and for docs/RELIABILITY.md.
func (h *history) summary() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	kinds := map[string]int{}
	tries := 0
	for _, f := range h.faults {
		kinds[f.Kind]++
	}
	for _, s := range h.sends {
		tries += s.Tries
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d messages, %d submissions, %d fetched, in %s; faults:", len(h.sends), tries, len(h.received), time.Since(h.start).Round(time.Second))
	for _, k := range slices.Sorted(mapKeys(kinds)) {
		fmt.Fprintf(&b, " %s %d", k, kinds[k])
	}
	return b.String()
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// TestFault_CheckerClassifies feeds the checker a history with one
// message of every class, so that a checker that calls everything ok
// fails here rather than hiding a loss in the fault run.
func TestFault_CheckerClassifies(t *testing.T) {
	h := newHistory()
	for _, s := range []struct {
		key, id string
		o       sendOutcome
	}{
		{"ok", "m-ok", sendAccepted},
		{"lost", "m-lost", sendAccepted},
		{"dup", "m-dup", sendAccepted},
		{"refused", "m-refused", sendRefused},
		{"refused-but-came", "m-rbc", sendRefused},
		{"unresolved", "m-unres", sendPending},
	} {
		h.sealed(s.key, s.id, "court")
		if s.o != sendPending {
			h.submitted(s.key, s.o, nil)
		}
	}
	h.receivedMsg("court", "m-ok", "ok")
	h.receivedMsg("court", "m-dup", "dup")
	h.receivedMsg("court", "m-dup2", "dup") // a second message for the same send
	h.receivedMsg("court", "m-rbc", "refused-but-came")
	h.receivedMsg("court", "m-x", "nobody-sent-it")
	h.receivedMsg("other", "m-ok", "ok") // at a mailbox it was not sent to

	v := h.check()
	want := verdict{
		OK:         []string{"ok"},
		Lost:       []string{"lost"},
		Duplicated: []string{"dup"},
		Refused:    []string{"refused"},
		Unresolved: []string{"unresolved"},
		Unexpected: []string{"refused-but-came m-rbc at court", "nobody-sent-it m-x at court", "ok m-ok at other"},
	}
	if fmt.Sprint(v) != fmt.Sprint(want) || !slices.Equal(v.Unexpected, want.Unexpected) || !slices.Equal(v.Duplicated, want.Duplicated) ||
		!slices.Equal(v.Lost, want.Lost) || !slices.Equal(v.OK, want.OK) {
		t.Fatalf("check() = %+v\nwant      %+v", v, want)
	}
	if v.clean() {
		t.Fatal("a history with a lost message was called clean")
	}
}
