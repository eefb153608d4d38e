package rpc_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/broker/node"
	"kurier.dev/kurier/broker/rpc"
	"kurier.dev/kurier/broker/store"
	"kurier.dev/kurier/pki/pkitest"
	kurierv1 "kurier.dev/kurier/proto/kurier/v1"
)

// wantStopping fails the test unless err is the Unavailable a stopping
// node ends a stream with, saying so in words that contain want.
func wantStopping(t *testing.T, what string, err error, want string) {
	t.Helper()
	if status.Code(err) != codes.Unavailable || !strings.Contains(status.Convert(err).Message(), want) {
		t.Errorf("%s while the node stops: %v, want Unavailable saying %q", what, err, want)
	}
}

// TestServer_Shutdown stops a server while a subscription, a health
// watch, a reflection stream and two uploads are open: the watch reports
// NOT_SERVING, then it, the subscription and the reflection stream end
// with Unavailable "the node is shutting down"; the upload that goes on
// is stored and answered with its receipt; the stalled one is given up
// with Unavailable after StopIdle and leaves no message; and Shutdown
// returns without cutting anything.
func TestServer_Shutdown(t *testing.T) {
	const stopIdle = 2 * time.Second // outlasts resuming the upload that goes on
	ts := startTestServer(t, rpc.Options{StopIdle: stopIdle})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	court := dial(t, ts.addr, fx.IDs[pkitest.Court], ts.trust)
	agency := dial(t, ts.addr, fx.IDs[pkitest.Agency], ts.trust)

	sub, err := kurierv1.NewMailboxServiceClient(court).Subscribe(ctx, &kurierv1.SubscribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sub.Header(); err != nil {
		t.Fatal(err)
	}
	watch, err := healthpb.NewHealthClient(court).Watch(ctx, &healthpb.HealthCheckRequest{Service: "kurier.v1.MailboxService"})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := watch.Recv(); err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health watch before the stop: %v, %v", r, err)
	}
	refl := reflectionRunning(ctx, t, court)

	// Two uploads, each with its envelope and part of its payload sent.
	mb := kurierv1.NewMailboxServiceClient(agency)
	type upload struct {
		stream grpc.ClientStreamingClient[kurierv1.SubmitRequest, kurierv1.SubmitResponse]
		id     string
		rest   []byte
	}
	start := func() upload {
		first, payload := signedSubmit(t, pkitest.Agency, fx.IDs[pkitest.Agency], pkitest.Court, 600<<10)
		stream, err := mb.Submit(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(first); err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(&kurierv1.SubmitRequest{Part: &kurierv1.SubmitRequest_Chunk{Chunk: payload[:300<<10]}}); err != nil {
			t.Fatal(err)
		}
		return upload{stream: stream, id: signedID(t, first), rest: payload[300<<10:]}
	}
	goesOn, stalls := start(), start()
	// The node reads a connection's frames in order: once it answers a
	// later call, it has both uploads under way.
	if _, err := mb.ListInbox(ctx, &kurierv1.ListInboxRequest{}); err != nil {
		t.Fatal(err)
	}

	began := time.Now()
	shut := make(chan error, 1)
	go func() { shut <- ts.srv.Shutdown(ctx) }()

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
	wantStopping(t, "the health watch", err, "the node is shutting down")
	_, err = sub.Recv()
	wantStopping(t, "the subscription", err, "the node is shutting down")
	_, err = refl.Recv()
	wantStopping(t, "the reflection stream", err, "the node is shutting down")

	// The node is stopping: the upload that goes on is still taken.
	if err := goesOn.stream.Send(&kurierv1.SubmitRequest{Part: &kurierv1.SubmitRequest_Chunk{Chunk: goesOn.rest}}); err != nil {
		t.Fatalf("send the rest of an upload while the node stops: %v", err)
	}
	resp, err := goesOn.stream.CloseAndRecv()
	if err != nil || resp.GetMessageId() != goesOn.id || len(resp.GetEvidence()) == 0 {
		t.Fatalf("an upload that went on while the node stopped: %v, %v; want its receipt", resp, err)
	}
	var r kurierv1.SubmitResponse
	err = stalls.stream.RecvMsg(&r)
	wantStopping(t, "a stalled upload", err, "the upload stalled; submit the same message again")

	if err := <-shut; err != nil {
		t.Fatalf("Shutdown = %v, want every call ended without a cut", err)
	}
	t.Logf("Shutdown took %v (StopIdle %v)", time.Since(began), stopIdle)
	if _, err := ts.db.Message(ctx, goesOn.id); err != nil {
		t.Errorf("the message with a receipt is not stored: %v", err)
	}
	if _, err := ts.db.Message(ctx, stalls.id); !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("the stalled upload's message: %v, want none stored", err)
	}
}

