package daemon_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"kurier.dev/kurier/broker/daemon"
	"kurier.dev/kurier/broker/store"
	"kurier.dev/kurier/client"
	"kurier.dev/kurier/pki"
)

// logBuffer collects a node's log.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// closingHandler logs like TextHandler and, when the node logs that it
// closes its store, keeps the stacks of every goroutine at that moment.
type closingHandler struct {
	slog.Handler
	mu     *sync.Mutex
	stacks *string
}

func (h closingHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "closing the store" {
		buf := make([]byte, 1<<20)
		h.mu.Lock()
		*h.stacks = string(buf[:runtime.Stack(buf, true)])
		h.mu.Unlock()
	}
	return h.Handler.Handle(ctx, r)
}

func (h closingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return closingHandler{h.Handler.WithAttrs(as), h.mu, h.stacks}
}

func (h closingHandler) WithGroup(name string) slog.Handler {
	return closingHandler{h.Handler.WithGroup(name), h.mu, h.stacks}
}

// running is a node that Run serves in the background.
type running struct {
	addr   string
	cancel context.CancelFunc
	done   chan error

	mu     sync.Mutex
	closed string // the goroutines' stacks as the store began to close
}

// atClose returns the goroutines' stacks as the store began to close.
func (r *running) atClose() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.closed
}

// startRun runs cfg's node until stop, logging to logs.
func startRun(t *testing.T, cfg *daemon.Config, logs *logBuffer) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan error, 1)}
	ready := make(chan net.Addr, 1)
	logger := slog.New(closingHandler{slog.NewTextHandler(logs, nil), &r.mu, &r.closed})
	go func() { r.done <- daemon.Run(ctx, cfg, logger, func(a net.Addr) { ready <- a }) }()
	select {
	case a := <-ready:
		r.addr = a.String()
	case err := <-r.done:
		t.Fatalf("Run: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the node did not start within 30s")
	}
	t.Cleanup(func() { cancel(); <-r.done })
	return r
}

