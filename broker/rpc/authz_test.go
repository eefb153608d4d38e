package rpc_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"

	"kurier.dev/kurier/broker/rpc"
	"kurier.dev/kurier/envelope"
	"kurier.dev/kurier/evidence"
	"kurier.dev/kurier/pki"
	"kurier.dev/kurier/pki/cms"
	"kurier.dev/kurier/pki/pkitest"
	kurierv1 "kurier.dev/kurier/proto/kurier/v1"
)

// Short names for the codes in the matrix.
const (
	OK       = codes.OK
	Invalid  = codes.InvalidArgument
	NotFound = codes.NotFound
	Denied   = codes.PermissionDenied
)

// allowed is what the callers with a certificate the node accepts get:
// the message's recipient (own), another participant of the same node
// (other), the node's own certificate (node) and the node of another
// domain (peer). Invalid or NotFound for a harmless request means the call
// got past authorization.
type allowed struct{ own, other, node, peer codes.Code }

// authzRow is one RPC of the matrix: the frames it sends and what each
// caller gets.
type authzRow struct {
	req  func(f *authzFixture) []proto.Message
	want allowed
	// endless streams (Subscribe, Watch) count as accepted once the node
	// has sent their headers.
	endless bool
}

func one(m proto.Message) func(*authzFixture) []proto.Message {
	return func(*authzFixture) []proto.Message { return []proto.Message{m} }
}

// authzMatrix lists every RPC the node serves. TestAuthz_Matrix derives the
// RPCs from the server's registered service descriptors, so a new RPC
// fails the test until it has a row here.
var authzMatrix = map[string]authzRow{
	//                                                                                 own    other     node    peer
	"/kurier.v1.MailboxService/Submit":    {req: func(f *authzFixture) []proto.Message { return f.submit }, want: allowed{OK, Denied, Denied, Denied}},
	"/kurier.v1.MailboxService/ListInbox": {req: one(&kurierv1.ListInboxRequest{}), want: allowed{OK, OK, Denied, Denied}},
	"/kurier.v1.MailboxService/ListSent":  {req: one(&kurierv1.ListSentRequest{}), want: allowed{OK, OK, Denied, Denied}},
	"/kurier.v1.MailboxService/Subscribe": {req: one(&kurierv1.SubscribeRequest{}), want: allowed{OK, OK, Denied, Denied}, endless: true},
	"/kurier.v1.MailboxService/Fetch":     {req: func(f *authzFixture) []proto.Message { return []proto.Message{&kurierv1.FetchRequest{MessageId: f.id}} }, want: allowed{OK, NotFound, Denied, Denied}},
	"/kurier.v1.MailboxService/Acknowledge": {req: func(f *authzFixture) []proto.Message {
		return []proto.Message{&kurierv1.AcknowledgeRequest{Evidence: f.ack}}
	}, want: allowed{OK, Denied, Denied, Denied}},
	"/kurier.v1.MailboxService/Reject": {req: func(f *authzFixture) []proto.Message {
		return []proto.Message{&kurierv1.RejectRequest{Evidence: f.reject}}
	}, want: allowed{OK, Denied, Denied, Denied}},
	"/kurier.v1.MailboxService/GetEvidence": {req: func(f *authzFixture) []proto.Message {
		return []proto.Message{&kurierv1.GetEvidenceRequest{MessageId: f.id}}
	}, want: allowed{OK, NotFound, Denied, Denied}},
	"/kurier.v1.MailboxService/ExportMessage": {req: func(f *authzFixture) []proto.Message {
		return []proto.Message{&kurierv1.ExportMessageRequest{MessageId: f.id}}
	}, want: allowed{OK, NotFound, Denied, Denied}},

	"/kurier.v1.DirectoryService/Lookup": {req: one(&kurierv1.LookupRequest{Address: pkitest.Court}), want: allowed{OK, OK, OK, OK}},
	"/kurier.v1.DirectoryService/Search": {req: one(&kurierv1.SearchRequest{Query: "stadt"}), want: allowed{OK, OK, OK, OK}},
	"/kurier.v1.DirectoryService/GetCRL": {req: one(&kurierv1.GetCRLRequest{}), want: allowed{OK, OK, OK, OK}},

	"/kurier.v1.LogService/GetCheckpoint":       {req: one(&kurierv1.GetCheckpointRequest{}), want: allowed{OK, OK, OK, OK}},
	"/kurier.v1.LogService/GetInclusionProof":   {req: one(&kurierv1.GetInclusionProofRequest{LeafIndex: 0}), want: allowed{OK, OK, OK, OK}},
	"/kurier.v1.LogService/GetConsistencyProof": {req: one(&kurierv1.GetConsistencyProofRequest{FromSize: 1}), want: allowed{OK, OK, OK, OK}},

	// Nodes only; the empty frames are refused after authorization.
	"/kurier.v1.RelayService/Relay":        {req: one(&kurierv1.RelayRequest{}), want: allowed{Denied, Denied, Invalid, Invalid}},
	"/kurier.v1.RelayService/PushEvidence": {req: one(&kurierv1.PushEvidenceRequest{}), want: allowed{Denied, Denied, Invalid, Invalid}},

	"/grpc.health.v1.Health/Check": {req: one(&healthpb.HealthCheckRequest{}), want: allowed{OK, OK, OK, OK}},
	"/grpc.health.v1.Health/List":  {req: one(&healthpb.HealthListRequest{}), want: allowed{OK, OK, OK, OK}},
	"/grpc.health.v1.Health/Watch": {req: one(&healthpb.HealthCheckRequest{}), want: allowed{OK, OK, OK, OK}, endless: true},

	"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo":      {req: one(listServices), want: allowed{OK, OK, OK, OK}},
	"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": {req: one(listServices), want: allowed{OK, OK, OK, OK}},
}