// TestServer_ShutdownCutsAfterGrace stops a server while a download goes
// to a caller that reads nothing: Shutdown cuts it once its context ends,
// returns that it did, and only once the handler has returned.
func TestServer_ShutdownCutsAfterGrace(t *testing.T) {
	ts := startTestServer(t, rpc.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	first, payload := signedSubmit(t, pkitest.Agency, fx.IDs[pkitest.Agency], pkitest.Court, 4<<20)
	stream, err := kurierv1.NewMailboxServiceClient(dial(t, ts.addr, fx.IDs[pkitest.Agency], ts.trust)).Submit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stream.Send(first)
	for off := 0; off < len(payload); off += rpc.ChunkSize {
		stream.Send(&kurierv1.SubmitRequest{Part: &kurierv1.SubmitRequest_Chunk{Chunk: payload[off:min(off+rpc.ChunkSize, len(payload))]}})
	}
	if _, err := stream.CloseAndRecv(); err != nil {
		t.Fatal(err)
	}
	// Fixed flow-control windows, far below the payload: the download
	// stalls once they are full.
	court := dial(t, ts.addr, fx.IDs[pkitest.Court], ts.trust, grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	fetch, err := kurierv1.NewMailboxServiceClient(court).Fetch(ctx, &kurierv1.FetchRequest{MessageId: signedID(t, first)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fetch.Recv(); err != nil { // the envelope: the download is under way
		t.Fatal(err)
	}
	grace, cancelGrace := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancelGrace()
	if err := ts.srv.Shutdown(grace); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown with a download held up = %v, want the grace's end", err)
	}
	for err = nil; err == nil; {
		_, err = fetch.Recv()
	}
	if status.Code(err) != codes.Unavailable {
		t.Errorf("the cut download: %v, want Unavailable", err)
	}
}

// panicking is a store whose Inbox and OpenBlob panic while armed: no
// input makes the node panic, so this stands for a bug in it.
type panicking struct {
	*store.DB
	armed atomic.Bool
}

func (p *panicking) Inbox(ctx context.Context, recipient, after string, limit int) ([]broker.InboxEntry, string, error) {
	if p.armed.Load() {
		panic("inbox index out of range [3] with length 3")
	}
	return p.DB.Inbox(ctx, recipient, after, limit)
}

func (p *panicking) OpenBlob(ctx context.Context, id string) (io.ReadCloser, error) {
	if p.armed.Load() {
		panic("blob reader for " + id + " is nil")
	}
	return p.DB.OpenBlob(ctx, id)
}

// logBuffer collects a server's log.
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

// TestFaultPanic_Recovered makes a unary call (ListInbox) and a stream
// (Fetch) panic inside the node: each is answered with Internal naming an
// incident and nothing of the panic; the log has the panic, the method,
// the caller and the stack down to the panicking code under that
// incident; and the server serves the next calls on the same connection.
func TestFaultPanic_Recovered(t *testing.T) {
	var st *panicking
	logs := &logBuffer{}
	ts := startSetup(t, setup{
		opts: rpc.Options{Logger: slog.New(slog.NewTextHandler(logs, nil))},
		wrap: func(db *store.DB) node.Store { st = &panicking{DB: db}; return st },
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := submitOver(t, kurierv1.NewMailboxServiceClient(dial(t, ts.addr, fx.IDs[pkitest.Agency], ts.trust)), pkitest.Agency, pkitest.Court, 1000, false); err != nil {
		t.Fatal(err)
	}
	court := kurierv1.NewMailboxServiceClient(dial(t, ts.addr, fx.IDs[pkitest.Court], ts.trust))
	list, err := court.ListInbox(ctx, &kurierv1.ListInboxRequest{})
	if err != nil || len(list.GetMessages()) != 1 {
		t.Fatalf("ListInbox = %v, %v", list, err)
	}
	id := list.GetMessages()[0].GetMessageId()
	incident := regexp.MustCompile(`^internal error in the node; its operator's log has it as incident ([0-9a-f]{16})$`)

	st.armed.Store(true)
	calls := map[string]func() error{
		"ListInbox": func() error { _, err := court.ListInbox(ctx, &kurierv1.ListInboxRequest{}); return err },
		"Fetch": func() error {
			stream, err := court.Fetch(ctx, &kurierv1.FetchRequest{MessageId: id})
			if err != nil {
				return err
			}
			for {
				if _, err := stream.Recv(); err != nil {
					return err
				}
			}
		},
	}
	for method, call := range calls {
		err := call()
		m := incident.FindStringSubmatch(status.Convert(err).Message())
		if status.Code(err) != codes.Internal || m == nil {
			t.Fatalf("%s panicking: %v, want Internal naming an incident and nothing else", method, err)
		}
		logged := logs.String()
		for _, want := range []string{"incident=" + m[1], "/kurier.v1.MailboxService/" + method, `peer="participant ` + pkitest.Court + `"`, "panicking)." + map[string]string{"ListInbox": "Inbox", "Fetch": "OpenBlob"}[method], "level=ERROR"} {
			if !strings.Contains(logged, want) {
				t.Errorf("%s: the log lacks %q:\n%s", method, want, logged)
			}
		}
	}
	if !strings.Contains(logs.String(), "inbox index out of range") {
		t.Errorf("the log lacks the panic value:\n%s", logs.String())
	}

	st.armed.Store(false)
	if list, err := court.ListInbox(ctx, &kurierv1.ListInboxRequest{}); err != nil || len(list.GetMessages()) != 1 {
		t.Fatalf("ListInbox after the panics: %v, %v; want the server to serve on", list, err)
	}
	if err := calls["Fetch"](); !errors.Is(err, io.EOF) {
		t.Fatalf("Fetch after the panics: %v, want the whole message", err)
	}
}

// TestFaultPanic_Interceptors: the interceptors a node adds (its metrics
// and audit log) see a panic in a call as Internal, and a panic in one of
// them is answered with Internal too, the server serving on.
func TestFaultPanic_Interceptors(t *testing.T) {
	var st *panicking
	var seen atomic.Value // the last code the observing interceptor saw
	var explode atomic.Bool
	observe := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		resp, err := h(ctx, req)
		seen.Store(status.Code(err))
		return resp, err
	}
	blowUp := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if explode.Load() {
			panic("an interceptor's own bug")
		}
		return h(ctx, req)
	}
	ts := startSetup(t, setup{
		opts: rpc.Options{Logger: slog.New(slog.DiscardHandler), Unary: []grpc.UnaryServerInterceptor{observe, blowUp}},
		wrap: func(db *store.DB) node.Store { st = &panicking{DB: db}; return st },
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	court := kurierv1.NewMailboxServiceClient(dial(t, ts.addr, fx.IDs[pkitest.Court], ts.trust))

	st.armed.Store(true)
	if _, err := court.ListInbox(ctx, &kurierv1.ListInboxRequest{}); status.Code(err) != codes.Internal {
		t.Fatalf("ListInbox panicking in the node: %v, want Internal", err)
	}
	if got := seen.Load(); got != codes.Internal {
		t.Fatalf("the node's interceptor saw %v of a panicking call, want Internal", got)
	}
	st.armed.Store(false)
	explode.Store(true)
	if _, err := court.ListInbox(ctx, &kurierv1.ListInboxRequest{}); status.Code(err) != codes.Internal {
		t.Fatalf("ListInbox with a panicking interceptor: %v, want Internal", err)
	}
	explode.Store(false)
	if _, err := court.ListInbox(ctx, &kurierv1.ListInboxRequest{}); err != nil {
		t.Fatalf("ListInbox after the panics: %v, want the server to serve on", err)
	}
}
