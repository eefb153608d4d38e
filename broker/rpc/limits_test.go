package rpc_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/broker/diskspace"
	"kurier.dev/kurier/broker/diskspace/diskspacetest"
	"kurier.dev/kurier/broker/netlimit"
	"kurier.dev/kurier/broker/node"
	"kurier.dev/kurier/broker/rpc"
	"kurier.dev/kurier/broker/store"
	"kurier.dev/kurier/client"
	"kurier.dev/kurier/pki/pkitest"
	kurierv1 "kurier.dev/kurier/proto/kurier/v1"
)

// clock is a settable clock for the node.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }

func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.now = c.now.Add(d); c.mu.Unlock() }

// submitOver submits a message of size random bytes from `from` to `to`
// over mb; corrupt sends other bytes than the envelope declares.
func submitOver(t *testing.T, mb kurierv1.MailboxServiceClient, from string, to string, size int, corrupt bool) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	first, payload := signedSubmit(t, from, fx.IDs[from], to, size)
	if corrupt {
		payload[0] ^= 1
	}
	stream, err := mb.Submit(ctx)
	if err != nil {
		return err
	}
	if err := stream.Send(first); err != nil {
		return err
	}
	stream.Send(&kurierv1.SubmitRequest{Part: &kurierv1.SubmitRequest_Chunk{Chunk: payload}})
	_, err = stream.CloseAndRecv()
	return err
}

// retryDelay returns the google.rpc.RetryInfo delay of a status error.
func retryDelay(err error) (time.Duration, bool) {
	for _, d := range status.Convert(err).Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			return ri.GetRetryDelay().AsDuration(), true
		}
	}
	return 0, false
}

// reason returns the reason a status error names in its
// google.rpc.ErrorInfo of Kurier's domain.
func reason(err error) string {
	for _, d := range status.Convert(err).Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok && ei.GetDomain() == rpc.ReasonDomain {
			return ei.GetReason()
		}
	}
	return ""
}

// TestHostileFlood_RateLimit has one participant submit faster than the
// node's rate: past the burst it is refused with ResourceExhausted, the
// time to wait in the message and as RetryInfo, while another participant
// still sends; once the clock has moved on, it sends again.
func TestHostileFlood_RateLimit(t *testing.T) {
	clk := &clock{now: time.Now()}
	ts := startSetup(t, setup{node: func(c *node.Config) {
		c.Now = clk.Now
		c.Limits.MessagesPerSecond, c.Limits.MessageBurst = 1, 3
	}})
	addr, trust := ts.addr, ts.trust
	agency := kurierv1.NewMailboxServiceClient(dial(t, addr, fx.IDs[pkitest.Agency], trust))
	court := kurierv1.NewMailboxServiceClient(dial(t, addr, fx.IDs[pkitest.Court], trust))
	for i := range 3 {
		if err := submitOver(t, agency, pkitest.Agency, pkitest.Court, 1000, false); err != nil {
			t.Fatalf("submission %d within the burst: %v", i+1, err)
		}
	}
	err := submitOver(t, agency, pkitest.Agency, pkitest.Court, 1000, false)
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(status.Convert(err).Message(), "try again in 1s") {
		t.Fatalf("submission past the burst: %v, want ResourceExhausted saying to try again in 1s", err)
	}
	if d, ok := retryDelay(err); !ok || d != time.Second {
		t.Fatalf("retry hint %v (present %v), want RetryInfo of 1s", d, ok)
	}
	if r := reason(err); r != rpc.ReasonRateLimited {
		t.Fatalf("the rate limit's refusal names the reason %q, want %q", r, rpc.ReasonRateLimited)
	}
	if err := submitOver(t, court, pkitest.Court, pkitest.Agency, 1000, false); err != nil {
		t.Fatalf("another participant while the first is limited: %v", err)
	}
	clk.Add(time.Second)
	if err := submitOver(t, agency, pkitest.Agency, pkitest.Court, 1000, false); err != nil {
		t.Fatalf("submission after the wait: %v", err)
	}
}

