package rpc_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/mem"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/broker/rpc"
	"kurier.dev/kurier/envelope"
	"kurier.dev/kurier/evidence"
	"kurier.dev/kurier/pki/cms"
	"kurier.dev/kurier/pki/pkitest"
	kurierv1 "kurier.dev/kurier/proto/kurier/v1"
)

// rawCodec sends bytes as they are, so that a test can send what no
// protobuf library would encode.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }
func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.([]byte))}, nil
}
func (rawCodec) Unmarshal(mem.BufferSlice, any) error { return nil }

// notUTF8 encodes m, whose text field holds "MARK", with that text made
// invalid UTF-8.
func notUTF8(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte("MARK")) {
		t.Fatal("no MARK to spoil")
	}
	return bytes.Replace(b, []byte("MARK"), []byte{0xff, 0xfe, 'A', 0xc0}, 1)
}

// TestHostile_InvalidUTF8 sends requests whose text fields are not UTF-8,
// and one that is no protobuf message at all, over real mutual TLS: every
// kind of RPC refuses them as the caller's mistake (InvalidArgument) with
// a message that says so, not as a failure of the node (Internal).
func TestHostile_InvalidUTF8(t *testing.T) {
	ts := startTestServer(t, rpc.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	agency := dial(t, ts.addr, fx.IDs[pkitest.Agency], ts.trust)
	nodeConn := dial(t, ts.addr, fx.Node, ts.trust)
	raw := grpc.ForceCodecV2(rawCodec{})
	relayHeader := &kurierv1.RelayRequest{Part: &kurierv1.RelayRequest_Header{Header: &kurierv1.RelayHeader{
		Recipients: []*kurierv1.RelayRecipient{{Address: "MARK@amtsgericht.example"}},
	}}}
	tests := []struct {
		name, method string
		conn         *grpc.ClientConn
		desc         *grpc.StreamDesc // nil for a unary call
		frame        []byte
		want         string
	}{
		{"unary", "/kurier.v1.DirectoryService/Lookup", agency, nil, notUTF8(t, &kurierv1.LookupRequest{Address: "MARK@stadt.example"}), "a text field is not UTF-8"},
		{"unary page token", "/kurier.v1.MailboxService/ListInbox", agency, nil, notUTF8(t, &kurierv1.ListInboxRequest{PageToken: "MARK"}), "a text field is not UTF-8"},
		{"server stream", "/kurier.v1.MailboxService/Fetch", agency, &grpc.StreamDesc{ServerStreams: true}, notUTF8(t, &kurierv1.FetchRequest{MessageId: "MARK"}), "a text field is not UTF-8"},
		{"client stream", "/kurier.v1.RelayService/Relay", nodeConn, &grpc.StreamDesc{ClientStreams: true}, notUTF8(t, relayHeader), "a text field is not UTF-8"},
		{"health", "/grpc.health.v1.Health/Check", agency, nil, notUTF8(t, &healthpb.HealthCheckRequest{Service: "MARK"}), "a text field is not UTF-8"},
		{"not protobuf", "/kurier.v1.MailboxService/GetEvidence", agency, nil, []byte{0xff, 0xff, 0xff, 0xff}, "not a well-formed protobuf message"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			if tt.desc == nil {
				err = rawInvoke(ctx, tt.conn, tt.method, tt.frame, raw)
			} else {
				var stream grpc.ClientStream
				stream, err = tt.conn.NewStream(ctx, tt.desc, tt.method, raw)
				if err == nil {
					stream.SendMsg(tt.frame)
					stream.CloseSend()
					for err == nil {
						err = stream.RecvMsg(new([]byte))
					}
				}
			}
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), tt.want) {
				t.Fatalf("%s: %v; want InvalidArgument saying %q", tt.method, err, tt.want)
			}
		})
	}
}