// listServices is a reflection request; v1alpha has the same wire form.
var listServices = &reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}

// refusedEverywhere is what the callers the node does not accept get from
// every RPC alike: the handshake refuses a certificate that is revoked,
// expired or of another CA, and a caller without one (the client sees the
// connection fail, Unavailable); a certificate revoked after its
// connection was made is refused on that connection at the next call.
var refusedEverywhere = map[string]codes.Code{
	"revoked":           codes.Unavailable,
	"expired":           codes.Unavailable,
	"other CA":          codes.Unavailable,
	"no certificate":    codes.Unavailable,
	"revoked meanwhile": codes.Unauthenticated,
}

// authzFixture is the state the matrix's requests refer to: a message from
// the agency to the court, fetched by the court, and the court's signed
// acknowledgement of it.
type authzFixture struct {
	id     string
	ack    []byte          // the court's Acknowledgement of id
	reject []byte          // the court's Rejection of another message
	submit []proto.Message // a submission from the court to the agency
}

// TestAuthz_Matrix calls every RPC of every service the node serves with
// every kind of certificate and checks the exact status code.
func TestAuthz_Matrix(t *testing.T) {
	ts := startTestServer(t, rpc.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	f := newAuthzFixture(t, ts)

	peerNode, err := fx.CA.IssueNode(filepath.Join(t.TempDir(), "peer"), []string{"landgericht.example"})
	if err != nil {
		t.Fatal(err)
	}
	dialTLS := func(cfg *tls.Config) *grpc.ClientConn {
		conn, err := grpc.NewClient(ts.addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	callers := map[string]*grpc.ClientConn{
		"own":            dial(t, ts.addr, fx.IDs[pkitest.Court], ts.trust),
		"other":          dial(t, ts.addr, fx.IDs[pkitest.Other], ts.trust),
		"node":           dial(t, ts.addr, fx.Node, ts.trust),
		"peer":           dial(t, ts.addr, peerNode, ts.trust),
		"revoked":        dial(t, ts.addr, fx.Revoked, ts.trust),
		"expired":        dial(t, ts.addr, expiredLike(t, fx.IDs[pkitest.Other]), ts.trust),
		"other CA":       dial(t, ts.addr, fx.Foreign, ts.trust),
		"no certificate": dialTLS(pki.ClientTLS(nil, ts.trust, "stadt.example")),
	}
	// Connected first, revoked then.
	meanwhile := freshParticipant(t, pkitest.Other)
	callers["revoked meanwhile"] = dial(t, ts.addr, meanwhile, ts.trust)
	if _, err := healthpb.NewHealthClient(callers["revoked meanwhile"]).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("before revocation: %v", err)
	}
	ts.revoke(t, meanwhile.Cert.SerialNumber)

	methods := servedMethods(ts.srv)
	for name := range authzMatrix {
		if _, ok := methods[name]; !ok {
			t.Errorf("the matrix has a row for %s, which the node does not serve", name)
		}
	}
	for _, name := range slices.Sorted(mapsKeys(methods)) {
		info := methods[name]
		row, ok := authzMatrix[name]
		if !ok {
			t.Errorf("%s has no row in authzMatrix: add what each caller may do", name)
			continue
		}
		want := map[string]codes.Code{"own": row.want.own, "other": row.want.other, "node": row.want.node, "peer": row.want.peer}
		for who, code := range refusedEverywhere {
			want[who] = code
		}
		for _, who := range slices.Sorted(mapsKeys(want)) {
			got, msg := invoke(ctx, callers[who], name, info, row.endless, row.req(f))
			if got != want[who] {
				t.Errorf("%s by %s: %s (%q), want %s", name, who, got, msg, want[who])
			}
		}
	}
}

// newAuthzFixture stores the matrix's messages: the agency sends two to
// the court, which fetches both; the court's acknowledgement of the one
// and rejection of the other are signed but not sent.
func newAuthzFixture(t *testing.T, ts *testServer) *authzFixture {
	t.Helper()
	id, ack := answered(t, ts, evidence.Acknowledgement, "")
	_, reject := answered(t, ts, evidence.Rejection, "cannot-open")
	sub, subPayload := signedSubmit(t, pkitest.Court, fx.IDs[pkitest.Court], pkitest.Agency, 1000)
	return &authzFixture{
		id:     id,
		ack:    ack,
		reject: reject,
		submit: []proto.Message{sub, &kurierv1.SubmitRequest{Part: &kurierv1.SubmitRequest_Chunk{Chunk: subPayload}}},
	}
}

// answered stores a message from the agency to the court, has the court
// fetch it, and returns its id and the court's answer of type typ, signed
// but not sent.
func answered(t *testing.T, ts *testServer, typ evidence.Type, reason string) (string, []byte) {
	t.Helper()
	ctx := context.Background()
	first, payload := signedSubmit(t, pkitest.Agency, fx.IDs[pkitest.Agency], pkitest.Court, 1000)
	signed := first.GetEnvelope()
	r, err := ts.node.Submit(ctx, participantPeer(pkitest.Agency), signed.Envelope, signed.Signature, bytes.NewReader(payload))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, rc, err := ts.node.Fetch(ctx, participantPeer(pkitest.Court), r.MessageID); err != nil {
		t.Fatal(err)
	} else {
		rc.Close()
	}
	ret, err := ts.node.Retrieved(ctx, participantPeer(pkitest.Court), r.MessageID)
	if err != nil {
		t.Fatal(err)
	}
	env, err := envelope.Parse(signed.Envelope)
	if err != nil {
		t.Fatal(err)
	}
	st := &evidence.Statement{
		Version: evidence.StatementVersion, Type: typ, MessageID: r.MessageID,
		EnvelopeSHA256: envelope.Digest(signed.Envelope), PayloadSHA256: env.PayloadSHA256,
		Sender: pkitest.Agency, Recipient: pkitest.Court, Issuer: pkitest.Court,
		Time: time.Now().UTC(), PreviousSHA256: evidence.Digest(ret.DER), Reason: reason,
	}
	b, err := st.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	der, err := cms.Sign(b, pkitest.Signer(fx.IDs[pkitest.Court]))
	if err != nil {
		t.Fatal(err)
	}
	return r.MessageID, der
}

func participantPeer(addr string) pki.Peer { return pki.Peer{Kind: pki.KindParticipant, Address: addr} }

// servedMethods lists every method the server serves by full name, from
// the service descriptors registered with it.
func servedMethods(srv *rpc.Server) map[string]grpc.MethodInfo {
	out := map[string]grpc.MethodInfo{}
	for svc, info := range srv.GetServiceInfo() {
		for _, m := range info.Methods {
			out["/"+svc+"/"+m.Name] = m
		}
	}
	return out
}

func mapsKeys[V any](m map[string]V) func(yield func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// invoke calls method on conn with the frames msgs, whatever its kind,
// and returns the status code it ends with and its message.
func invoke(ctx context.Context, conn *grpc.ClientConn, method string, info grpc.MethodInfo, endless bool, msgs []proto.Message) (codes.Code, string) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	result := func(err error) (codes.Code, string) { return status.Code(err), status.Convert(err).Message() }
	if !info.IsClientStream && !info.IsServerStream {
		return result(conn.Invoke(ctx, method, msgs[0], new(emptypb.Empty)))
	}
	stream, err := conn.NewStream(ctx, &grpc.StreamDesc{ClientStreams: info.IsClientStream, ServerStreams: info.IsServerStream}, method)
	if err != nil {
		return result(err)
	}
	for _, m := range msgs {
		if stream.SendMsg(m) != nil {
			break // the server answered early; RecvMsg has its status
		}
	}
	stream.CloseSend()
	if endless {
		if md, _ := stream.Header(); md != nil {
			return codes.OK, ""
		}
	}
	for {
		err := stream.RecvMsg(new(emptypb.Empty))
		if err == io.EOF {
			return codes.OK, ""
		}
		if err != nil {
			return result(err)
		}
	}
}