// TestHostileFlood_Quota has one participant hand in more payload bytes
// than its daily quota: the submission over it is refused with
// ResourceExhausted and when it fits again, a refused submission uses no
// quota, and another participant still sends.
func TestHostileFlood_Quota(t *testing.T) {
	clk := &clock{now: time.Now()}
	ts := startSetup(t, setup{node: func(c *node.Config) {
		c.Now = clk.Now
		c.Limits.QuotaBytesPerDay = 10000
	}})
	addr, trust := ts.addr, ts.trust
	agency := kurierv1.NewMailboxServiceClient(dial(t, addr, fx.IDs[pkitest.Agency], trust))
	court := kurierv1.NewMailboxServiceClient(dial(t, addr, fx.IDs[pkitest.Court], trust))
	// A payload that does not match its envelope is refused and gives
	// its bytes back: otherwise the two after it would not fit.
	if err := submitOver(t, agency, pkitest.Agency, pkitest.Court, 4000, true); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("corrupt payload: %v, want InvalidArgument", err)
	}
	for i := range 2 {
		if err := submitOver(t, agency, pkitest.Agency, pkitest.Court, 4000, false); err != nil {
			t.Fatalf("submission %d within the quota: %v", i+1, err)
		}
	}
	err := submitOver(t, agency, pkitest.Agency, pkitest.Court, 2100, false)
	// 100 bytes short at 10000 bytes a day: 14m24s.
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(status.Convert(err).Message(), "fits again in 14m24s") {
		t.Fatalf("submission over the quota: %v, want ResourceExhausted saying it fits again in 14m24s", err)
	}
	if d, ok := retryDelay(err); !ok || d != 14*time.Minute+24*time.Second {
		t.Fatalf("retry hint %v (present %v), want 14m24s", d, ok)
	}
	if r := reason(err); r != rpc.ReasonQuota {
		t.Fatalf("the quota's refusal names the reason %q, want %q", r, rpc.ReasonQuota)
	}
	// The client library names the same refusal with its sentinels.
	_, err = dialClient(t, addr, pkitest.Agency).Send(context.Background(), testMessage(pkitest.Court, 2100), nil)
	if !errors.Is(err, client.ErrQuota) || !errors.Is(err, client.ErrRateLimited) || status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("Send over the quota: %v, want client.ErrQuota, ErrRateLimited and ResourceExhausted", err)
	}
	err = submitOver(t, agency, pkitest.Agency, pkitest.Court, 20000, false)
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(status.Convert(err).Message(), "may hand in a day") || reason(err) != rpc.ReasonTooLarge {
		t.Fatalf("payload larger than the whole quota: %v (reason %q), want ResourceExhausted, %s", err, reason(err), rpc.ReasonTooLarge)
	}
	if err := submitOver(t, court, pkitest.Court, pkitest.Agency, 4000, false); err != nil {
		t.Fatalf("another participant while the first is over its quota: %v", err)
	}
	clk.Add(15 * time.Minute)
	if err := submitOver(t, agency, pkitest.Agency, pkitest.Court, 2100, false); err != nil {
		t.Fatalf("submission once the quota has refilled: %v", err)
	}
}

