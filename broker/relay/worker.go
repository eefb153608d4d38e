package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/broker/node"
	kurierv1 "kurier.dev/kurier/proto/kurier/v1"
)

// Clock is the time a worker schedules by; tests pass their own.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type systemClock struct{}

func (systemClock) Now() time.Time                         { return time.Now() }
func (systemClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Schedule settings. A failed relay is tried again after FirstBackoff,
// doubling with each failure up to MaxBackoff, each wait drawn at random
// from its upper half so that many nodes do not retry in step.
const (
	DefaultFirstBackoff = time.Second
	DefaultMaxBackoff   = 10 * time.Minute
	DefaultPoll         = time.Second
	// relayTimeout bounds one relay call; a 256 MiB payload takes seconds.
	// It stays well inside the claim's lease (node.RelayLease), which must
	// not run out while the outcome is being recorded.
	relayTimeout = node.RelayLease - 5*time.Minute
	pushTimeout  = 30 * time.Second
	batch        = 100
)

// Worker relays the messages queued for one peer domain and sends that
// domain's node the evidence queued for it, until its context ends.
type Worker struct {
	Node   *node.Node
	Peers  *Peers
	Domain string
	// Clock is the schedule's time; default the system clock.
	Clock Clock
	// Poll is how often the queues are looked at; default DefaultPoll.
	Poll time.Duration
	// FirstBackoff and MaxBackoff bound the waits between failed tries.
	FirstBackoff, MaxBackoff time.Duration
	Logger                   *slog.Logger

	once sync.Once
	wake chan struct{}
	// While the peer cannot be reached, every call fails alike: the worker
	// then waits for the peer as a whole, until the failed message's next
	// try, instead of trying each queued message in turn.
	downUntil time.Time
	// pushWait holds back the evidence of a copy that the other node did
	// not take yet, by message id and recipient; pushDown counts the
	// pushes in a row that found the other node unreachable.
	pushWait map[string]pushBackoff
	pushDown int
}

type pushBackoff struct {
	failures int
	next     time.Time
}

// Backoff returns how long to wait after the given number of failed
// tries: first doubled attempts-1 times, at most max, and then a random
// point in its upper half (jitter from r, a number in [0, 1)).
func Backoff(attempts int, first, max time.Duration, r float64) time.Duration {
	d := first
	for i := 1; i < attempts && d < max; i++ {
		d *= 2
	}
	d = min(d, max)
	return d/2 + time.Duration(r*float64(d/2))
}

func (w *Worker) defaults() {
	w.wake = make(chan struct{}, 1)
	w.pushWait = map[string]pushBackoff{}
	if w.Clock == nil {
		w.Clock = systemClock{}
	}
	if w.Poll <= 0 {
		w.Poll = DefaultPoll
	}
	if w.FirstBackoff <= 0 {
		w.FirstBackoff = DefaultFirstBackoff
	}
	if w.MaxBackoff <= 0 {
		w.MaxBackoff = DefaultMaxBackoff
	}
	if w.Logger == nil {
		w.Logger = slog.Default()
	}
	w.Logger = w.Logger.With(slog.String(broker.LogPeer, w.Domain))
}

// Run works the queues until ctx ends: a round at every Poll, and one
// soon after each Wake.
func (w *Worker) Run(ctx context.Context) {
	w.once.Do(w.defaults)
	for {
		w.Round(ctx)
		select {
		case <-ctx.Done():
			return
		case <-w.wake:
		case <-w.Clock.After(w.Poll):
		}
	}
}

// Wake tells the worker that something was queued for its domain. It never
// blocks; wakes that come while a round runs make one more round.
func (w *Worker) Wake() {
	w.once.Do(w.defaults)
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Round relays every queued message that is due and sends the queued
// evidence, once. Rounds of one worker must not run at the same time.
func (w *Worker) Round(ctx context.Context) {
	w.once.Do(w.defaults)
	w.relayDue(ctx)
	w.push(ctx)
}

// relayDue relays every due message, page by page, until the queue ends
// or the peer turns out to be down.
func (w *Worker) relayDue(ctx context.Context) {
	after := ""
	for {
		if ctx.Err() != nil || w.Clock.Now().Before(w.downUntil) {
			return
		}
		relays, next, err := w.Node.Relays(ctx, w.Domain, w.Clock.Now(), after, batch)
		if err != nil {
			if ctx.Err() == nil {
				w.Logger.Error("relay: read the outbound queue", slog.Any(broker.LogErr, err))
			}
			return
		}
		for _, r := range relays {
			if ctx.Err() != nil || w.Clock.Now().Before(w.downUntil) {
				return
			}
			w.relayClaimed(ctx, r)
		}
		if next == "" {
			return
		}
		after = next
	}
}

// relayClaimed claims r, relays it and records the outcome, all before
// the claim is released: Expire must not decide about r between a try and
// its record.
func (w *Worker) relayClaimed(ctx context.Context, r node.Relay) {
	r, release, ok, err := w.Node.Claim(ctx, r)
	if err != nil {
		w.Logger.Error("relay: read a queued message", slog.Any(broker.LogErr, err))
		return
	}
	if !ok {
		return
	}
	defer release()
	reached, err := w.relay(ctx, r)
	// What happened is recorded even when the node is stopping meanwhile.
	rec := context.WithoutCancel(ctx)
	if status.Code(err) == codes.AlreadyExists {
		// The other node holds another message under this id: no try
		// will change that.
		err = w.Node.GiveUp(rec, r, fmt.Sprintf("the node of %s holds another message under the id %s; send the message again, under a new id", w.Domain, r.Message.ID()))
		reached = false
	}
	if err != nil {
		w.failed(rec, r, err, reached)
	}
}

// failed schedules the next try of r after a failed one; reached says
// that the try may have reached the other node.
func (w *Worker) failed(ctx context.Context, r node.Relay, err error, reached bool) {
	now := w.Clock.Now()
	wait := Backoff(r.Outbound.Attempts+1, w.FirstBackoff, w.MaxBackoff, rand.Float64())
	if status.Code(err) == codes.Unavailable {
		// The peer itself cannot be reached: the others would fail alike.
		w.downUntil = now.Add(wait)
	}
	log := w.Logger.With(slog.String(broker.LogMsgID, r.Message.ID()))
	log.Warn("relay failed; trying again later", slog.Int("attempt", r.Outbound.Attempts+1), slog.Duration("wait", wait), slog.Any(broker.LogErr, err))
	if err := w.Node.RelayFailed(ctx, r, err, now.Add(wait), reached); err != nil {
		log.Error("relay: record the failed try", slog.Any(broker.LogErr, err))
	}
}

// relay makes one Relay call for r and records the answer. reached
// reports whether the call got as far as the other node may have acted on
// it (its header was sent): after that, a failure leaves the outcome
// unknown.
func (w *Worker) relay(ctx context.Context, r node.Relay) (reached bool, err error) {
	w.Logger.Debug("relay: start", slog.String(broker.LogMsgID, r.Message.ID()), slog.Int("recipients", len(r.Recipients)), slog.Int("attempt", r.Outbound.Attempts+1))
	c, err := w.Peers.conn(ctx, w.Domain)
	if err != nil {
		return false, err
	}
	ctx, cancel := context.WithTimeout(ctx, relayTimeout)
	defer cancel()
	var pr peer.Peer
	stream, err := kurierv1.NewRelayServiceClient(c).Relay(ctx, grpc.Peer(&pr))
	if err != nil {
		return false, remoteError(err)
	}
	// From the header on, the other node may act on the relay whatever
	// becomes of this process: say so durably first.
	if err := w.Node.Sending(ctx, r); err != nil {
		return false, err
	}
	resp, reached, err := w.send(ctx, stream, r)
	if err != nil {
		return reached, remoteError(err)
	}
	who, err := w.Peers.peerOf(&pr)
	if err != nil {
		return true, fmt.Errorf("the node of %s: %w", w.Domain, err)
	}
	answer, err := w.answer(resp, r)
	if err != nil {
		return true, err
	}
	return true, w.Node.Relayed(ctx, r, who, answer)
}

// answer takes the evidence for each recipient of r from resp.
func (w *Worker) answer(resp *kurierv1.RelayResponse, r node.Relay) ([][]broker.Evidence, error) {
	if len(resp.GetOutcomes()) != len(r.Recipients) {
		return nil, fmt.Errorf("%w: the node of %s answered for %d recipients, not %d", broker.ErrInvalid, w.Domain, len(resp.GetOutcomes()), len(r.Recipients))
	}
	answer := make([][]broker.Evidence, len(r.Recipients))
	for i, o := range resp.GetOutcomes() {
		if o.GetAddress() != r.Recipients[i] {
			return nil, fmt.Errorf("%w: the node of %s answered for %s instead of %s", broker.ErrInvalid, w.Domain, o.GetAddress(), r.Recipients[i])
		}
		for _, e := range o.GetEvidence() {
			answer[i] = append(answer[i], fromEvidence(e))
		}
	}
	return answer, nil
}

// send streams the header and the payload; the receiving node may answer
// before it has read the payload (a message it has already, or refuses).
// headerSent reports whether the header went out.
func (w *Worker) send(ctx context.Context, stream grpc.ClientStreamingClient[kurierv1.RelayRequest, kurierv1.RelayResponse], r node.Relay) (resp *kurierv1.RelayResponse, headerSent bool, err error) {
	h := &kurierv1.RelayHeader{
		Envelope: &kurierv1.SignedEnvelope{Envelope: r.Message.Envelope, Signature: r.Message.Signature},
		Expires:  timestamppb.New(r.Message.Expires),
	}
	for i, to := range r.Recipients {
		rr := &kurierv1.RelayRecipient{Address: to}
		for _, ev := range r.Chains[i] {
			rr.Chain = append(rr.Chain, toEvidence(ev))
		}
		h.Recipients = append(h.Recipients, rr)
	}
	if err := stream.Send(&kurierv1.RelayRequest{Part: &kurierv1.RelayRequest_Header{Header: h}}); err != nil {
		if errors.Is(err, io.EOF) {
			resp, err := stream.CloseAndRecv()
			return resp, true, err
		}
		return nil, false, err
	}
	payload, err := w.Node.OpenPayload(ctx, r.Message)
	if err != nil {
		return nil, true, err
	}
	defer payload.Close()
	buf := make([]byte, chunkSize)
	for {
		n, rerr := io.ReadFull(payload, buf)
		if n > 0 {
			if err := stream.Send(&kurierv1.RelayRequest{Part: &kurierv1.RelayRequest_Chunk{Chunk: buf[:n]}}); err != nil {
				if errors.Is(err, io.EOF) {
					break // the other node answered early; CloseAndRecv has it
				}
				return nil, true, err
			}
		}
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			break
		}
		if rerr != nil {
			return nil, true, fmt.Errorf("read payload of %s: %w", r.Message.ID(), rerr)
		}
	}
	resp, err = stream.CloseAndRecv()
	return resp, true, err
}

// push sends the evidence queued for the domain's node, page by page, in
// order of issue. An evidence the other node may take later (it waits for
// an earlier one of its copy, say) holds back the rest of its copy only,
// for a backoff; one the other node refuses for good leaves the queue; an
// unreachable node stops the round.
func (w *Worker) push(ctx context.Context) {
	if w.Clock.Now().Before(w.downUntil) {
		return
	}
	held := map[string]bool{} // copies whose next evidence must wait
	for from := uint64(0); ; {
		evs, err := w.Node.Pushes(ctx, w.Domain, from, batch)
		if err != nil {
			if ctx.Err() == nil {
				w.Logger.Error("relay: read the push queue", slog.Any(broker.LogErr, err))
			}
			return
		}
		for _, ev := range evs {
			if ctx.Err() != nil || !w.pushCopy(ctx, ev, held) {
				return
			}
		}
		if len(evs) < batch {
			return
		}
		from = evs[len(evs)-1].LeafIndex + 1
	}
}

// pushCopy sends one evidence unless its copy is held back, and reports
// whether the round goes on.
func (w *Worker) pushCopy(ctx context.Context, ev broker.Evidence, held map[string]bool) bool {
	key := ev.MessageID + " " + ev.Recipient
	if held[key] || w.Clock.Now().Before(w.pushWait[key].next) {
		held[key] = true
		return true
	}
	err := w.pushOne(ctx, ev)
	log := w.Logger.With(slog.String(broker.LogMsgID, ev.MessageID), slog.String(broker.LogMailbox, ev.Recipient), slog.String("type", ev.Type))
	switch {
	case err == nil:
	case status.Code(err) == codes.Unavailable:
		w.pushDown++
		w.downUntil = w.Clock.Now().Add(Backoff(w.pushDown, w.FirstBackoff, w.MaxBackoff, rand.Float64()))
		log.Warn("sending evidence back failed; trying again later", slog.Any(broker.LogErr, err))
		return false
	case permanent(err):
		log.Error("evidence refused by the sender's node; it stays in this node's store and log", slog.Any(broker.LogErr, err))
	default:
		pw := w.pushWait[key]
		pw.failures++
		pw.next = w.Clock.Now().Add(Backoff(pw.failures, w.FirstBackoff, w.MaxBackoff, rand.Float64()))
		w.pushWait[key] = pw
		held[key] = true
		log.Info("evidence not taken yet; trying again later", slog.Time("next", pw.next), slog.Any(broker.LogErr, err))
		return true
	}
	delete(w.pushWait, key)
	w.pushDown = 0
	if err := w.Node.Pushed(ctx, w.Domain, ev); err != nil {
		log.Error("relay: remove sent evidence from the queue", slog.Any(broker.LogErr, err))
		return false
	}
	return true
}

func (w *Worker) pushOne(ctx context.Context, ev broker.Evidence) error {
	c, err := w.Peers.conn(ctx, w.Domain)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, pushTimeout)
	defer cancel()
	_, err = kurierv1.NewRelayServiceClient(c).PushEvidence(ctx, &kurierv1.PushEvidenceRequest{Evidence: toEvidence(ev)})
	return err
}