func rawInvoke(ctx context.Context, conn *grpc.ClientConn, method string, frame []byte, opts ...grpc.CallOption) error {
	return conn.Invoke(ctx, method, frame, new([]byte), opts...)
}

// TestHostile_RevokedDuringStreams revokes a participant while its
// download, upload and subscription are under way: each ends with
// Unauthenticated saying that its certificate is revoked, the download
// before the payload is out (and without Retrieval evidence), the upload
// without the message being accepted.
func TestHostile_RevokedDuringStreams(t *testing.T) {
	ts := startTestServer(t, rpc.Options{StreamCheck: 10 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	id := freshParticipant(t, pkitest.Other)
	// A payload of four chunks, and a window of 64 KiB, so that the node
	// still has chunks to send when the certificate is revoked.
	first, payload := signedSubmit(t, pkitest.Agency, fx.IDs[pkitest.Agency], pkitest.Other, 4*rpc.ChunkSize)
	env := first.GetEnvelope()
	r, err := ts.node.Submit(ctx, participantPeer(pkitest.Agency), env.Envelope, env.Signature, bytes.NewReader(payload))
	if err != nil {
		t.Fatal(err)
	}
	conn := dial(t, ts.addr, id, ts.trust, grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	mailbox := kurierv1.NewMailboxServiceClient(conn)

	fetch, err := mailbox.Fetch(ctx, &kurierv1.FetchRequest{MessageId: r.MessageID})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := fetch.Recv(); err != nil || m.GetEnvelope() == nil {
		t.Fatalf("first frame of the fetch: %v, %v", m, err)
	}
	upload, err := mailbox.Submit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	up, upPayload := signedSubmit(t, pkitest.Other, id, pkitest.Agency, 2*rpc.ChunkSize)
	if err := upload.Send(up); err != nil {
		t.Fatal(err)
	}
	sub, err := mailbox.Subscribe(ctx, &kurierv1.SubscribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sub.Header(); err != nil {
		t.Fatal(err)
	}

	ts.revoke(t, id.Cert.SerialNumber)

	revoked := func(what string, err error) {
		t.Helper()
		if status.Code(err) != codes.Unauthenticated || !strings.Contains(status.Convert(err).Message(), "your certificate is revoked") {
			t.Errorf("%s after revocation: %v, want Unauthenticated saying the certificate is revoked", what, err)
		}
	}
	got := 0
	for err == nil {
		var m *kurierv1.FetchResponse
		if m, err = fetch.Recv(); err == nil {
			if m.GetEvidence() != nil {
				t.Fatal("the revoked recipient got Retrieval evidence")
			}
			got += len(m.GetChunk())
		}
	}
	revoked("the fetch", err)
	if got >= len(payload) {
		t.Errorf("the revoked recipient got the whole payload (%d bytes)", got)
	}
	for err = nil; err == nil; {
		err = upload.Send(&kurierv1.SubmitRequest{Part: &kurierv1.SubmitRequest_Chunk{Chunk: upPayload[:rpc.ChunkSize]}})
	}
	_, err = upload.CloseAndRecv()
	revoked("the upload", err)
	_, err = sub.Recv()
	revoked("the subscription", err)

	c, err := ts.db.Copy(ctx, r.MessageID, pkitest.Other)
	if err != nil || c.State != broker.StateDelivered {
		t.Errorf("the copy after the fetch was cut off: %+v (%v), want it still delivered, not retrieved", c, err)
	}
	upID := signedID(t, up)
	if _, err := ts.db.Message(ctx, upID); !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("the upload cut off was stored: %v", err)
	}
}

// TestHostile_RevokedIdleStreams revokes a participant while its upload
// (the envelope sent, no payload yet) and a reflection stream wait, idle,
// in a receive: both end at the next periodic check with Unauthenticated,
// not when the caller next sends or the upload's idle time runs out (an
// hour here), so that a revoked caller holds no upload slot.
func TestHostile_RevokedIdleStreams(t *testing.T) {
	ts := startTestServer(t, rpc.Options{StreamCheck: 10 * time.Millisecond, UploadIdle: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	id := freshParticipant(t, pkitest.Other)
	conn := dial(t, ts.addr, id, ts.trust)

	upload, err := kurierv1.NewMailboxServiceClient(conn).Submit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	up, _ := signedSubmit(t, pkitest.Other, id, pkitest.Agency, rpc.ChunkSize)
	if err := upload.Send(up); err != nil {
		t.Fatal(err)
	}
	refl := reflectionRunning(ctx, t, conn)

	ts.revoke(t, id.Cert.SerialNumber)
	start := time.Now()
	// Neither stream is closed by the caller: only the node can end them.
	err = upload.RecvMsg(new(kurierv1.SubmitResponse))
	if status.Code(err) != codes.Unauthenticated || !strings.Contains(status.Convert(err).Message(), "your certificate is revoked") {
		t.Errorf("the idle upload after revocation: %v, want Unauthenticated saying the certificate is revoked", err)
	}
	_, err = refl.Recv()
	if status.Code(err) != codes.Unauthenticated {
		t.Errorf("the idle reflection stream after revocation: %v, want Unauthenticated", err)
	}
	t.Logf("both streams ended %s after the revocation", time.Since(start))
	if _, err := ts.db.Message(context.Background(), signedID(t, up)); !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("the upload cut off was stored: %v", err)
	}
}

// signedID returns the message id of a submission's first frame.
func signedID(t *testing.T, first *kurierv1.SubmitRequest) string {
	t.Helper()
	env, err := envelope.Parse(first.GetEnvelope().GetEnvelope())
	if err != nil {
		t.Fatal(err)
	}
	return env.ID
}

// TestHostile_StaleCRLEndsStreams lets the node's CRL pass its NextUpdate
// while a subscription and a health watch are open and idle: both end,
// by the periodic check, with Unauthenticated saying that the node's CRL
// is out of date (not that the caller is revoked).
func TestHostile_StaleCRLEndsStreams(t *testing.T) {
	ts := startTestServer(t, rpc.Options{StreamCheck: 10 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn := dial(t, ts.addr, fx.IDs[pkitest.Other], ts.trust)
	sub, err := kurierv1.NewMailboxServiceClient(conn).Subscribe(ctx, &kurierv1.SubscribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sub.Header(); err != nil {
		t.Fatal(err)
	}
	watch, err := healthpb.NewHealthClient(conn).Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := watch.Recv(); err != nil {
		t.Fatal(err)
	}
	ts.clock.advance(25 * time.Hour) // the CRL is valid for 24 hours
	stale := func(what string, err error) {
		t.Helper()
		msg := status.Convert(err).Message()
		if status.Code(err) != codes.Unauthenticated || !strings.Contains(msg, "revocation list is out of date") || strings.Contains(msg, fx.Dir) {
			t.Errorf("%s with a stale CRL: %v, want Unauthenticated saying the node's CRL is out of date, naming no file", what, err)
		}
	}
	_, err = sub.Recv()
	stale("the subscription", err)
	for err = nil; err == nil; {
		_, err = watch.Recv()
	}
	stale("the health watch", err)
}

// TestHostile_RevokedRecipient revokes the encryption certificate of a
// local mailbox: the directory no longer hands it out (Lookup and Search),
// and a submission to that mailbox gets a SubmissionRejection saying why.
func TestHostile_RevokedRecipient(t *testing.T) {
	id := freshParticipant(t, pkitest.Other)
	ts := startTestServer(t, rpc.Options{}, map[string]*x509.Certificate{pkitest.Other: id.EncCert})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn := dial(t, ts.addr, fx.IDs[pkitest.Agency], ts.trust)
	dir := kurierv1.NewDirectoryServiceClient(conn)
	if lk, err := dir.Lookup(ctx, &kurierv1.LookupRequest{Address: pkitest.Other}); err != nil || !bytes.Equal(lk.GetEntry().GetEncryptionCertificate(), id.EncCert.Raw) {
		t.Fatalf("before revocation: %v, %v", lk, err)
	}
	ts.revoke(t, id.EncCert.SerialNumber)

	lk, err := dir.Lookup(ctx, &kurierv1.LookupRequest{Address: pkitest.Other})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(status.Convert(err).Message(), "encryption certificate is revoked") {
		t.Fatalf("Lookup of a revoked encryption certificate: %v, %v; want FailedPrecondition saying it is revoked", lk, err)
	}
	if r := reason(err); r != rpc.ReasonRevoked {
		t.Fatalf("Lookup of a revoked encryption certificate names the reason %q, want %q", r, rpc.ReasonRevoked)
	}
	found, err := dir.Search(ctx, &kurierv1.SearchRequest{Query: "buergeramt"})
	if err != nil || len(found.GetEntries()) != 0 {
		t.Fatalf("Search hands out %v (%v), want nothing for a revoked encryption certificate", found.GetEntries(), err)
	}

	first, payload := signedSubmit(t, pkitest.Agency, fx.IDs[pkitest.Agency], pkitest.Other, 1000)
	stream, err := kurierv1.NewMailboxServiceClient(conn).Submit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stream.Send(first)
	stream.Send(&kurierv1.SubmitRequest{Part: &kurierv1.SubmitRequest_Chunk{Chunk: payload}})
	_, err = stream.CloseAndRecv()
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(status.Convert(err).Message(), "encryption certificate is revoked") {
		t.Fatalf("submit to a revoked encryption certificate: %v, want FailedPrecondition", err)
	}
	var rejected *kurierv1.SubmissionRejected
	for _, d := range status.Convert(err).Details() {
		if r, ok := d.(*kurierv1.SubmissionRejected); ok {
			rejected = r
		}
	}
	if rejected == nil || rejected.GetEvidence().GetType() != "SubmissionRejection" {
		t.Fatalf("the refusal carries %v, want SubmissionRejection evidence", status.Convert(err).Details())
	}
}

// TestHostile_LongInputs sends a 1000 KiB value in every request field
// that a refusal might quote: every refusal stays short and quotes at most
// the value's first 64 bytes or so (80 for a JSON key).
func TestHostile_LongInputs(t *testing.T) {
	ts := startTestServer(t, rpc.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	long := strings.Repeat("x", 1000<<10)
	agency := dial(t, ts.addr, fx.IDs[pkitest.Agency], ts.trust)
	mailbox := kurierv1.NewMailboxServiceClient(agency)
	dir := kurierv1.NewDirectoryServiceClient(agency)
	relay := kurierv1.NewRelayServiceClient(dial(t, ts.addr, fx.Node, ts.trust))
	first, _ := signedSubmit(t, pkitest.Agency, fx.IDs[pkitest.Agency], pkitest.Court, 1000)
	signed := first.GetEnvelope()

	// statementField returns a Rejection by the court, signed by it, with
	// field set to value (checked only when the node reads it).
	court := fx.IDs[pkitest.Court]
	statementField := func(field, value string) []byte {
		t.Helper()
		st := map[string]any{
			"version": evidence.StatementVersion, "type": evidence.Rejection, "message_id": signedID(t, first),
			"envelope_sha256": strings.Repeat("0", 64), "payload_sha256": strings.Repeat("0", 64),
			"sender": pkitest.Agency, "recipient": pkitest.Court, "issuer": pkitest.Court,
			"time": time.Now().UTC().Format(evidence.TimeFormat), "previous_sha256": "", "reason": "other: x",
		}
		st[field] = value
		b, err := json.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		der, err := cms.Sign(b, pkitest.Signer(court))
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	courtBox := kurierv1.NewMailboxServiceClient(dial(t, ts.addr, court, ts.trust))
	acknowledge := func(der []byte) error {
		_, err := courtBox.Acknowledge(ctx, &kurierv1.AcknowledgeRequest{Evidence: der})
		return err
	}
	reject := func(der []byte) error {
		_, err := courtBox.Reject(ctx, &kurierv1.RejectRequest{Evidence: der})
		return err
	}

	calls := map[string]func() error{
		"Lookup address": func() error {
			_, err := dir.Lookup(ctx, &kurierv1.LookupRequest{Address: long + "@stadt.example"})
			return err
		},
		"Lookup local part": func() error {
			_, err := dir.Lookup(ctx, &kurierv1.LookupRequest{Address: long[:300] + "@stadt.example"})
			return err
		},
		"Search query": func() error {
			_, err := dir.Search(ctx, &kurierv1.SearchRequest{Query: long})
			return err
		},
		"ListInbox page token": func() error {
			_, err := mailbox.ListInbox(ctx, &kurierv1.ListInboxRequest{PageToken: long})
			return err
		},
		"Acknowledge evidence": func() error {
			_, err := mailbox.Acknowledge(ctx, &kurierv1.AcknowledgeRequest{Evidence: []byte(long)})
			return err
		},
		"Submit envelope key": func() error {
			stream, err := mailbox.Submit(ctx)
			if err != nil {
				return err
			}
			env := []byte(`{"` + long[:200<<10] + `":1}`)
			stream.Send(&kurierv1.SubmitRequest{Part: &kurierv1.SubmitRequest_Envelope{Envelope: &kurierv1.SignedEnvelope{Envelope: env, Signature: signed.Signature}}})
			_, err = stream.CloseAndRecv()
			return err
		},
		"Relay recipient": func() error {
			stream, err := relay.Relay(ctx)
			if err != nil {
				return err
			}
			stream.Send(&kurierv1.RelayRequest{Part: &kurierv1.RelayRequest_Header{Header: &kurierv1.RelayHeader{
				Envelope:   signed,
				Recipients: []*kurierv1.RelayRecipient{{Address: long}},
			}}})
			_, err = stream.CloseAndRecv()
			return err
		},
		// The recipient's own statements, signed, with one field long:
		// refused when the statement is read, quoting at most its start.
		"Acknowledge time": func() error {
			return acknowledge(statementField("time", long[:7000]))
		},
		"Reject time": func() error {
			return reject(statementField("time", long[:7000]))
		},
		"Acknowledge type": func() error {
			return acknowledge(statementField("type", long[:7000]))
		},
		"Reject sender": func() error {
			return reject(statementField("sender", long[:7000]))
		},
		"Reject recipient": func() error {
			return reject(statementField("recipient", long[:7000]+"@amtsgericht.example"))
		},
		"Acknowledge issuer": func() error {
			return acknowledge(statementField("issuer", long[:7000]))
		},
		"PushEvidence log": func() error {
			_, err := relay.PushEvidence(ctx, &kurierv1.PushEvidenceRequest{Evidence: &kurierv1.Evidence{Der: []byte("x"), Log: long, Type: long[:1000], Recipient: long[:1000]}})
			return err
		},
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			err := call()
			msg := status.Convert(err).Message()
			if err == nil || len(msg) > 400 || strings.Contains(msg, long[:81]) {
				t.Fatalf("%s: %s with %d bytes of message, want a refusal quoting at most its beginning: %.300q", name, status.Code(err), len(msg), msg)
			}
		})
	}
}

// reflectionRunning opens a reflection stream over conn and has it answer
// once, so that its handler runs, now waiting for the next request.
func reflectionRunning(ctx context.Context, t *testing.T, conn grpc.ClientConnInterface) reflectionpb.ServerReflection_ServerReflectionInfoClient {
	t.Helper()
	refl, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := refl.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	if _, err := refl.Recv(); err != nil {
		t.Fatal(err)
	}
	return refl
}
