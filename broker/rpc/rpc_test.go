package rpc_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"kurier.dev/kurier/broker/node"
	"kurier.dev/kurier/broker/rpc"
	"kurier.dev/kurier/envelope"
	"kurier.dev/kurier/pki"
	"kurier.dev/kurier/pki/cms"
	"kurier.dev/kurier/pki/pkitest"
	kurierv1 "kurier.dev/kurier/proto/kurier/v1"
	"kurier.dev/kurier/tlog"
)

var fx *pkitest.PKI

func TestMain(m *testing.M) { pkitest.Main(m, &fx) }

// startServer runs a node behind the real gRPC server on 127.0.0.1:0.
func startServer(t *testing.T) (string, *pki.TrustStore) {
	t.Helper()
	return startServerWith(t, rpc.Options{})
}

// startServerWith is startServer with the server's options o.
func startServerWith(t *testing.T, o rpc.Options) (string, *pki.TrustStore) {
	t.Helper()
	ts := startSetup(t, setup{opts: o})
	return ts.addr, ts.trust
}

func dial(t *testing.T, addr string, id *pki.Identity, trust *pki.TrustStore, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	cfg := pki.ClientTLS(id, trust, "stadt.example")
	conn, err := grpc.NewClient(addr, append(opts, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func TestServer_Handshake(t *testing.T) {
	addr, trust := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	t.Run("valid participant", func(t *testing.T) {
		conn := dial(t, addr, fx.IDs[pkitest.Agency], trust)
		resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("health = %v, %v", resp, err)
		}
		lk, err := kurierv1.NewDirectoryServiceClient(conn).Lookup(ctx, &kurierv1.LookupRequest{Address: pkitest.Court})
		if err != nil || !lk.Exists || !bytes.Equal(lk.Entry.EncryptionCertificate, fx.IDs[pkitest.Court].EncCert.Raw) {
			t.Fatalf("lookup = %v, %v", lk, err)
		}
	})
	t.Run("reflection lists the services", func(t *testing.T) {
		conn := dial(t, addr, fx.IDs[pkitest.Agency], trust)
		stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, s := range resp.GetListServicesResponse().GetService() {
			names = append(names, s.GetName())
		}
		for _, want := range []string{"kurier.v1.MailboxService", "kurier.v1.DirectoryService", "kurier.v1.LogService", "grpc.health.v1.Health"} {
			if !slices.Contains(names, want) {
				t.Errorf("reflection lists %v, missing %s", names, want)
			}
		}
	})
	for name, id := range map[string]*pki.Identity{"revoked": fx.Revoked, "foreign CA": fx.Foreign} {
		t.Run(name, func(t *testing.T) {
			conn := dial(t, addr, id, trust)
			_, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
			if status.Code(err) != codes.Unavailable {
				t.Fatalf("err = %v, want the handshake refused (Unavailable)", err)
			}
		})
	}
	t.Run("no client certificate", func(t *testing.T) {
		cfg := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: trust.Roots(), ServerName: "stadt.example"}
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("err = %v, want the handshake refused", err)
		}
	})
}

// TestServer_RevokedWhileConnected revokes a participant whose connection
// is already up: its next call must be refused, not just its next
// handshake.
func TestServer_RevokedWhileConnected(t *testing.T) {
	ts := startTestServer(t, rpc.Options{})
	addr, trust := ts.addr, ts.trust
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	id, err := fx.CA.IssueParticipant(filepath.Join(t.TempDir(), "id"), pkitest.Other)
	if err != nil {
		t.Fatal(err)
	}
	dir := kurierv1.NewDirectoryServiceClient(dial(t, addr, id, trust))
	if _, err := dir.Lookup(ctx, &kurierv1.LookupRequest{Address: pkitest.Court}); err != nil {
		t.Fatalf("before revocation: %v", err)
	}
	ts.revoke(t, id.Cert.SerialNumber)
	_, err = dir.Lookup(ctx, &kurierv1.LookupRequest{Address: pkitest.Court})
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("after revocation on the same connection: err = %v, want Unauthenticated", err)
	}
}