// TestFaultDiskAlarm_Injected runs the disk alarm over an injected free
// space: below the limit submissions are refused with ResourceExhausted
// and a message that says fetch and acknowledge still work, and they do;
// above it again, submissions are taken.
func TestFaultDiskAlarm_Injected(t *testing.T) {
	const min = 100 << 20
	var free atomic.Uint64
	free.Store(10 << 30)
	alarm := &diskspace.Alarm{Min: min, Free: func(string) (uint64, error) { return free.Load(), nil }, Logger: slog.New(slog.DiscardHandler)}
	ts := startSetup(t, setup{node: func(c *node.Config) { c.Space = alarm.Reserve }})
	addr := ts.addr
	agency, court := dialClient(t, addr, pkitest.Agency), dialClient(t, addr, pkitest.Court)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	before, err := agency.Send(ctx, testMessage(pkitest.Court, 1000), nil)
	if err != nil {
		t.Fatal(err)
	}
	free.Store(min - 1)
	_, err = agency.Send(ctx, testMessage(pkitest.Court, 1000), nil)
	checkDiskFull(t, err)
	if !alarm.Raised() {
		t.Error("the alarm is not raised below its limit")
	}
	fetchAndAcknowledge(t, court, before.MessageID)
	// Uploads under way count: with room for the limit and 10 KiB, a
	// message of 20 KiB does not fit.
	free.Store(min + 10<<10)
	_, err = agency.Send(ctx, testMessage(pkitest.Court, 20<<10), nil)
	checkDiskFull(t, err)
	free.Store(10 << 30)
	if _, err := agency.Send(ctx, testMessage(pkitest.Court, 1000), nil); err != nil {
		t.Fatalf("submission after the alarm cleared: %v", err)
	}
}

// checkDiskFull checks that err is the disk alarm's refusal.
func checkDiskFull(t *testing.T, err error) {
	t.Helper()
	msg := status.Convert(err).Message()
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(msg, "disk is almost full") || !strings.Contains(msg, "fetch and acknowledge still work") {
		t.Fatalf("submission with the disk almost full: %v, want ResourceExhausted naming the full disk", err)
	}
	if !errors.Is(err, client.ErrNodeFull) {
		t.Fatalf("submission with the disk almost full: %v, want client.ErrNodeFull", err)
	}
}

