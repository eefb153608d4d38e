package relay_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/broker/node"
	"kurier.dev/kurier/broker/relay"
	"kurier.dev/kurier/broker/rpc"
	"kurier.dev/kurier/broker/store"
	"kurier.dev/kurier/envelope"
	"kurier.dev/kurier/evidence"
	"kurier.dev/kurier/pki"
	"kurier.dev/kurier/pki/cms"
	"kurier.dev/kurier/pki/pkitest"
	kurierv1 "kurier.dev/kurier/proto/kurier/v1"
	"kurier.dev/kurier/tlog"
)

var fx *pkitest.PKI

func TestMain(m *testing.M) { pkitest.Main(m, &fx) }

const (
	landgericht = "landgericht.example"
	judge       = "eingang@landgericht.example"
)

// clock is the time of a test: the nodes and the worker read it, the test
// moves it. skew is added for the court's node, whose clock may be off.
type clock struct {
	mu     sync.Mutex
	now    time.Time
	skew   time.Duration
	rounds chan struct{}
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) courtNow() time.Time { return c.Now().Add(c.skew) }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// After never fires: the tests run rounds themselves, or wake the worker.
// A worker calls it at the end of each round of Run, which rounds, if
// set, is told of.
func (c *clock) After(time.Duration) <-chan time.Time {
	c.mu.Lock()
	rounds := c.rounds
	c.mu.Unlock()
	if rounds != nil {
		rounds <- struct{}{}
	}
	return nil
}

// peerNode is a node in this process, served over mutual TLS on loopback.
type peerNode struct {
	node  *node.Node
	db    *store.DB
	trust *pki.TrustStore
	peers *relay.Peers
	addr  string
	srv   *rpc.Server
	tls   func() *rpc.Server
	// worker, if set, is woken when the node queues for its domain.
	worker atomic.Pointer[relay.Worker]
}