func TestServer_SubmitStatus(t *testing.T) {
	addr, trust := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	agency := fx.IDs[pkitest.Agency]
	mailbox := kurierv1.NewMailboxServiceClient(dial(t, addr, agency, trust))

	submit := func(frames ...*kurierv1.SubmitRequest) (*kurierv1.SubmitResponse, error) {
		stream, err := mailbox.Submit(ctx)
		if err != nil {
			return nil, err
		}
		for _, f := range frames {
			if err := stream.Send(f); err != nil {
				break // the server answered early; CloseAndRecv has its status
			}
		}
		return stream.CloseAndRecv()
	}
	build := func(to string, payload []byte) *kurierv1.SubmitRequest {
		id, _ := envelope.NewID()
		sum := sha256.Sum256(payload)
		env := &envelope.Envelope{
			Version: 1, ID: id, From: pkitest.Agency, To: []string{to}, Subject: "Test",
			Created: time.Now().UTC(), PayloadSHA256: hex.EncodeToString(sum[:]), PayloadSize: int64(len(payload)),
			Files: []envelope.File{{Name: "a.txt", Size: 1}},
		}
		b, err := env.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		sig, err := cms.SignDetached(b, pkitest.Signer(agency))
		if err != nil {
			t.Fatal(err)
		}
		return &kurierv1.SubmitRequest{Part: &kurierv1.SubmitRequest_Envelope{Envelope: &kurierv1.SignedEnvelope{Envelope: b, Signature: sig}}}
	}
	chunk := func(b []byte) *kurierv1.SubmitRequest {
		return &kurierv1.SubmitRequest{Part: &kurierv1.SubmitRequest_Chunk{Chunk: b}}
	}
	payload := make([]byte, 1000)
	rand.Read(payload)

	t.Run("accepted", func(t *testing.T) {
		resp, err := submit(build(pkitest.Court, payload), chunk(payload[:400]), chunk(payload[400:]))
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Evidence) != 2 || resp.Evidence[0].Type != "SubmissionAcceptance" || resp.Evidence[1].Type != "Delivery" {
			t.Fatalf("evidence = %v", resp.Evidence)
		}
	})
	t.Run("log proves the evidence", func(t *testing.T) {
		logs := kurierv1.NewLogServiceClient(dial(t, addr, agency, trust))
		checkpoint := func() tlog.Checkpoint {
			t.Helper()
			resp, err := logs.GetCheckpoint(ctx, &kurierv1.GetCheckpointRequest{})
			if err != nil {
				t.Fatal(err)
			}
			c, err := tlog.Open(resp.Checkpoint, fx.LogVKey)
			if err != nil || c.Size != resp.TreeSize || c.Origin != "stadt.example/kurier-log" {
				t.Fatalf("checkpoint %+v does not open: %v", c, err)
			}
			return c
		}
		older := checkpoint()
		resp, err := submit(build(pkitest.Court, payload), chunk(payload))
		if err != nil {
			t.Fatal(err)
		}
		newer := checkpoint()
		if newer.Size != older.Size+2 {
			t.Fatalf("log grew from %d to %d, want 2 leaves more", older.Size, newer.Size)
		}
		for _, ev := range resp.Evidence {
			p, err := logs.GetInclusionProof(ctx, &kurierv1.GetInclusionProofRequest{LeafIndex: ev.LeafIndex, TreeSize: newer.Size})
			if err != nil {
				t.Fatal(err)
			}
			if err := tlog.VerifyInclusion(ev.Der, ev.LeafIndex, p.Hashes, newer); err != nil {
				t.Errorf("%s at leaf %d: %v", ev.Type, ev.LeafIndex, err)
			}
		}
		cp, err := logs.GetConsistencyProof(ctx, &kurierv1.GetConsistencyProofRequest{FromSize: older.Size, ToSize: newer.Size})
		if err != nil {
			t.Fatal(err)
		}
		if err := tlog.VerifyConsistency(older, newer, cp.Hashes); err != nil {
			t.Errorf("consistency %d → %d: %v", older.Size, newer.Size, err)
		}
		if _, err := logs.GetInclusionProof(ctx, &kurierv1.GetInclusionProofRequest{LeafIndex: newer.Size, TreeSize: newer.Size}); status.Code(err) != codes.InvalidArgument {
			t.Errorf("leaf beyond the tree: %v, want InvalidArgument", err)
		}
		if _, err := logs.GetConsistencyProof(ctx, &kurierv1.GetConsistencyProofRequest{FromSize: 1, ToSize: newer.Size + 1}); status.Code(err) != codes.NotFound {
			t.Errorf("tree size beyond the log: %v, want NotFound", err)
		}
	})
	t.Run("unknown recipient carries a rejection", func(t *testing.T) {
		_, err := submit(build("niemand@amtsgericht.example", payload), chunk(payload))
		st := status.Convert(err)
		if st.Code() != codes.NotFound {
			t.Fatalf("code = %v (%v), want NotFound", st.Code(), err)
		}
		var found bool
		for _, d := range st.Details() {
			if rej, ok := d.(*kurierv1.SubmissionRejected); ok && rej.Evidence.Type == "SubmissionRejection" && len(rej.Evidence.Der) > 0 {
				found = true
			}
		}
		if !found {
			t.Fatalf("status details %v carry no SubmissionRejected", st.Details())
		}
	})
	t.Run("chunk before envelope", func(t *testing.T) {
		_, err := submit(chunk(payload))
		if status.Code(err) != codes.InvalidArgument {
			t.Fatalf("err = %v, want InvalidArgument", err)
		}
	})
	t.Run("oversized chunk", func(t *testing.T) {
		big := make([]byte, rpc.MaxChunkSize+1)
		_, err := submit(build(pkitest.Court, big), chunk(big))
		if c := status.Code(err); c != codes.InvalidArgument && c != codes.ResourceExhausted {
			t.Fatalf("err = %v, want InvalidArgument or ResourceExhausted", err)
		}
	})
	t.Run("fetch of a message not in the mailbox", func(t *testing.T) {
		id, _ := envelope.NewID()
		stream, err := mailbox.Fetch(ctx, &kurierv1.FetchRequest{MessageId: id})
		if err == nil {
			_, err = stream.Recv()
		}
		if status.Code(err) != codes.NotFound {
			t.Fatalf("err = %v, want NotFound", err)
		}
	})
}