// dialClient returns a client library connection of participant addr.
func dialClient(t *testing.T, node, addr string) *client.Client {
	t.Helper()
	c, err := client.Dial(context.Background(), node, fx.IDs[addr], client.WithCRL(fx.CRL), client.WithRetry(5*time.Second), client.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// testMessage is a message with one document of size bytes.
func testMessage(to string, size int) client.Message {
	return client.Message{To: []string{to}, Subject: "Test", Documents: []client.Document{{Name: "a.txt", Data: make([]byte, size)}}}
}

// fetchAndAcknowledge fetches message id as c and acknowledges it.
func fetchAndAcknowledge(t *testing.T, c *client.Client, id string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	f, err := c.Fetch(ctx, id, t.TempDir())
	if err != nil {
		t.Fatalf("fetch with the disk almost full: %v", err)
	}
	if _, err := c.Acknowledge(ctx, f); err != nil {
		t.Fatalf("acknowledge with the disk almost full: %v", err)
	}
}

// failingCommit is the one fake here: a store whose CreateMessage stores
// the message for real and then fails as a failed fsync would, once. An
// EIO from fsync cannot be produced for real on this machine (it needs a
// device-mapper target such as dm-flakey, and /dev/mapper is absent).
type failingCommit struct {
	*store.DB
	fail atomic.Int32 // how many more commits fail after storing
}

func (f *failingCommit) CreateMessage(ctx context.Context, m *broker.Message, copies []broker.Copy, evs []broker.Evidence, out []broker.Outbound) ([]broker.Evidence, error) {
	stored, err := f.DB.CreateMessage(ctx, m, copies, evs, out)
	if err == nil && f.fail.Add(-1) >= 0 {
		return nil, fmt.Errorf("commit: sync %s: %w", "000001.vlog", errors.New("input/output error"))
	}
	return stored, err
}

// TestFaultUnknownOutcome has the store fail after the message is
// committed: the node answers Unavailable with "the outcome is unknown"
// (not a failure, and without the store's error), and the client's retry
// of the same sealed message gets the receipt of the stored message.
func TestFaultUnknownOutcome(t *testing.T) {
	var st *failingCommit
	ts := startSetup(t, setup{wrap: func(db *store.DB) node.Store {
		st = &failingCommit{DB: db}
		return st
	}})
	addr, trust := ts.addr, ts.trust
	st.fail.Store(1)
	agency := kurierv1.NewMailboxServiceClient(dial(t, addr, fx.IDs[pkitest.Agency], trust))
	err := submitOver(t, agency, pkitest.Agency, pkitest.Court, 1000, false)
	if status.Code(err) != codes.Unavailable || status.Convert(err).Message() != broker.ErrUnknownOutcome.Error() {
		t.Fatalf("commit failed after storing: %v, want Unavailable %q", err, broker.ErrUnknownOutcome)
	}

	st.fail.Store(1)
	c := dialClient(t, addr, pkitest.Agency)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sealed, err := c.Seal(ctx, testMessage(pkitest.Court, 1000))
	if err != nil {
		t.Fatal(err)
	}
	r, err := c.Submit(ctx, sealed, nil)
	if err != nil {
		t.Fatalf("submit with a retry after the unknown outcome: %v", err)
	}
	if st.fail.Load() != 0 {
		t.Fatal("the store did not fail the first commit")
	}
	stored, err := st.Evidence(ctx, r.MessageID)
	if err != nil || len(stored) == 0 || len(r.Evidence) != len(stored) || r.Evidence[0].LeafIndex != stored[0].LeafIndex {
		t.Fatalf("receipt %v does not match the stored evidence %v (%v)", r.Evidence, stored, err)
	}
}

// TestHostileConnections_NoHandshake opens many connections from one
// source that never start TLS: no more than the per-source cap are held
// (the rest are closed at once), a participant from elsewhere still gets
// through over mutual TLS meanwhile, and the handshake timeout closes the
// held ones, giving their places back.
func TestHostileConnections_NoHandshake(t *testing.T) {
	const (
		perSource = 20
		attackers = 60
		handshake = time.Second
	)
	var lis *netlimit.Listener
	ts := startSetup(t, setup{
		opts: rpc.Options{HandshakeTimeout: handshake},
		lis: func(l net.Listener) net.Listener {
			lis = netlimit.Wrap(l, netlimit.Options{Max: 100, PerSource: perSource, Logger: slog.New(slog.DiscardHandler)})
			return lis
		},
	})
	addr, trust := ts.addr, ts.trust
	start := time.Now()
	conns := make([]net.Conn, attackers)
	for i := range conns {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}, Timeout: 5 * time.Second}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns[i] = c
	}

	// A participant (from 127.0.0.1) while the attacker holds its share.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := healthpb.NewHealthClient(dial(t, addr, fx.IDs[pkitest.Agency], trust)).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("a participant while another source holds its share of connections: %v", err)
	}
	if n := lis.Open(); n > perSource+1 {
		t.Fatalf("%d connections open, want at most %d from the attacker and the participant's", n, perSource+1)
	}

	// Each attacker connection ends: at once if over the cap, after the
	// handshake timeout if held.
	ended := make([]time.Duration, len(conns))
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Go(func() {
			c.SetReadDeadline(start.Add(5 * handshake))
			_, err := c.Read(make([]byte, 1))
			if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
				ended[i] = -1
				return
			}
			ended[i] = time.Since(start)
		})
	}
	wg.Wait()
	var early, held int
	for _, d := range ended {
		switch {
		case d < 0:
			t.Fatal("a connection that never began its handshake is still open after five handshake timeouts")
		case d < handshake/2:
			early++
		default:
			held++
		}
	}
	if held > perSource || early < attackers-perSource {
		t.Fatalf("%d connections held until the handshake timeout, %d closed at once; want at most %d held", held, early, perSource)
	}
	if n := lis.Open(); n != 1 {
		t.Fatalf("%d connections open after the handshake timeout, want only the participant's", n)
	}
}