// stop cancels Run's context and returns how long Run took to return.
func (r *running) stop(t *testing.T) time.Duration {
	t.Helper()
	began := time.Now()
	r.cancel()
	select {
	case err := <-r.done:
		r.done <- err // for the cleanup
		if err != nil {
			t.Fatalf("Run after the stop: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return within 30s of the stop")
	}
	return time.Since(began)
}

// gate holds a submission after its first payload chunk until it is
// opened: a sender whose upload is under way.
type gate struct {
	once    sync.Once
	holding chan struct{} // closed once the submission is held
	open    chan struct{}
}

func newGate() *gate { return &gate{holding: make(chan struct{}), open: make(chan struct{})} }

func (g *gate) progress(sent, _ int64) {
	if sent > 0 {
		g.once.Do(func() { close(g.holding); <-g.open })
	}
}

// TestRun_ShutdownWhileBusy stops a node (Run's context ends, as on
// SIGTERM) while a subscription and a health watch are open and two
// submissions are under way, and checks what each party relies on: the
// watch reports NOT_SERVING, then it and the subscription end with
// Unavailable "the node is shutting down"; the upload that goes on gets
// its receipt; the stalled one fails with Unavailable and leaves nothing
// behind; Run returns within seconds (the stalled upload's StopIdle, not
// the 10 s grace), with its background work (relay worker, sweep, expiry,
// disk alarm) ended and the store closed cleanly; and a restart serves
// every message that got a receipt.
func TestRun_ShutdownWhileBusy(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	cfg, err := daemon.Dev(dir, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// A peer nobody answers for: its relay worker runs while the node
	// stops, and must be ended before the store closes.
	cfg.Peers = map[string]string{"landgericht.example": "127.0.0.1:1"}
	logs := &logBuffer{}
	node := startRun(t, cfg, logs)

	agencyID, err := pki.LoadIdentity(daemon.DevIdentity(dir, "agency"))
	if err != nil {
		t.Fatal(err)
	}
	courtID, err := pki.LoadIdentity(daemon.DevIdentity(dir, "court"))
	if err != nil {
		t.Fatal(err)
	}
	dialAs := func(id *pki.Identity, addr string) *client.Client {
		c, err := client.Dial(ctx, addr, id, client.WithCRL(cfg.CRL), client.WithRetry(0), client.WithLogger(slog.New(slog.DiscardHandler)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	agency, court := dialAs(agencyID, node.addr), dialAs(courtID, node.addr)

	// The subscription is live once it announces a first message.
	notices := make(chan client.InboxEntry, 16)
	subEnded := make(chan error, 1)
	go func() {
		subEnded <- court.Subscribe(ctx, func(e client.InboxEntry) error { notices <- e; return nil })
	}()
	docs := map[string][]byte{}
	send := func(subject string, size int, progress func(sent, total int64)) (*client.Receipt, error) {
		data := make([]byte, size)
		rand.Read(data)
		sealed, err := agency.Seal(ctx, client.Message{To: []string{daemon.DevCourt}, Subject: subject, Documents: []client.Document{{Name: subject + ".pdf", Data: data}}})
		if err != nil {
			return nil, err
		}
		docs[sealed.ID] = data
		return agency.Submit(ctx, sealed, progress)
	}
	received := map[string]bool{} // message ids with a receipt
	var firstID string
	for firstID == "" {
		r, err := send("vorab", 1000, nil)
		if err != nil {
			t.Fatal(err)
		}
		received[r.MessageID] = true
		select {
		case e := <-notices:
			firstID = e.ID
		case err := <-subEnded:
			t.Fatalf("the subscription ended before the stop: %v", err)
		case <-time.After(time.Second):
			// Subscribed after the message was stored: send another.
		}
	}

	// A health watch, from the court's certificate.
	trust, err := pki.NewTrustStore(courtID.Roots, cfg.CRL)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(node.addr, grpc.WithTransportCredentials(credentials.NewTLS(pki.ClientTLS(courtID, trust, "amtsgericht.example"))))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	watch, err := healthpb.NewHealthClient(conn).Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := watch.Recv(); err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health watch before the stop: %v, %v", r, err)
	}

	// Two submissions of 1 MiB, each held after its first chunk.
	type result struct {
		r   *client.Receipt
		err error
	}
	submit := func(subject string) (*gate, chan result) {
		g, res := newGate(), make(chan result, 1)
		go func() {
			r, err := send(subject, 1<<20, g.progress)
			res <- result{r, err}
		}()
		select {
		case <-g.holding:
		case r := <-res:
			t.Fatalf("submission %s ended before it was held: %v", subject, r.err)
		}
		return g, res
	}
	goesOn, goesOnRes := submit("weiter")
	stalls, stallsRes := submit("haengt")
	// The node reads a connection's frames in order: once it answers a
	// later call, both uploads are under way in it.
	if _, err := agency.Inbox(ctx); err != nil {
		t.Fatal(err)
	}

	stopped := make(chan time.Duration, 1)
	go func() { stopped <- node.stop(t) }()

	for {
		r, err := watch.Recv()
		if err != nil {
			t.Fatalf("the health watch ended before it reported NOT_SERVING: %v", err)
		}
		if r.GetStatus() == healthpb.HealthCheckResponse_NOT_SERVING {
			break
		}
	}
	_, err = watch.Recv()
	wantShuttingDown(t, "the health watch", err)
	wantShuttingDown(t, "the subscription", <-subEnded)

	// The node drains: the held upload that goes on now is still taken.
	close(goesOn.open)
	res := <-goesOnRes
	switch {
	case res.err == nil:
		received[res.r.MessageID] = true
		t.Logf("the upload that went on during the stop got its receipt")
	default:
		// Only if this machine stalled it past StopIdle.
		wantShuttingDown(t, "the upload that went on", res.err)
	}

	took := <-stopped
	t.Logf("Run returned %v after its context ended", took)
	if took > 5*time.Second {
		t.Errorf("Run took %v to stop, want a few seconds at most", took)
	}
	close(stalls.open)
	res = <-stallsRes
	if res.err == nil {
		t.Fatal("the upload held until the node had stopped got a receipt")
	}
	wantShuttingDown(t, "the stalled upload", res.err)

	// Every call and all background work had ended before the store
	// began to close, and everything Run started has ended with it.
	atClose := node.atClose()
	if atClose == "" {
		t.Fatal("the node did not log that it closes its store")
	}
	for _, fn := range []string{"broker/relay.(*Worker)", "broker/daemon.sweepLoop", "broker/daemon.expireLoop", "broker/daemon.every", "broker/diskspace."} {
		if strings.Contains(atClose, fn) {
			t.Errorf("%s still ran as the store began to close:\n%s", fn, atClose)
		}
	}
	if m := regexp.MustCompile(`broker/rpc\.\(\*service\)\.[A-Z]\w*`).FindString(atClose); m != "" {
		t.Errorf("the handler %s still ran as the store began to close:\n%s", m, atClose)
	}
	buf := make([]byte, 1<<20)
	stacks := string(buf[:runtime.Stack(buf, true)])
	for _, pkg := range []string{"kurier.dev/kurier/broker/relay.", "kurier.dev/kurier/broker/daemon.", "kurier.dev/kurier/broker/store.", "kurier.dev/kurier/broker/diskspace."} {
		if strings.Contains(stacks, pkg) {
			t.Errorf("a goroutine in %s outlived Run:\n%s", pkg, stacks)
		}
	}
	var mark struct{ Clean bool }
	if b, err := os.ReadFile(filepath.Join(cfg.Data, store.MarkFile)); err != nil || json.Unmarshal(b, &mark) != nil || !mark.Clean {
		t.Errorf("the store's mark after the stop: %s (%v), want it closed cleanly", b, err)
	}
	logged := logs.String()
	for _, bad := range []string{"level=ERROR", "were cut"} {
		if strings.Contains(logged, bad) {
			t.Errorf("the node logged %q while it stopped:\n%s", bad, logged)
		}
	}

	// A restart serves every message with a receipt, and no other.
	again := startRun(t, cfg, &logBuffer{})
	court2 := dialAs(courtID, again.addr)
	inbox, err := court2.Inbox(ctx)
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{}
	for _, e := range inbox {
		listed[e.ID] = true
	}
	for id := range docs {
		if listed[id] != received[id] {
			t.Errorf("message %s: listed %v after the restart, receipt %v", id, listed[id], received[id])
		}
		if !received[id] {
			continue
		}
		f, err := court2.Fetch(ctx, id, t.TempDir())
		if err != nil {
			t.Fatalf("fetch %s after the restart: %v", id, err)
		}
		var got []byte
		for _, p := range f.Files {
			got, err = os.ReadFile(p)
		}
		if err != nil || !bytes.Equal(got, docs[id]) {
			t.Errorf("message %s after the restart: document differs (%v)", id, err)
		}
	}
	t.Logf("an idle node stopped in %v", again.stop(t))
	var report bytes.Buffer
	if err := daemon.CheckStore(ctx, cfg, &report, slog.New(slog.DiscardHandler)); err != nil {
		t.Errorf("the store after the stops: %v\n%s", err, report.String())
	}
}

// wantShuttingDown fails the test unless err carries the Unavailable a
// stopping node answers with.
func wantShuttingDown(t *testing.T, what string, err error) {
	t.Helper()
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "the node is shutting down") {
		t.Errorf("%s while the node stopped: %v, want Unavailable saying the node is shutting down", what, err)
	}
	var st interface{ GRPCStatus() *status.Status }
	if !errors.As(err, &st) {
		t.Errorf("%s: %v carries no status", what, err)
	}
}