// TestHostile_LongMessageID asks for the evidence and an export of a
// message id of 1000 KiB: the node refuses it as invalid, and its answer
// quotes only the id's beginning.
func TestHostile_LongMessageID(t *testing.T) {
	addr, trust := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	mailbox := kurierv1.NewMailboxServiceClient(dial(t, addr, fx.IDs[pkitest.Agency], trust))
	id := strings.Repeat("x", 1000<<10)
	calls := map[string]func() error{
		"GetEvidence": func() error {
			_, err := mailbox.GetEvidence(ctx, &kurierv1.GetEvidenceRequest{MessageId: id})
			return err
		},
		"ExportMessage": func() error {
			_, err := mailbox.ExportMessage(ctx, &kurierv1.ExportMessageRequest{MessageId: id})
			return err
		},
		"Fetch": func() error {
			stream, err := mailbox.Fetch(ctx, &kurierv1.FetchRequest{MessageId: id})
			if err != nil {
				return err
			}
			_, err = stream.Recv()
			return err
		},
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			err := call()
			if status.Code(err) != codes.InvalidArgument || len(status.Convert(err).Message()) > 200 {
				t.Fatalf("%s: %s, %d bytes of message; want InvalidArgument quoting at most the id's beginning", name, status.Code(err), len(status.Convert(err).Message()))
			}
		})
	}
}