// TestFaultDiskAlarm_FullFilesystem fills a real 64 MiB filesystem under
// the store: submissions are refused with ResourceExhausted before the
// disk is full, the node does not crash (badger's memory-mapped writes
// would end it with SIGBUS on a full disk), and the recipient still
// fetches and acknowledges.
func TestFaultDiskAlarm_FullFilesystem(t *testing.T) {
	dir := diskspacetest.Tmpfs(t, "", 64<<20)
	// The headroom of a store opened with store.Options.Small: its
	// write-ahead logs are 2 × 8 MiB.
	alarm := &diskspace.Alarm{Dir: dir, Min: 16 << 20, Logger: slog.New(slog.DiscardHandler)}
	ts := startSetup(t, setup{dir: dir, node: func(c *node.Config) { c.Space = alarm.Reserve }})
	addr := ts.addr
	agency, court := dialClient(t, addr, pkitest.Agency), dialClient(t, addr, pkitest.Court)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	var sent []string
	var err error
	for range 64 {
		var r *client.Receipt
		if r, err = agency.Send(ctx, testMessage(pkitest.Court, 2<<20), nil); err != nil {
			break
		}
		sent = append(sent, r.MessageID)
	}
	checkDiskFull(t, err)
	if len(sent) == 0 {
		t.Fatal("the alarm refused the first submission on an empty filesystem")
	}
	free, ferr := diskspace.Statfs(dir)
	if ferr != nil || free == 0 {
		t.Fatalf("free space when refused: %d (%v), want the headroom left", free, ferr)
	}
	t.Logf("%d messages of 2 MiB taken, then refused with %.1f MiB free", len(sent), float64(free)/(1<<20))
	for _, id := range sent[:min(3, len(sent))] {
		fetchAndAcknowledge(t, court, id)
	}
}

// TestHostileSlowUpload has an upload outlast the whole upload's time
// limit while its idle limit is far off: the node gives it up, with
// DeadlineExceeded saying why.
func TestHostileSlowUpload(t *testing.T) {
	ts := startSetup(t, setup{opts: rpc.Options{UploadIdle: time.Minute, UploadTimeout: 300 * time.Millisecond}})
	addr, trust := ts.addr, ts.trust
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := kurierv1.NewMailboxServiceClient(dial(t, addr, fx.IDs[pkitest.Agency], trust)).Submit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	first, payload := signedSubmit(t, pkitest.Agency, fx.IDs[pkitest.Agency], pkitest.Court, 1<<20)
	stream.Send(first)
	stream.Send(&kurierv1.SubmitRequest{Part: &kurierv1.SubmitRequest_Chunk{Chunk: payload[:1000]}})
	start := time.Now()
	var resp kurierv1.SubmitResponse
	err = stream.RecvMsg(&resp)
	if status.Code(err) != codes.DeadlineExceeded || !strings.Contains(status.Convert(err).Message(), "the upload took longer than the 300ms") {
		t.Fatalf("upload past its time: %v, want DeadlineExceeded naming the upload's time limit", err)
	}
	if waited := time.Since(start); waited > 5*time.Second {
		t.Fatalf("the upload was given up after %s", waited)
	}
}