// serve (re)starts the node's gRPC server on its address.
func (p *peerNode) serve(t testing.TB) {
	t.Helper()
	lis, err := net.Listen("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	p.addr = lis.Addr().String()
	p.srv = p.tls()
	go p.srv.Serve(lis)
}

// federation is two nodes: the test PKI's (stadt.example and
// amtsgericht.example) and one for landgericht.example.
type federation struct {
	city, court *peerNode
	judgeID     *pki.Identity
	clock       *clock
	payloadSize int // of the messages send makes; default 600 KiB
}

func newFederation(t testing.TB) *federation { return newFederationWith(t, node.Limits{}) }

// The court's identities, issued once: an RSA-3072 key takes a second.
var court struct {
	once        sync.Once
	node, judge *pki.Identity
	logKey      string
	err         error
}

func courtIdentities(t testing.TB) (*pki.Identity, *pki.Identity, string) {
	t.Helper()
	court.once.Do(func() {
		dir := filepath.Join(fx.Dir, "landgericht")
		if court.node, court.err = fx.CA.IssueNode(filepath.Join(dir, "node"), []string{landgericht}); court.err != nil {
			return
		}
		if court.judge, court.err = fx.CA.IssueParticipant(filepath.Join(dir, "judge"), judge); court.err != nil {
			return
		}
		court.logKey, _, court.err = tlog.GenerateKey(tlog.Origin(landgericht))
	})
	if court.err != nil {
		t.Fatal(court.err)
	}
	return court.node, court.judge, court.logKey
}

// newFederationWith gives the court's node the limits courtLimits.
func newFederationWith(t testing.TB, courtLimits node.Limits) *federation {
	t.Helper()
	return newFederationOf(t, courtLimits)
}

// newFederationOf gives the court's node the limits courtLimits and, beside
// the judge, the mailboxes more.
func newFederationOf(t testing.TB, courtLimits node.Limits, more ...node.Participant) *federation {
	t.Helper()
	courtID, judgeID, courtKey := courtIdentities(t)
	f := &federation{judgeID: judgeID, clock: &clock{now: time.Now()}}
	f.city = &peerNode{addr: "127.0.0.1:0"}
	f.court = &peerNode{addr: "127.0.0.1:0"}
	// Listen first: each node's peers name the other's address.
	for _, p := range []*peerNode{f.city, f.court} {
		lis, err := net.Listen("tcp", p.addr)
		if err != nil {
			t.Fatal(err)
		}
		p.addr = lis.Addr().String()
		lis.Close()
	}
	var parts []node.Participant
	for addr, id := range fx.IDs {
		parts = append(parts, node.Participant{Address: addr, EncryptionCert: id.EncCert})
	}
	f.city.start(t, f.clock.Now, fx.Node, pkitest.Domains, fx.LogKey, parts, node.Limits{}, map[string]string{landgericht: f.court.addr})
	f.court.start(t, f.clock.courtNow, courtID, []string{landgericht}, courtKey,
		append([]node.Participant{{Address: judge, EncryptionCert: judgeID.EncCert}}, more...), courtLimits,
		map[string]string{"stadt.example": f.city.addr, "amtsgericht.example": f.city.addr})
	return f
}

func (p *peerNode) start(t testing.TB, now func() time.Time, id *pki.Identity, domains []string, logKey string, parts []node.Participant, limits node.Limits, peers map[string]string) {
	t.Helper()
	quiet := slog.New(slog.DiscardHandler)
	trust, err := fx.Trust()
	if err != nil {
		t.Fatal(err)
	}
	p.trust = trust
	if p.db, err = store.Open(t.TempDir(), store.Options{Small: true, Logger: quiet}); err != nil {
		t.Fatal(err)
	}
	if p.peers, err = relay.NewPeers(id, trust, peers); err != nil {
		t.Fatal(err)
	}
	p.peers.WakeWait = 100 * time.Millisecond
	p.node, err = node.New(p.db, node.Config{
		Domains: domains, Signer: pkitest.Signer(id), LogKey: logKey, Trust: trust,
		Participants: parts, Peers: p.peers, Limits: limits, Now: now, Logger: quiet,
		Queued: func(d string) {
			if w := p.worker.Load(); w != nil && w.Domain == d {
				w.Wake()
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	p.tls = func() *rpc.Server {
		srv, err := rpc.NewServer(p.node, pki.ServerTLS(id, trust, quiet), rpc.Options{Trust: trust, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		return srv
	}
	p.serve(t)
	t.Cleanup(func() { p.srv.Stop(); p.peers.Close(); p.db.Close() })
}

// worker returns a relay worker of p for domain on the test's clock.
func (f *federation) worker(p *peerNode, domain string) *relay.Worker {
	return &relay.Worker{Node: p.node, Peers: p.peers, Domain: domain, Clock: f.clock, Logger: slog.New(slog.DiscardHandler)}
}

// send submits a message from the agency to to at the city's node.
func (f *federation) send(t testing.TB, expires time.Duration, to ...string) string {
	t.Helper()
	id, err := f.submit(t, expires, to...)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// submit submits a message from the agency to to at the city's node and
// returns its id and the node's answer.
func (f *federation) submit(t testing.TB, expires time.Duration, to ...string) (string, error) {
	t.Helper()
	size := f.payloadSize
	if size == 0 {
		size = 600 << 10
	}
	payload := make([]byte, size)
	rand.Read(payload)
	id, err := envelope.NewID()
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(payload)
	now := f.clock.Now().UTC()
	env := &envelope.Envelope{
		Version: envelope.Version, ID: id, From: pkitest.Agency, To: to, Subject: "Berufung",
		Created: now, Expires: now.Add(expires), PayloadSHA256: hex.EncodeToString(sum[:]), PayloadSize: int64(len(payload)),
		Files: []envelope.File{{Name: "berufung.pdf", Size: 100, SHA256: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}},
	}
	b, err := env.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	sig, err := cms.SignDetached(b, pkitest.Signer(fx.IDs[pkitest.Agency]))
	if err != nil {
		t.Fatal(err)
	}
	caller := pki.Peer{Kind: pki.KindParticipant, Address: pkitest.Agency}
	_, err = f.city.node.Submit(context.Background(), caller, b, sig, bytes.NewReader(payload))
	return id, err
}

// queued returns the one relay the city has queued for the court, as a
// claim reads it (and releases it again).
func (f *federation) queued(t testing.TB) node.Relay {
	t.Helper()
	ctx := context.Background()
	relays, _, err := f.city.node.Relays(ctx, landgericht, f.clock.Now(), "", 0)
	if err != nil || len(relays) != 1 {
		t.Fatalf("relays %v (%v), want one", relays, err)
	}
	r, release, ok, err := f.city.node.Claim(ctx, relays[0])
	if err != nil || !ok {
		t.Fatalf("claim %v, %v (%v)", relays[0].Message.ID(), ok, err)
	}
	release()
	return r
}

// handOver gives r to the court's node directly, as the city's worker
// would over the wire, and returns the court's answer, which the city
// never sees: as if the answer were lost.
func (f *federation) handOver(t testing.TB, r node.Relay) ([][]broker.Evidence, error) {
	t.Helper()
	ctx := context.Background()
	p, err := f.city.node.OpenPayload(ctx, r.Message)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	in := node.Incoming{Envelope: r.Message.Envelope, Signature: r.Message.Signature, Recipients: r.Recipients, Chains: r.Chains, Expires: r.Message.Expires}
	return f.court.node.Receive(ctx, pki.Peer{Kind: pki.KindNode, Domains: pkitest.Domains}, in, p)
}

// TestNode_SubmitRemoteRefused submits to recipients at other domains that
// cannot be reached: an unknown mailbox or domain is refused with a
// SubmissionRejection; a court whose node is down and has never answered
// for the address is "try again later", and nothing is stored.
func TestNode_SubmitRemoteRefused(t *testing.T) {
	ctx := context.Background()
	f := newFederation(t)
	for name, to := range map[string]string{"unknown mailbox": "niemand@landgericht.example", "unknown domain": "poststelle@kreis.example"} {
		t.Run(name, func(t *testing.T) {
			id, err := f.submit(t, time.Hour, to)
			var rej *node.Rejection
			if !errors.As(err, &rej) || !errors.Is(err, broker.ErrUnknownRecipient) || rej.Evidence.Type != "SubmissionRejection" {
				t.Fatalf("Submit to %s: %v, want a SubmissionRejection for an unknown recipient", to, err)
			}
			if evs, _ := f.city.db.Evidence(ctx, id); len(evs) != 1 || evs[0].Type != "SubmissionRejection" {
				t.Fatalf("stored evidence: %v, want the SubmissionRejection", evs)
			}
		})
	}
	t.Run("court unreachable", func(t *testing.T) {
		f.court.srv.Stop()
		id, err := f.submit(t, time.Hour, judge)
		var rej *node.Rejection
		if !errors.Is(err, broker.ErrUnavailable) || errors.As(err, &rej) {
			t.Fatalf("Submit while the court is down: %v, want ErrUnavailable without a rejection", err)
		}
		if evs, _ := f.city.db.Evidence(ctx, id); len(evs) != 0 {
			t.Fatalf("stored evidence: %v, want none", evs)
		}
		if q, _ := f.city.db.Outbound(ctx, landgericht, "", 0); len(q) != 0 {
			t.Fatalf("queued: %v, want nothing", q)
		}
	})
}

// chain returns the types of rcpt's evidence of message id at p, and where
// each is logged ("" for p's own log), after checking that the evidence
// forms one chain, as every verifier checks it.
func chain(t testing.TB, p *peerNode, id, rcpt string) (types, logs []string) {
	t.Helper()
	evs, err := p.db.Evidence(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	var links []evidence.Link
	for _, ev := range evs {
		if ev.Recipient != rcpt {
			continue
		}
		parsed, err := evidence.Parse(ev.DER)
		if err != nil || string(parsed.Statement.Type) != ev.Type {
			t.Fatalf("stored %s: %v", ev.Type, err)
		}
		links = append(links, parsed.Link())
		types, logs = append(types, ev.Type), append(logs, ev.Log)
	}
	if err := evidence.CheckChain(links); err != nil {
		t.Fatalf("the chain of %s at the node: %v", rcpt, err)
	}
	return types, logs
}

func TestWorker_RelayAndEvidenceBack(t *testing.T) {
	ctx := context.Background()
	f := newFederation(t)
	// The city's node asks the court's directory at submission.
	id := f.send(t, time.Hour, judge, pkitest.Court)
	f.worker(f.city, landgericht).Round(ctx)

	types, logs := chain(t, f.city, id, judge)
	if strings.Join(types, ",") != "SubmissionAcceptance,RelayAcceptance,Delivery" {
		t.Fatalf("chain at the city's node: %v", types)
	}
	if logs[0] != "" || logs[1] != tlog.Origin(landgericht) || logs[2] != tlog.Origin(landgericht) {
		t.Fatalf("logs of the chain at the city's node: %q, want its own, then the court's", logs)
	}
	if local, _ := chain(t, f.city, id, pkitest.Court); strings.Join(local, ",") != "SubmissionAcceptance,Delivery" {
		t.Fatalf("the local recipient's chain: %v", local)
	}
	// The court's log holds only what the court issued.
	if n, err := f.court.db.LogSize(ctx); err != nil || n != 2 {
		t.Fatalf("court log size %d (%v), want 2 (RelayAcceptance, Delivery)", n, err)
	}

	judgeP := pki.Peer{Kind: pki.KindParticipant, Address: judge}
	_, _, r, err := f.court.node.Fetch(ctx, judgeP, id)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, r)
	r.Close()
	if _, err := f.court.node.Retrieved(ctx, judgeP, id); err != nil {
		t.Fatal(err)
	}
	f.worker(f.court, "stadt.example").Round(ctx)
	if types, _ := chain(t, f.city, id, judge); strings.Join(types, ",") != "SubmissionAcceptance,RelayAcceptance,Delivery,Retrieval" {
		t.Fatalf("chain at the city's node after the retrieval: %v", types)
	}
	if left, err := f.court.node.Pushes(ctx, "stadt.example", 0, 0); err != nil || len(left) != 0 {
		t.Fatalf("push queue after the push: %v (%v)", left, err)
	}
	if n, err := f.city.db.LogSize(ctx); err != nil || n != 3 {
		t.Fatalf("city log size %d (%v), want 3: its two SubmissionAcceptances and the local Delivery, nothing of the court's", n, err)
	}
}

func TestWorker_RetriesWithBackoff(t *testing.T) {
	ctx := context.Background()
	f := newFederation(t)
	id := f.send(t, time.Hour, judge) // the directory answer is cached now
	f.court.srv.Stop()
	w := f.worker(f.city, landgericht)

	attempts := func() broker.Outbound {
		t.Helper()
		q, err := f.city.db.Outbound(ctx, landgericht, "", 0)
		if err != nil || len(q) != 1 {
			t.Fatalf("outbound queue %v (%v), want the message", q, err)
		}
		return q[0]
	}
	w.Round(ctx)
	first := attempts()
	if first.Attempts != 1 || first.LastError == "" {
		t.Fatalf("after a failed try: %+v", first)
	}
	wait := first.NextTry.Sub(f.clock.Now())
	if wait < relay.DefaultFirstBackoff/2 || wait > relay.DefaultFirstBackoff {
		t.Fatalf("first wait %s, want within [%s, %s]", wait, relay.DefaultFirstBackoff/2, relay.DefaultFirstBackoff)
	}
	w.Round(ctx)
	if again := attempts(); again.Attempts != 1 {
		t.Fatalf("tried again before the backoff ended: %+v", again)
	}
	f.clock.add(wait)
	w.Round(ctx)
	second := attempts()
	if second.Attempts != 2 || second.NextTry.Sub(f.clock.Now()) < relay.DefaultFirstBackoff {
		t.Fatalf("after the second failure: %+v, want a longer wait", second)
	}

	f.court.serve(t)
	f.clock.add(second.NextTry.Sub(f.clock.Now()))
	w.Round(ctx)
	if types, _ := chain(t, f.city, id, judge); strings.Join(types, ",") != "SubmissionAcceptance,RelayAcceptance,Delivery" {
		q, _ := f.city.db.Outbound(ctx, landgericht, "", 0)
		t.Fatalf("chain once the court is back: %v; queue %+v", types, q)
	}
	if q, _ := f.city.db.Outbound(ctx, landgericht, "", 0); len(q) != 0 {
		t.Fatalf("still queued after the relay: %v", q)
	}
}

// TestWorker_PeerDown queues several messages for a court whose node is
// down: a round tries one, and waits with the rest, instead of trying
// each against the same closed door.
func TestWorker_PeerDown(t *testing.T) {
	ctx := context.Background()
	f := newFederation(t)
	for range 3 {
		f.send(t, time.Hour, judge)
	}
	f.court.srv.Stop()
	w := f.worker(f.city, landgericht)
	w.Round(ctx)
	q, err := f.city.db.Outbound(ctx, landgericht, "", 0)
	if err != nil || len(q) != 3 {
		t.Fatalf("queue %v (%v)", q, err)
	}
	if q[0].Attempts != 1 || q[1].Attempts != 0 || q[2].Attempts != 0 {
		t.Fatalf("attempts %d, %d, %d; want only the first tried", q[0].Attempts, q[1].Attempts, q[2].Attempts)
	}
	f.court.serve(t)
	f.clock.add(q[0].NextTry.Sub(f.clock.Now()))
	w.Round(ctx)
	if q, _ := f.city.db.Outbound(ctx, landgericht, "", 0); len(q) != 0 {
		t.Fatalf("still queued once the court is back: %v", q)
	}
}

func TestWorker_ExpiryEndsRelay(t *testing.T) {
	ctx := context.Background()
	f := newFederation(t)
	id := f.send(t, time.Minute, judge)
	// The court is gone before the city connects: no try can have reached
	// it, so the city gives up at the expiry itself.
	f.court.srv.Stop()
	f.city.peers.Close()
	w := f.worker(f.city, landgericht)
	w.Round(ctx)
	if o, err := f.city.db.OutboundEntry(ctx, landgericht, id); err != nil || o.Attempts != 1 || o.Uncertain {
		t.Fatalf("after a failed connection: %+v (%v), want one try that cannot have reached the court", o, err)
	}
	if n, err := f.city.node.Expire(ctx); err != nil || n != 0 {
		t.Fatalf("Expire before the expiry ended %d (%v)", n, err)
	}
	f.clock.add(time.Minute)
	if n, err := f.city.node.Expire(ctx); err != nil || n != 1 {
		t.Fatalf("Expire after the expiry ended %d (%v), want 1", n, err)
	}
	types, logs := chain(t, f.city, id, judge)
	if strings.Join(types, ",") != "SubmissionAcceptance,NonDelivery" || logs[1] != "" {
		t.Fatalf("chain after the expiry: %v in %q", types, logs)
	}
	f.court.serve(t)
	f.clock.add(time.Hour)
	w.Round(ctx)
	if q, _ := f.city.db.Outbound(ctx, landgericht, "", 0); len(q) != 0 {
		t.Fatalf("an expired message is still queued: %v", q)
	}
	if entries, _, err := f.court.node.Inbox(ctx, pki.Peer{Kind: pki.KindParticipant, Address: judge}, "", 0); err != nil || len(entries) != 0 {
		t.Fatalf("the court received an expired message: %v (%v)", entries, err)
	}
}

func TestWorker_RefusedByCourt(t *testing.T) {
	ctx := context.Background()
	f := newFederationWith(t, node.Limits{MaxPayload: 100 << 10})
	id := f.send(t, time.Hour, judge)
	f.worker(f.city, landgericht).Round(ctx)
	types, logs := chain(t, f.city, id, judge)
	if strings.Join(types, ",") != "SubmissionAcceptance,RelayRejection,NonDelivery" {
		t.Fatalf("chain after the court refused: %v", types)
	}
	if logs[1] != tlog.Origin(landgericht) || logs[2] != "" {
		t.Fatalf("logs %q: the RelayRejection is the court's, the NonDelivery the city's", logs)
	}
	c, err := f.city.db.Copy(ctx, id, judge)
	if err != nil || c.State != broker.StateUndeliverable || !c.Deadline.IsZero() {
		t.Fatalf("the city's copy after the refusal: %+v (%v)", c, err)
	}
	if q, _ := f.city.db.Outbound(ctx, landgericht, "", 0); len(q) != 0 {
		t.Fatalf("a refused message is still queued: %v", q)
	}

	// The same relay again gets the same rejection, and the court's log
	// does not grow.
	before, err := f.court.db.LogSize(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m, err := f.city.db.Message(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	evs, _ := f.city.db.Evidence(ctx, id)
	sa := evs[0]
	sa.Log = tlog.Origin("stadt.example")
	in := node.Incoming{Envelope: m.Envelope, Signature: m.Signature, Recipients: []string{judge}, Chains: [][]broker.Evidence{{sa}}}
	answer, err := f.court.node.Receive(ctx, pki.Peer{Kind: pki.KindNode, Domains: pkitest.Domains}, in, bytes.NewReader(nil))
	if err != nil {
		t.Fatal(err)
	}
	if len(answer[0]) != 1 || !bytes.Equal(answer[0][0].DER, evs[1].DER) {
		t.Fatalf("answer to the repeated relay: %v, want the first RelayRejection", answer)
	}
	if after, err := f.court.db.LogSize(ctx); err != nil || after != before {
		t.Fatalf("the court's log grew from %d to %d (%v) on a repeated refusal", before, after, err)
	}

	// The same envelope with another SubmissionAcceptance is not refused
	// anew: that would let a node have the court sign without end.
	st := mustParse(t, sa.DER)
	st.Time = st.Time.Add(time.Second)
	der, err := evidence.Sign(st, pkitest.Signer(fx.Node))
	if err != nil {
		t.Fatal(err)
	}
	in.Chains = [][]broker.Evidence{{{DER: der, Log: sa.Log}}}
	if _, err := f.court.node.Receive(ctx, pki.Peer{Kind: pki.KindNode, Domains: pkitest.Domains}, in, bytes.NewReader(nil)); !errors.Is(err, broker.ErrInvalid) {
		t.Fatalf("a relay with another chain: %v, want ErrInvalid", err)
	}
	if after, err := f.court.db.LogSize(ctx); err != nil || after != before {
		t.Fatalf("the court's log grew from %d to %d (%v)", before, after, err)
	}
}

func TestNode_ReceiveTwice(t *testing.T) {
	ctx := context.Background()
	f := newFederation(t)
	id := f.send(t, time.Hour, judge)
	r := f.queued(t)
	cityNode := pki.Peer{Kind: pki.KindNode, Domains: pkitest.Domains}
	in := node.Incoming{Envelope: r.Message.Envelope, Signature: r.Message.Signature, Recipients: r.Recipients, Chains: r.Chains}
	open := func() io.Reader {
		p, err := f.city.node.OpenPayload(ctx, r.Message)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		return p
	}
	first, err := f.court.node.Receive(ctx, cityNode, in, open())
	if err != nil {
		t.Fatal(err)
	}
	second, err := f.court.node.Receive(ctx, cityNode, in, open())
	if err != nil {
		t.Fatal(err)
	}
	if len(first[0]) != 2 || len(second[0]) != 2 || !bytes.Equal(first[0][1].DER, second[0][1].DER) {
		t.Fatalf("answers differ: %v and %v", first, second)
	}
	// Years later, the sender's certificate long expired, the court still
	// tells the city what became of the message.
	f.clock.skew = 3 * 365 * 24 * time.Hour
	late, err := f.court.node.Receive(ctx, cityNode, in, open())
	if err != nil || !bytes.Equal(late[0][1].DER, first[0][1].DER) {
		t.Fatalf("a relay again after the sender's certificate expired: %v (%v), want the stored answer", late, err)
	}
	f.clock.skew = 0
	entries, _, err := f.court.node.Inbox(ctx, pki.Peer{Kind: pki.KindParticipant, Address: judge}, "", 0)
	if err != nil || len(entries) != 1 || entries[0].Message.ID() != id {
		t.Fatalf("inbox after two relays: %v (%v), want the message once", entries, err)
	}

	t.Run("a node that does not serve the sender's domain", func(t *testing.T) {
		other := pki.Peer{Kind: pki.KindNode, Domains: []string{"kreis.example"}}
		if _, err := f.court.node.Receive(ctx, other, in, open()); !errors.Is(err, broker.ErrForbidden) {
			t.Fatalf("Receive from %s: %v, want ErrForbidden", other, err)
		}
	})
	t.Run("a participant", func(t *testing.T) {
		if _, err := f.court.node.Receive(ctx, pki.Peer{Kind: pki.KindParticipant, Address: pkitest.Agency}, in, open()); !errors.Is(err, broker.ErrForbidden) {
			t.Fatalf("Receive from a participant: %v, want ErrForbidden", err)
		}
	})
	t.Run("a chain that was tampered with", func(t *testing.T) {
		bad := in
		bad.Chains = [][]broker.Evidence{{r.Chains[0][0]}}
		der := bytes.Clone(r.Chains[0][0].DER)
		der[len(der)/2] ^= 1
		bad.Chains[0][0].DER = der
		if _, err := f.court.node.Receive(ctx, cityNode, bad, open()); !errors.Is(err, broker.ErrSignature) && !errors.Is(err, broker.ErrInvalid) {
			t.Fatalf("Receive with a tampered SubmissionAcceptance: %v, want it refused", err)
		}
	})
}

// TestWorker_RetentionEndsCopy lets a relayed copy wait at the court's
// node past the retention time: the court gives up with NonDelivery, and
// sends it back to the city's node.
func TestWorker_RetentionEndsCopy(t *testing.T) {
	ctx := context.Background()
	f := newFederation(t)
	id := f.send(t, time.Hour, judge)
	f.worker(f.city, landgericht).Round(ctx)
	f.clock.add(node.DefaultRetention - time.Second)
	if n, err := f.court.node.Expire(ctx); err != nil || n != 0 {
		t.Fatalf("Expire within the retention ended %d (%v)", n, err)
	}
	f.clock.add(time.Second)
	if n, err := f.court.node.Expire(ctx); err != nil || n != 1 {
		t.Fatalf("Expire after the retention ended %d (%v), want 1", n, err)
	}
	f.worker(f.court, "stadt.example").Round(ctx)
	types, logs := chain(t, f.city, id, judge)
	if strings.Join(types, ",") != "SubmissionAcceptance,RelayAcceptance,Delivery,NonDelivery" || logs[3] != tlog.Origin(landgericht) {
		t.Fatalf("chain at the city's node: %v in %q, want the court's NonDelivery at the end", types, logs)
	}
	judgeP := pki.Peer{Kind: pki.KindParticipant, Address: judge}
	if _, _, _, err := f.court.node.Fetch(ctx, judgeP, id); !errors.Is(err, broker.ErrState) {
		t.Fatalf("Fetch of a copy ended with NonDelivery: %v, want ErrState", err)
	}
	if _, err := f.court.node.Retrieved(ctx, judgeP, id); !errors.Is(err, broker.ErrState) {
		t.Fatalf("Retrieved of a copy ended with NonDelivery: %v, want ErrState", err)
	}
}

// TestNode_RetentionLocal lets a local copy wait past the retention
// time: NonDelivery ends it, and nothing is queued for another node.
func TestNode_RetentionLocal(t *testing.T) {
	ctx := context.Background()
	f := newFederation(t)
	id := f.send(t, time.Hour, pkitest.Court)
	f.clock.add(node.DefaultRetention)
	if n, err := f.city.node.Expire(ctx); err != nil || n != 1 {
		t.Fatalf("Expire ended %d (%v), want 1", n, err)
	}
	if types, logs := chain(t, f.city, id, pkitest.Court); strings.Join(types, ",") != "SubmissionAcceptance,Delivery,NonDelivery" || logs[2] != "" {
		t.Fatalf("chain: %v in %q", types, logs)
	}
	for _, d := range []string{landgericht, "stadt.example"} {
		if q, err := f.city.node.Pushes(ctx, d, 0, 0); err != nil || len(q) != 0 {
			t.Fatalf("push queue of %s: %v (%v), want empty", d, q, err)
		}
	}
	if n, err := f.city.node.Expire(ctx); err != nil || n != 0 {
		t.Fatalf("Expire again ended %d (%v), want 0", n, err)
	}
}

// TestNode_LookupCached asks the city's node about the judge while the
// court's node is up, then down: the earlier answer serves for a day, and
// a never-seen address is "try again later", not unknown.
func TestNode_LookupCached(t *testing.T) {
	ctx := context.Background()
	f := newFederation(t)
	if _, err := f.city.node.Lookup(ctx, judge); err != nil {
		t.Fatal(err)
	}
	if _, err := f.city.node.Lookup(ctx, "niemand@landgericht.example"); !errors.Is(err, broker.ErrNotFound) {
		t.Fatalf("unknown mailbox at the court: %v, want ErrNotFound", err)
	}
	if _, err := f.city.node.Lookup(ctx, "jemand@unbekannt.example"); !errors.Is(err, broker.ErrNotFound) {
		t.Fatalf("a domain without a node: %v, want ErrNotFound", err)
	}
	f.court.srv.Stop()
	f.clock.add(2 * time.Hour) // past the refresh: the node asks again, and fails
	p, err := f.city.node.Lookup(ctx, judge)
	if err != nil || !p.EncryptionCert.Equal(f.judgeID.EncCert) {
		t.Fatalf("cached lookup while the court is down: %v", err)
	}
	if _, err := f.city.node.Lookup(ctx, "neu@landgericht.example"); !errors.Is(err, broker.ErrUnavailable) {
		t.Fatalf("a new address while the court is down: %v, want ErrUnavailable", err)
	}
	f.clock.add(23 * time.Hour)
	if _, err := f.city.node.Lookup(ctx, judge); !errors.Is(err, broker.ErrUnavailable) {
		t.Fatalf("a day-old answer while the court is down: %v, want ErrUnavailable", err)
	}
}

// TestWorker_CourtClockBehind relays to a court whose clock is behind the
// city's: the court dates its evidence no earlier than the chain's last,
// so the chain holds and the city accepts it.
func TestWorker_CourtClockBehind(t *testing.T) {
	ctx := context.Background()
	f := newFederation(t)
	f.clock.skew = -5 * time.Second
	id := f.send(t, time.Hour, judge)
	f.worker(f.city, landgericht).Round(ctx)
	if types, _ := chain(t, f.city, id, judge); strings.Join(types, ",") != "SubmissionAcceptance,RelayAcceptance,Delivery" {
		t.Fatalf("chain with the court's clock behind: %v", types)
	}
}

// TestNode_ClaimDefersExpiry claims a message as the worker does while it
// relays: Expire leaves it alone until the claim ends, and a second claim
// waits too. A claim made after the message expired finds nothing to do.
func TestNode_ClaimDefersExpiry(t *testing.T) {
	ctx := context.Background()
	f := newFederation(t)
	id := f.send(t, time.Minute, judge)
	relays, _, err := f.city.node.Relays(ctx, landgericht, f.clock.Now(), "", 0)
	if err != nil || len(relays) != 1 {
		t.Fatalf("relays %v (%v)", relays, err)
	}
	fresh, release, ok, err := f.city.node.Claim(ctx, relays[0])
	if err != nil || !ok || fresh.Message.ID() != id || len(fresh.Recipients) != 1 {
		t.Fatalf("Claim: %v, %v (%v)", fresh, ok, err)
	}
	if _, _, ok, _ := f.city.node.Claim(ctx, relays[0]); ok {
		t.Fatal("a relay was claimed twice")
	}
	f.clock.add(time.Minute)
	if n, err := f.city.node.Expire(ctx); err != nil || n != 0 {
		t.Fatalf("Expire during a relay ended %d (%v), want 0", n, err)
	}
	if relays, _, err := f.city.node.Relays(ctx, landgericht, f.clock.Now(), "", 0); err != nil || len(relays) != 0 {
		t.Fatalf("an expired message is offered for relay: %v (%v)", relays, err)
	}
	release()
	if _, _, ok, err := f.city.node.Claim(ctx, relays[0]); ok || err != nil {
		t.Fatalf("Claim after the expiry: %v (%v), want nothing to relay", ok, err)
	}
	if n, err := f.city.node.Expire(ctx); err != nil || n != 1 {
		t.Fatalf("Expire after the relay ended %d (%v), want 1", n, err)
	}
	if _, _, ok, err := f.city.node.Claim(ctx, relays[0]); ok || err != nil {
		t.Fatalf("Claim of a copy Expire ended: %v (%v), want nothing to relay", ok, err)
	}
}

// TestNode_ReceiveExpired relays a message to the court after its
// envelope's expiry: the court refuses it with RelayRejection.
func TestNode_ReceiveExpired(t *testing.T) {
	f := newFederation(t)
	f.send(t, time.Minute, judge)
	r := f.queued(t)
	f.clock.skew = 2 * time.Minute
	answer, err := f.handOver(t, r)
	if err != nil {
		t.Fatal(err)
	}
	if len(answer[0]) != 1 || answer[0][0].Type != "RelayRejection" {
		t.Fatalf("answer to an expired relay: %v, want a RelayRejection", answer)
	}
	st, err := evidence.Parse(answer[0][0].DER)
	if err != nil || !strings.Contains(st.Statement.Reason, "expired") {
		t.Fatalf("the rejection's reason: %v (%v)", st, err)
	}
}

// TestNode_RelaysPaged lists the queue in pages.
func TestNode_RelaysPaged(t *testing.T) {
	ctx := context.Background()
	f := newFederation(t)
	a, b := f.send(t, time.Hour, judge), f.send(t, time.Hour, judge)
	first, next, err := f.city.node.Relays(ctx, landgericht, f.clock.Now(), "", 1)
	if err != nil || len(first) != 1 || first[0].Message.ID() != a || next != a {
		t.Fatalf("first page %v, next %q (%v)", first, next, err)
	}
	second, next, err := f.city.node.Relays(ctx, landgericht, f.clock.Now(), next, 1)
	if err != nil || len(second) != 1 || second[0].Message.ID() != b {
		t.Fatalf("second page %v, next %q (%v)", second, next, err)
	}
	if last, next, err := f.city.node.Relays(ctx, landgericht, f.clock.Now(), next, 1); err != nil || len(last) != 0 || next != "" {
		t.Fatalf("past the end: %v, next %q (%v)", last, next, err)
	}
	if later, _, err := f.city.node.Relays(ctx, landgericht, f.clock.Now().Add(-time.Hour), "", 0); err != nil || len(later) != 0 {
		t.Fatalf("entries not due yet are offered: %v (%v)", later, err)
	}
}

// TestDirectory_NodesAskOnlyForOwnDomains asks the city's directory as the
// court's node: about the city's own mailboxes it answers, about another
// domain it refuses, so that nodes never forward each other's questions.
func TestDirectory_NodesAskOnlyForOwnDomains(t *testing.T) {
	ctx := context.Background()
	f := newFederation(t)
	courtID, _, _ := courtIdentities(t)
	trust, err := fx.Trust()
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(f.city.addr, grpc.WithTransportCredentials(credentials.NewTLS(pki.ClientTLS(courtID, trust, "stadt.example"))))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	dir := kurierv1.NewDirectoryServiceClient(conn)
	if resp, err := dir.Lookup(ctx, &kurierv1.LookupRequest{Address: pkitest.Court}); err != nil || !resp.GetExists() {
		t.Fatalf("a node asking about the city's own mailbox: %v, %v", resp, err)
	}
	if _, err := dir.Lookup(ctx, &kurierv1.LookupRequest{Address: judge}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("a node asking about another domain: %v, want FailedPrecondition", err)
	}

	// A participant of another node's domain may not have the city ask
	// other nodes for it either.
	_, judgeID, _ := courtIdentities(t)
	pconn, err := grpc.NewClient(f.city.addr, grpc.WithTransportCredentials(credentials.NewTLS(pki.ClientTLS(judgeID, trust, "stadt.example"))))
	if err != nil {
		t.Fatal(err)
	}
	defer pconn.Close()
	pdir := kurierv1.NewDirectoryServiceClient(pconn)
	if _, err := pdir.Lookup(ctx, &kurierv1.LookupRequest{Address: judge}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("a foreign participant asking about another domain: %v, want PermissionDenied", err)
	}
	if resp, err := pdir.Lookup(ctx, &kurierv1.LookupRequest{Address: pkitest.Court}); err != nil || !resp.GetExists() {
		t.Fatalf("a foreign participant asking about the city's own mailbox: %v, %v", resp, err)
	}
}

// TestWorker_UncertainWhenCourtActed lets the court refuse a relay after
// it has read the header (its clock is far behind, so the envelope looks
// created in the future): the try counts as one that may have reached it,
// and the city does not give up at the expiry but waits for a final try.
func TestWorker_UncertainWhenCourtActed(t *testing.T) {
	ctx := context.Background()
	f := newFederation(t)
	id := f.send(t, time.Minute, judge)
	f.clock.skew = -time.Hour
	f.worker(f.city, landgericht).Round(ctx)
	o, err := f.city.db.OutboundEntry(ctx, landgericht, id)
	if err != nil || o.Attempts != 1 || !o.Uncertain || !strings.Contains(o.LastError, "clock") {
		t.Fatalf("after the court's refusal: %+v (%v), want an uncertain try", o, err)
	}
	f.clock.add(time.Minute)
	if n, err := f.city.node.Expire(ctx); err != nil || n != 0 {
		t.Fatalf("Expire ended %d (%v), want the final try awaited", n, err)
	}
	f.clock.skew = 0
	f.worker(f.city, landgericht).Round(ctx)
	if types, _ := chain(t, f.city, id, judge); strings.Join(types, ",") != "SubmissionAcceptance,RelayRejection,NonDelivery" {
		t.Fatalf("chain after the final try: %v", types)
	}
}

// TestNode_PushOutOfOrder sends the city the court's Acknowledgement
// before its Retrieval, for a copy already relayed: it can never fit, so it
// is refused for good, not kept waiting.
func TestNode_PushOutOfOrder(t *testing.T) {
	ctx := context.Background()
	f := newFederation(t)
	id := f.send(t, time.Hour, judge)
	f.worker(f.city, landgericht).Round(ctx)
	judgeP := pki.Peer{Kind: pki.KindParticipant, Address: judge}
	if _, err := f.court.node.Retrieved(ctx, judgeP, id); err != nil {
		t.Fatal(err)
	}
	evs, err := f.court.db.Evidence(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	head := evs[len(evs)-1]
	_, judgeID, _ := courtIdentities(t)
	ack, err := evidence.Sign(&evidence.Statement{Version: evidence.StatementVersion, Type: evidence.Acknowledgement, MessageID: id,
		EnvelopeSHA256: mustParse(t, head.DER).EnvelopeSHA256, PayloadSHA256: mustParse(t, head.DER).PayloadSHA256, Sender: pkitest.Agency,
		Recipient: judge, Issuer: judge, Time: f.clock.Now(), PreviousSHA256: evidence.Digest(head.DER)}, pkitest.Signer(judgeID))
	if err != nil {
		t.Fatal(err)
	}
	courtNode := pki.Peer{Kind: pki.KindNode, Domains: []string{landgericht}}
	err = f.city.node.ReceiveEvidence(ctx, courtNode, broker.Evidence{DER: ack, Log: tlog.Origin(landgericht), LeafIndex: 9})
	if !errors.Is(err, broker.ErrInvalid) {
		t.Fatalf("an Acknowledgement before its Retrieval: %v, want ErrInvalid", err)
	}
}

func mustParse(t *testing.T, der []byte) *evidence.Statement {
	t.Helper()
	ev, err := evidence.Parse(der)
	if err != nil {
		t.Fatal(err)
	}
	return ev.Statement
}

// TestWorker_WakesOnQueue runs a worker whose poll never comes: the
// message is relayed because the node woke it when it queued the message.
func TestWorker_WakesOnQueue(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	f := newFederation(t)
	f.send(t, time.Hour, judge) // look the judge up before the worker runs
	f.city.worker.Store(nil)
	rounds := make(chan struct{})
	f.clock.mu.Lock()
	f.clock.rounds = rounds
	f.clock.mu.Unlock()
	w := f.worker(f.city, landgericht)
	f.city.worker.Store(w)
	done := make(chan struct{})
	go func() { w.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	<-rounds // the first round, which relays the first message
	id := f.send(t, time.Hour, judge)
	<-rounds // the round the wake brought
	if types, _ := chain(t, f.city, id, judge); strings.Join(types, ",") != "SubmissionAcceptance,RelayAcceptance,Delivery" {
		t.Fatalf("chain after the wake: %v", types)
	}
}

// TestNode_LostAnswer lets the court take a message whose answer never
// reaches the city (as if the connection broke after the court's commit),
// and the judge retrieve it: the Retrieval pushed back is refused while the
// city's copy still waits for the relay; the city's next relay gets the
// whole chain, and the push then goes through. Evidence that the recipient's
// node has no business pushing is refused.
func TestNode_LostAnswer(t *testing.T) {
	ctx := context.Background()
	f := newFederation(t)
	id := f.send(t, time.Hour, judge)
	if _, err := f.handOver(t, f.queued(t)); err != nil {
		t.Fatal(err)
	}
	judgeP := pki.Peer{Kind: pki.KindParticipant, Address: judge}
	if _, err := f.court.node.Retrieved(ctx, judgeP, id); err != nil {
		t.Fatal(err)
	}
	pushes, err := f.court.node.Pushes(ctx, "stadt.example", 0, 0)
	if err != nil || len(pushes) != 1 || pushes[0].Type != "Retrieval" {
		t.Fatalf("court's push queue: %v (%v)", pushes, err)
	}
	courtNode := pki.Peer{Kind: pki.KindNode, Domains: []string{landgericht}}
	if err := f.city.node.ReceiveEvidence(ctx, courtNode, pushes[0]); !errors.Is(err, broker.ErrState) {
		t.Fatalf("Retrieval for a copy still relaying: %v, want ErrState", err)
	}
	f.worker(f.city, landgericht).Round(ctx)
	if types, _ := chain(t, f.city, id, judge); strings.Join(types, ",") != "SubmissionAcceptance,RelayAcceptance,Delivery,Retrieval" {
		t.Fatalf("chain after the second relay: %v", types)
	}
	if err := f.city.node.ReceiveEvidence(ctx, courtNode, pushes[0]); err != nil {
		t.Fatalf("the Retrieval pushed again: %v", err)
	}
	evs, err := f.court.db.Evidence(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs {
		if ev.Type != "RelayAcceptance" && ev.Type != "Delivery" {
			continue
		}
		ev.Log = tlog.Origin(landgericht)
		if err := f.city.node.ReceiveEvidence(ctx, courtNode, ev); !errors.Is(err, broker.ErrInvalid) {
			t.Errorf("a pushed %s: %v, want ErrInvalid", ev.Type, err)
		}
	}
}

// TestWorker_FinalTry lets a relay's outcome be unknown when the message
// expires: the city does not give up at once, but asks the court once more.
// Where the court has the message, the city records its Delivery; where it
// has not, the court refuses the late relay and the city's NonDelivery says
// so; where the court stays silent, the city gives up FinalTry later.
func TestWorker_FinalTry(t *testing.T) {
	ctx := context.Background()
	unknown := func(t *testing.T, f *federation, id string, courtHasIt bool) {
		t.Helper()
		r := f.queued(t)
		if courtHasIt {
			if _, err := f.handOver(t, r); err != nil {
				t.Fatal(err)
			}
		}
		// The answer was lost: the worker saw the connection break.
		if err := f.city.node.RelayFailed(ctx, r, errors.New("connection reset"), f.clock.Now(), true); err != nil {
			t.Fatal(err)
		}
		f.clock.add(time.Minute)
		if n, err := f.city.node.Expire(ctx); err != nil || n != 0 {
			t.Fatalf("Expire with the outcome unknown ended %d (%v), want 0", n, err)
		}
	}
	t.Run("the court has it", func(t *testing.T) {
		f := newFederation(t)
		id := f.send(t, time.Minute, judge)
		unknown(t, f, id, true)
		f.worker(f.city, landgericht).Round(ctx)
		if types, _ := chain(t, f.city, id, judge); strings.Join(types, ",") != "SubmissionAcceptance,RelayAcceptance,Delivery" {
			t.Fatalf("chain after the final try: %v", types)
		}
	})
	t.Run("the court has not", func(t *testing.T) {
		f := newFederation(t)
		id := f.send(t, time.Minute, judge)
		unknown(t, f, id, false)
		f.worker(f.city, landgericht).Round(ctx)
		types, _ := chain(t, f.city, id, judge)
		if strings.Join(types, ",") != "SubmissionAcceptance,RelayRejection,NonDelivery" {
			t.Fatalf("chain after the final try: %v", types)
		}
		if entries, _, _ := f.court.node.Inbox(ctx, pki.Peer{Kind: pki.KindParticipant, Address: judge}, "", 0); len(entries) != 0 {
			t.Fatalf("the court delivered an expired message: %v", entries)
		}
	})
	t.Run("the court stays silent", func(t *testing.T) {
		f := newFederation(t)
		id := f.send(t, time.Minute, judge)
		unknown(t, f, id, false)
		f.court.srv.Stop()
		f.clock.add(node.FinalTry)
		if relays, _, err := f.city.node.Relays(ctx, landgericht, f.clock.Now(), "", 0); err != nil || len(relays) != 0 {
			t.Fatalf("relays after the final try's time: %v (%v)", relays, err)
		}
		if n, err := f.city.node.Expire(ctx); err != nil || n != 1 {
			t.Fatalf("Expire after the final try's time ended %d (%v), want 1", n, err)
		}
		if types, _ := chain(t, f.city, id, judge); strings.Join(types, ",") != "SubmissionAcceptance,NonDelivery" {
			t.Fatalf("chain: %v", types)
		}
	})
}

// TestWorker_PushHoldsOnlyItsCopy has the court push two Retrievals, the
// first for a copy the city still thinks is relaying: that one waits, the
// other goes through.
func TestWorker_PushHoldsOnlyItsCopy(t *testing.T) {
	ctx := context.Background()
	f := newFederation(t)
	judgeP := pki.Peer{Kind: pki.KindParticipant, Address: judge}

	first := f.send(t, time.Hour, judge)
	r := f.queued(t)
	if _, err := f.handOver(t, r); err != nil { // the answer is lost
		t.Fatal(err)
	}
	if err := f.city.node.RelayFailed(ctx, r, errors.New("connection reset"), f.clock.Now().Add(time.Hour), true); err != nil {
		t.Fatal(err)
	}
	second := f.send(t, time.Hour, judge)
	f.worker(f.city, landgericht).Round(ctx) // relays the second only
	for _, id := range []string{first, second} {
		if _, err := f.court.node.Retrieved(ctx, judgeP, id); err != nil {
			t.Fatal(err)
		}
	}
	f.worker(f.court, "stadt.example").Round(ctx)
	if types, _ := chain(t, f.city, second, judge); strings.Join(types, ",") != "SubmissionAcceptance,RelayAcceptance,Delivery,Retrieval" {
		t.Fatalf("the second message's chain at the city: %v", types)
	}
	left, err := f.court.node.Pushes(ctx, "stadt.example", 0, 0)
	if err != nil || len(left) != 1 || left[0].MessageID != first {
		t.Fatalf("push queue: %v (%v), want only the first message's Retrieval", left, err)
	}
}

// TestWorker_IDTakenAtCourt has the court hold another message under the
// id of the city's message: the city gives up at once with a NonDelivery
// that says why, instead of trying until the message expires.
func TestWorker_IDTakenAtCourt(t *testing.T) {
	ctx := context.Background()
	f := newFederation(t)
	id := f.send(t, time.Hour, judge)

	// Another message under the same id reaches the court first.
	payload := []byte("other content")
	sum := sha256.Sum256(payload)
	now := f.clock.Now().UTC()
	env := &envelope.Envelope{Version: envelope.Version, ID: id, From: pkitest.Other, To: []string{judge}, Subject: "Andere Sache",
		Created: now, Expires: now.Add(time.Hour), PayloadSHA256: hex.EncodeToString(sum[:]), PayloadSize: int64(len(payload)),
		Files: []envelope.File{{Name: "x.pdf", Size: 1, SHA256: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}}}
	b, err := env.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	sig, err := cms.SignDetached(b, pkitest.Signer(fx.IDs[pkitest.Other]))
	if err != nil {
		t.Fatal(err)
	}
	sa, err := evidence.Sign(&evidence.Statement{Version: evidence.StatementVersion, Type: evidence.SubmissionAcceptance, MessageID: id,
		EnvelopeSHA256: envelope.Digest(b), PayloadSHA256: env.PayloadSHA256, Sender: pkitest.Other, Recipient: judge,
		Issuer: "stadt.example", Time: now}, pkitest.Signer(fx.Node))
	if err != nil {
		t.Fatal(err)
	}
	other := node.Incoming{Envelope: b, Signature: sig, Recipients: []string{judge},
		Chains: [][]broker.Evidence{{{DER: sa, Log: tlog.Origin("stadt.example")}}}}
	if _, err := f.court.node.Receive(ctx, pki.Peer{Kind: pki.KindNode, Domains: pkitest.Domains}, other, bytes.NewReader(payload)); err != nil {
		t.Fatal(err)
	}

	f.worker(f.city, landgericht).Round(ctx)
	types, _ := chain(t, f.city, id, judge)
	if strings.Join(types, ",") != "SubmissionAcceptance,NonDelivery" {
		t.Fatalf("chain: %v", types)
	}
	evs, _ := f.city.db.Evidence(ctx, id)
	st, err := evidence.Parse(evs[len(evs)-1].DER)
	if err != nil || !strings.Contains(st.Statement.Reason, "another message under the id") {
		t.Fatalf("NonDelivery: %v (%v)", st, err)
	}
	if q, _ := f.city.db.Outbound(ctx, landgericht, "", 0); len(q) != 0 {
		t.Fatalf("still queued: %v", q)
	}
}

// BenchmarkWorker_Relay relays b.N messages of 16 KiB, one after another,
// from the city to the court through one worker: a relay call each, with
// both nodes' durable commits. Compare the records/s with the store's
// CreateMessage to see what the relay costs.
func BenchmarkWorker_Relay(b *testing.B) {
	ctx := context.Background()
	f := newFederation(b)
	f.payloadSize = 16 << 10
	w := f.worker(f.city, landgericht)
	for range b.N {
		f.send(b, time.Hour, judge)
	}
	b.ResetTimer()
	w.Round(ctx)
	b.StopTimer()
	if q, err := f.city.db.Outbound(ctx, landgericht, "", 1); err != nil || len(q) != 0 {
		b.Fatalf("still queued after the round: %v (%v)", q, err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "messages/s")
}

func TestBackoff(t *testing.T) {
	for _, tt := range []struct {
		attempts int
		r        float64
		want     time.Duration
	}{
		{1, 0, 500 * time.Millisecond},
		{1, 0.999999999, time.Second - time.Nanosecond},
		{2, 0, time.Second},
		{4, 0, 4 * time.Second},
		{30, 0, 5 * time.Minute},
		{30, 0.5, 7*time.Minute + 30*time.Second},
	} {
		if got := relay.Backoff(tt.attempts, time.Second, 10*time.Minute, tt.r); got != tt.want {
			t.Errorf("Backoff(%d, %v) = %s, want %s", tt.attempts, tt.r, got, tt.want)
		}
	}
}

// TestNode_CloseEndsRefresh: a directory refresh the node started on its
// own, hanging on a court whose node takes the connection and never
// answers, ends when the node is closed, long before its own timeout,
// so that nothing of the node runs once its peers and store close.
func TestNode_CloseEndsRefresh(t *testing.T) {
	ctx := context.Background()
	f := newFederation(t)
	if _, err := f.city.node.Lookup(ctx, judge); err != nil {
		t.Fatal(err)
	}
	f.court.srv.Stop()
	hang, err := net.Listen("tcp", f.court.addr) // accepts, never speaks TLS
	if err != nil {
		t.Fatal(err)
	}
	defer hang.Close()
	accepted := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := hang.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	f.clock.add(2 * time.Hour) // past the refresh: the cached answer serves, a refresh starts
	// While the city's connection to the court waits to be tried again
	// (gRPC's backoff), a refresh fails at once; a later lookup starts
	// another, which dials.
	reached := false
	for try := 0; try < 20 && !reached; try++ {
		if _, err := f.city.node.Lookup(ctx, judge); err != nil {
			t.Fatalf("cached lookup: %v", err)
		}
		select {
		case c := <-accepted:
			defer c.Close()
			reached = true
		case <-time.After(time.Second):
		}
	}
	if !reached {
		t.Fatal("no refresh reached the court's address in 20 lookups a second apart")
	}
	closed := make(chan struct{})
	go func() { f.city.node.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second): // the refresh's own timeout is 30 s
		t.Fatal("Close did not end the refresh under way")
	}
}

// twin is a second node over the city's store, as a second kurierd
// process on one database would be.
func (f *federation) twin(t *testing.T) *node.Node { return f.twinOver(t, f.city.db, "") }

// twinOver is twin over st, which is the city's store or wraps it, with
// the lease holder name holder (node.Config.Holder).
func (f *federation) twinOver(t *testing.T, st node.Store, holder string) *node.Node {
	t.Helper()
	var parts []node.Participant
	for addr, id := range fx.IDs {
		parts = append(parts, node.Participant{Address: addr, EncryptionCert: id.EncCert})
	}
	n, err := node.New(st, node.Config{
		Domains: pkitest.Domains, Signer: pkitest.Signer(fx.Node), LogKey: fx.LogKey, Trust: f.city.trust,
		Participants: parts, Peers: f.city.peers, Now: f.clock.Now, Logger: slog.New(slog.DiscardHandler), Holder: holder,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	return n
}

// TestNode_ClaimAcrossProcesses runs a second node over the city's store:
// a relay claimed by one is neither claimed nor expired by the other until
// the first releases it, or until its lease runs out because its process
// died.
func TestNode_ClaimAcrossProcesses(t *testing.T) {
	ctx := context.Background()
	f := newFederation(t)
	other := f.twin(t)
	f.send(t, time.Minute, judge)
	relays, _, err := f.city.node.Relays(ctx, landgericht, f.clock.Now(), "", 0)
	if err != nil || len(relays) != 1 {
		t.Fatalf("relays %v (%v)", relays, err)
	}
	_, release, ok, err := f.city.node.Claim(ctx, relays[0])
	if err != nil || !ok {
		t.Fatalf("Claim: %v (%v)", ok, err)
	}
	if _, _, ok, err := other.Claim(ctx, relays[0]); ok || err != nil {
		t.Fatalf("the other process claimed a relay under way: %v (%v)", ok, err)
	}
	f.clock.add(2 * time.Minute)
	if n, err := other.Expire(ctx); err != nil || n != 0 {
		t.Fatalf("the other process's Expire during a relay ended %d (%v), want 0", n, err)
	}
	release()
	if n, err := other.Expire(ctx); err != nil || n != 1 {
		t.Fatalf("the other process's Expire after the relay ended %d (%v), want 1", n, err)
	}

	// A process that dies holding a claim holds it until its lease runs
	// out; then another process relays.
	f.send(t, time.Hour, judge)
	relays, _, err = f.city.node.Relays(ctx, landgericht, f.clock.Now(), "", 0)
	if err != nil || len(relays) != 1 {
		t.Fatalf("relays %v (%v)", relays, err)
	}
	if _, _, ok, err := f.city.node.Claim(ctx, relays[0]); !ok || err != nil {
		t.Fatalf("Claim: %v (%v)", ok, err)
	}
	f.clock.add(node.RelayLease - time.Second)
	if _, _, ok, err := other.Claim(ctx, relays[0]); ok || err != nil {
		t.Fatalf("the other process claimed a relay whose lease runs: %v (%v)", ok, err)
	}
	f.clock.add(2 * time.Second)
	fresh, release, ok, err := other.Claim(ctx, relays[0])
	if !ok || err != nil || fresh.Message.ID() != relays[0].Message.ID() {
		t.Fatalf("the other process's Claim once the lease ran out: %v (%v)", ok, err)
	}

	// A try that fails puts the next one off, also for the process that
	// listed the queue before it.
	if err := other.RelayFailed(ctx, fresh, errors.New("connection refused"), f.clock.Now().Add(time.Minute), false); err != nil {
		t.Fatal(err)
	}
	release()
	third := f.twin(t)
	if _, _, ok, err := third.Claim(ctx, relays[0]); ok || err != nil {
		t.Fatalf("Claim from a listing made before a failed try: %v (%v), want nothing to relay before the next try", ok, err)
	}
}

// leaseCounter counts the leases taken through it: each is a write.
type leaseCounter struct {
	node.Store
	leases atomic.Int32
}

func (s *leaseCounter) LeaseRelay(ctx context.Context, domain, id, holder string, now, until time.Time) (bool, error) {
	s.leases.Add(1)
	return s.Store.LeaseRelay(ctx, domain, id, holder, now, until)
}

// TestNode_ExpireLeavesFinalTryUnleased: while a relay's final try is
// awaited, Expire in every round leaves the copy alone without taking its
// lease, a write that would also keep the process due to make that try
// off it; once the final try's time is up, Expire takes the lease and
// ends the copy.
func TestNode_ExpireLeavesFinalTryUnleased(t *testing.T) {
	ctx := context.Background()
	f := newFederation(t)
	f.send(t, time.Minute, judge)
	r := f.queued(t)
	if err := f.city.node.RelayFailed(ctx, r, errors.New("connection reset"), f.clock.Now(), true); err != nil {
		t.Fatal(err)
	}
	counted := &leaseCounter{Store: f.city.db}
	other := f.twinOver(t, counted, "")
	f.clock.add(2 * time.Minute)
	for range 3 {
		if n, err := other.Expire(ctx); err != nil || n != 0 {
			t.Fatalf("Expire awaiting the final try ended %d (%v), want 0", n, err)
		}
	}
	if n := counted.leases.Load(); n != 0 {
		t.Errorf("Expire took %d leases on a copy it left alone, want none", n)
	}
	f.clock.add(node.FinalTry)
	if n, err := other.Expire(ctx); err != nil || n != 1 {
		t.Fatalf("Expire after the final try's time ended %d (%v), want 1", n, err)
	}
	if n := counted.leases.Load(); n != 1 {
		t.Errorf("Expire ended a relaying copy with %d leases taken, want 1", n)
	}
}

// TestNode_RestartTakesBackItsLeases: a process that died holding a relay
// takes it back at once when it starts again under its holder name,
// while the other processes still wait for the lease to run out.
func TestNode_RestartTakesBackItsLeases(t *testing.T) {
	ctx := context.Background()
	f := newFederation(t)
	f.send(t, time.Hour, judge)
	relays, _, err := f.city.node.Relays(ctx, landgericht, f.clock.Now(), "", 0)
	if err != nil || len(relays) != 1 {
		t.Fatalf("relays %v (%v)", relays, err)
	}
	dead := f.twinOver(t, f.city.db, "host-a 127.0.0.1:7443")
	if _, _, ok, err := dead.Claim(ctx, relays[0]); !ok || err != nil {
		t.Fatalf("Claim: %v (%v)", ok, err)
	}
	f.clock.add(time.Minute)
	other := f.twinOver(t, f.city.db, "host-b 127.0.0.1:7443")
	if _, _, ok, err := other.Claim(ctx, relays[0]); ok || err != nil {
		t.Fatalf("another process claimed a relay whose lease runs: %v (%v)", ok, err)
	}
	restarted := f.twinOver(t, f.city.db, "host-a 127.0.0.1:7443")
	_, release, ok, err := restarted.Claim(ctx, relays[0])
	if !ok || err != nil {
		t.Fatalf("the restarted process's Claim of its own relay: %v (%v), want it at once", ok, err)
	}
	release()
}