// TestHostile_StalledUploads has one participant open uploads and stop
// sending: it gets at most its share of the upload slots, the others are
// not kept waiting, and each stalled upload is given up after the idle
// time, freeing its slot.
func TestHostile_StalledUploads(t *testing.T) {
	// The idle time must outlast signing the further uploads on a loaded
	// machine, or the stalled ones are given up before they are counted.
	addr, trust := startServerWith(t, rpc.Options{UploadIdle: 3 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	agency := kurierv1.NewMailboxServiceClient(dial(t, addr, fx.IDs[pkitest.Agency], trust))
	court := kurierv1.NewMailboxServiceClient(dial(t, addr, fx.IDs[pkitest.Court], trust))
	stall := func(mb kurierv1.MailboxServiceClient, from string, id *pki.Identity) (grpc.ClientStreamingClient[kurierv1.SubmitRequest, kurierv1.SubmitResponse], error) {
		stream, err := mb.Submit(ctx)
		if err != nil {
			return nil, err
		}
		first, _ := signedSubmit(t, from, id, pkitest.Court, 1<<20)
		if err := stream.Send(first); err != nil {
			return nil, err
		}
		return stream, stream.Send(&kurierv1.SubmitRequest{Part: &kurierv1.SubmitRequest_Chunk{Chunk: make([]byte, 1000)}})
	}
	var stalled []grpc.ClientStreamingClient[kurierv1.SubmitRequest, kurierv1.SubmitResponse]
	for range node.DefaultMaxPerSender {
		s, err := stall(agency, pkitest.Agency, fx.IDs[pkitest.Agency])
		if err != nil {
			t.Fatal(err)
		}
		stalled = append(stalled, s)
	}
	// The stalled uploads hold their slots only once the node has the
	// envelopes; a further one is refused as soon as they do.
	refused := false
	for i := 0; i < 20 && !refused; i++ {
		s, err := stall(agency, pkitest.Agency, fx.IDs[pkitest.Agency])
		if err == nil {
			_, err = s.CloseAndRecv()
		}
		refused = status.Code(err) == codes.ResourceExhausted && strings.Contains(status.Convert(err).Message(), "uploads under way")
	}
	if !refused {
		t.Fatal("a sender with every share of its slots stalled was not refused a further upload")
	}
	// Another participant is not kept waiting.
	first, payload := signedSubmit(t, pkitest.Court, fx.IDs[pkitest.Court], pkitest.Agency, 1000)
	stream, err := court.Submit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stream.Send(first)
	stream.Send(&kurierv1.SubmitRequest{Part: &kurierv1.SubmitRequest_Chunk{Chunk: payload}})
	if _, err := stream.CloseAndRecv(); err != nil {
		t.Fatalf("another participant's submission: %v", err)
	}
	// The stalled uploads are given up.
	for _, s := range stalled {
		var resp kurierv1.SubmitResponse
		if err := s.RecvMsg(&resp); status.Code(err) != codes.DeadlineExceeded {
			t.Fatalf("a stalled upload ended with %v, want DeadlineExceeded", err)
		}
	}
	// And their slots are free again.
	s, err := stall(agency, pkitest.Agency, fx.IDs[pkitest.Agency])
	if err != nil {
		t.Fatal(err)
	}
	var resp kurierv1.SubmitResponse
	if err := s.RecvMsg(&resp); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("an upload after the stalled ones ended: %v, want it to get a slot and stall in turn", err)
	}
}

// signedSubmit returns the first frame of a submission from `from` (signed
// with id) to `to` with a random payload of size bytes, and the payload.
func signedSubmit(t *testing.T, from string, id *pki.Identity, to string, size int) (*kurierv1.SubmitRequest, []byte) {
	t.Helper()
	payload := make([]byte, size)
	rand.Read(payload)
	mid, _ := envelope.NewID()
	sum := sha256.Sum256(payload)
	now := time.Now().UTC()
	env := &envelope.Envelope{
		Version: envelope.Version, ID: mid, From: from, To: []string{to}, Subject: "Test",
		Created: now, Expires: now.Add(time.Hour), PayloadSHA256: hex.EncodeToString(sum[:]), PayloadSize: int64(size),
		Files: []envelope.File{{Name: "a.txt", Size: 1, SHA256: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}},
	}
	b, err := env.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	sig, err := cms.SignDetached(b, pkitest.Signer(id))
	if err != nil {
		t.Fatal(err)
	}
	return &kurierv1.SubmitRequest{Part: &kurierv1.SubmitRequest_Envelope{Envelope: &kurierv1.SignedEnvelope{Envelope: b, Signature: sig}}}, payload
}

// TestHostile_RevokedSubscriber revokes a participant whose Subscribe
// stream is open: the stream ends with Unauthenticated, at the next notice
// or the next periodic check, whichever comes first, and tells it nothing
// more.
func TestHostile_RevokedSubscriber(t *testing.T) {
	notices := startTestServer(t, rpc.Options{StreamCheck: time.Hour})
	checks := startTestServer(t, rpc.Options{StreamCheck: 10 * time.Millisecond})
	byNotice, byCheck, trust := notices.addr, checks.addr, notices.trust
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	id, err := fx.CA.IssueParticipant(filepath.Join(t.TempDir(), "id"), pkitest.Other)
	if err != nil {
		t.Fatal(err)
	}
	subscribe := func(addr string) grpc.ServerStreamingClient[kurierv1.SubscribeResponse] {
		stream, err := kurierv1.NewMailboxServiceClient(dial(t, addr, id, trust)).Subscribe(ctx, &kurierv1.SubscribeRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Header(); err != nil {
			t.Fatal(err)
		}
		return stream
	}
	notice, check := subscribe(byNotice), subscribe(byCheck)
	notices.revoke(t, id.Cert.SerialNumber)
	checks.clock.advance(2 * time.Second) // and the other node reads the new CRL too
	if _, err := check.Recv(); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("the periodic check: %v, want Unauthenticated", err)
	}
	first, payload := signedSubmit(t, pkitest.Agency, fx.IDs[pkitest.Agency], pkitest.Other, 1000)
	submit, err := kurierv1.NewMailboxServiceClient(dial(t, byNotice, fx.IDs[pkitest.Agency], trust)).Submit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	submit.Send(first)
	submit.Send(&kurierv1.SubmitRequest{Part: &kurierv1.SubmitRequest_Chunk{Chunk: payload}})
	if _, err := submit.CloseAndRecv(); err != nil {
		t.Fatal(err)
	}
	if resp, err := notice.Recv(); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("the next notice to a revoked subscriber: %v, %v; want Unauthenticated and no notice", resp, err)
	}
}