// TestFault_UploadSlotsBusy: a sender whose every upload slot is taken is
// refused a further upload for now, with ResourceExhausted and RetryInfo,
// so that the client library, sending in parallel, waits and tries again
// within its retry time rather than failing at once; once a slot is free
// the message goes through.
func TestFault_UploadSlotsBusy(t *testing.T) {
	ts := startTestServer(t, rpc.Options{UploadIdle: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	mailbox := kurierv1.NewMailboxServiceClient(dial(t, ts.addr, fx.IDs[pkitest.Agency], ts.trust))
	// stall opens an upload that sends its envelope and a little payload,
	// then nothing more until its context ends.
	stall := func(ctx context.Context) (kurierv1.MailboxService_SubmitClient, error) {
		stream, err := mailbox.Submit(ctx)
		if err != nil {
			return nil, err
		}
		first, _ := signedSubmit(t, pkitest.Agency, fx.IDs[pkitest.Agency], pkitest.Court, 1<<20)
		if err := stream.Send(first); err != nil {
			return nil, err
		}
		return stream, stream.Send(&kurierv1.SubmitRequest{Part: &kurierv1.SubmitRequest_Chunk{Chunk: make([]byte, 1000)}})
	}
	var release []context.CancelFunc
	for range node.DefaultMaxPerSender {
		sctx, scancel := context.WithCancel(ctx)
		defer scancel()
		if _, err := stall(sctx); err != nil {
			t.Fatal(err)
		}
		release = append(release, scancel)
	}
	// Once the stalled uploads hold their slots, a further one is refused
	// for now.
	var refusal error
	for i := 0; i < 20 && refusal == nil; i++ {
		s, err := stall(ctx)
		if err == nil {
			_, err = s.CloseAndRecv()
		}
		if status.Code(err) == codes.ResourceExhausted && strings.Contains(status.Convert(err).Message(), "uploads under way") {
			refusal = err
		}
	}
	if refusal == nil {
		t.Fatal("a sender with every slot taken was not refused a further upload")
	}
	if after, ok := retryDelay(refusal); !ok || after <= 0 {
		t.Errorf("the refusal %v names no time to try again", refusal)
	}

	logs := make(chan string, 16)
	c, err := client.Dial(ctx, ts.addr, fx.IDs[pkitest.Agency], client.WithCRL(fx.CRL), client.WithRetry(10*time.Second),
		client.WithLogger(slog.New(slog.NewTextHandler(chanWriter(logs), nil))))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sent := make(chan error, 1)
	go func() {
		_, err := c.Send(ctx, testMessage(pkitest.Court, 1000), nil)
		sent <- err
	}()
	select {
	case line := <-logs:
		if !strings.Contains(line, "uploads under way") {
			t.Fatalf("the client logged %q, want it to try again after the busy slots", line)
		}
	case err := <-sent:
		t.Fatalf("Send with every slot taken returned %v at once, want it to try again", err)
	}
	release[0]()
	if err := <-sent; err != nil {
		t.Fatalf("Send once a slot is free: %v", err)
	}
}

// chanWriter passes each write (one log line) to a channel, dropping
// what does not fit.
type chanWriter chan string

func (w chanWriter) Write(p []byte) (int, error) {
	select {
	case w <- string(p):
	default:
	}
	return len(p), nil
}

// TestClient_SignedRejectionKeepsReason: a refusal the node signs a
// SubmissionRejection for (a payload over its MaxPayload) is a
// *client.RejectedError that still names the reason, and keeps the
// node's message as it was sent.
func TestClient_SignedRejectionKeepsReason(t *testing.T) {
	ts := startSetup(t, setup{node: func(c *node.Config) { c.Limits.MaxPayload = 2000 }})
	_, err := dialClient(t, ts.addr, pkitest.Agency).Send(context.Background(), testMessage(pkitest.Court, 5000), nil)
	var rej *client.RejectedError
	if !errors.As(err, &rej) || status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("Send of a payload over MaxPayload: %v (code %s), want a RejectedError, ResourceExhausted", err, status.Code(err))
	}
	if !errors.Is(err, client.ErrTooLarge) || client.Reason(err) != "TOO_LARGE" || reason(err) != rpc.ReasonTooLarge {
		t.Fatalf("Send of a payload over MaxPayload: %v; ErrTooLarge %v, Reason %q, want TOO_LARGE", err, errors.Is(err, client.ErrTooLarge), client.Reason(err))
	}
	if strings.Contains(rej.Message, "rpc error") || strings.Contains(status.Convert(err).Message(), "rpc error") {
		t.Fatalf("the node's message is wrapped in the transport's words: %q", rej.Message)
	}
}
