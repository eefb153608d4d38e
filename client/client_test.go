package client_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"kurier.dev/kurier/broker/daemon"
	"kurier.dev/kurier/broker/daemon/daemontest"
	"kurier.dev/kurier/broker/diskspace/diskspacetest"
	"kurier.dev/kurier/client"
	"kurier.dev/kurier/envelope"
	"kurier.dev/kurier/evidence"
	"kurier.dev/kurier/internal/logbuf"
	"kurier.dev/kurier/pki"
	"kurier.dev/kurier/pki/ca"
)

// The node every test in this package talks to: the development setup of
// kurierd, in process, over real mutual TLS and a real badger store.
var (
	devNode  *daemontest.Node
	devDir   string
	nodeAddr string
	crlPath  string
	agency   *pki.Identity // poststelle@stadt.example
	court    *pki.Identity // eingang@amtsgericht.example
)

func TestMain(m *testing.M) {
	daemontest.Main(m, func(n *daemontest.Node) error {
		devNode, devDir, nodeAddr, crlPath, agency, court = n, n.Dir, n.Addr, n.CRL, n.Agency, n.Court
		return nil
	})
}

func dial(t *testing.T, id *pki.Identity) *client.Client {
	t.Helper()
	c, err := client.Dial(context.Background(), nodeAddr, id, client.WithCRL(crlPath))
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

var (
	malloryOnce sync.Once
	mallory     *pki.Identity
	malloryErr  error
)

// malloryID returns a participant with a valid certificate of the same CA
// that is not in the node's directory.
func malloryID(t *testing.T) *pki.Identity {
	t.Helper()
	malloryOnce.Do(func() {
		authority, err := ca.Open(filepath.Join(devDir, "ca"))
		if err != nil {
			malloryErr = err
			return
		}
		mallory, malloryErr = authority.IssueParticipant(filepath.Join(devDir, "identities", "mallory"), "mallory@stadt.example")
	})
	if malloryErr != nil {
		t.Fatalf("issue mallory: %v", malloryErr)
	}
	return mallory
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func types(evs []client.Evidence) []evidence.Type {
	var out []evidence.Type
	for _, ev := range evs {
		out = append(out, ev.Type())
	}
	return out
}

func send(t *testing.T, c *client.Client, docs ...client.Document) string {
	t.Helper()
	r, err := c.Send(ctxT(t), client.Message{To: []string{daemon.DevCourt}, Subject: "Test " + t.Name(), Documents: docs}, nil)
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	return r.MessageID
}

func inboxIDs(t *testing.T, c *client.Client) []string {
	t.Helper()
	entries, err := c.Inbox(ctxT(t))
	if err != nil {
		t.Fatalf("Inbox: %v", err)
	}
	var ids []string
	for _, e := range entries {
		ids = append(ids, e.ID)
	}
	return ids
}

func TestClient_Flow(t *testing.T) {
	ctx := ctxT(t)
	ag, ct := dial(t, agency), dial(t, court)
	if ag.Address() != daemon.DevAgency || ct.Address() != daemon.DevCourt {
		t.Fatalf("addresses %s, %s", ag.Address(), ct.Address())
	}

	docs := []client.Document{
		{Name: "Klageerwiderung vom 23.11.pdf", Data: randomBytes(t, 700<<10)}, // several chunks
		{Name: "Anlage K1 – Übersicht.txt", Data: []byte("Anlage K1\n")},
		{Name: "leer.txt", Data: nil},
	}
	var lastSent, lastTotal int64
	calls := 0
	r, err := ag.Send(ctx, client.Message{
		To: []string{daemon.DevCourt}, Subject: "Klageerwiderung", Type: "Schriftsatz", Reference: "3 C 123/26",
		Documents: docs,
	}, func(sent, total int64) { calls++; lastSent, lastTotal = sent, total })
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	id := r.MessageID
	if calls < 3 || lastSent != lastTotal || lastTotal < 700<<10 {
		t.Errorf("progress: %d calls, last %d/%d", calls, lastSent, lastTotal)
	}
	if diff := cmp.Diff([]evidence.Type{evidence.SubmissionAcceptance, evidence.Delivery}, types(r.Evidence)); diff != "" {
		t.Errorf("receipt evidence (-want +got):\n%s", diff)
	}

	t.Run("inbox", func(t *testing.T) {
		entries, err := ct.Inbox(ctx)
		if err != nil {
			t.Fatalf("Inbox: %v", err)
		}
		i := slices.IndexFunc(entries, func(e client.InboxEntry) bool { return e.ID == id })
		if i < 0 {
			t.Fatalf("message %s not in the court's inbox", id)
		}
		e := entries[i]
		want := client.InboxEntry{ID: id, From: daemon.DevAgency, Subject: "Klageerwiderung", Type: "Schriftsatz", Reference: "3 C 123/26", State: "delivered", Received: e.Received, Size: e.Size}
		if diff := cmp.Diff(want, e); diff != "" {
			t.Errorf("entry (-want +got):\n%s", diff)
		}
		if e.Received.IsZero() || e.Size <= 700<<10 {
			t.Errorf("received %v, size %d", e.Received, e.Size)
		}
		if slices.Contains(inboxIDs(t, ag), id) {
			t.Errorf("message %s is in the sender's inbox", id)
		}
	})

	t.Run("others cannot fetch", func(t *testing.T) {
		_, err := ag.Fetch(ctx, id, t.TempDir())
		if status.Code(err) != codes.NotFound {
			t.Errorf("agency fetching the court's message: %v, want NotFound", err)
		}
	})

	t.Run("acknowledge before fetch", func(t *testing.T) {
		for name, f := range map[string]*client.Fetched{"nothing": nil, "a Fetched built by hand": {MessageID: id}} {
			_, err := ct.Acknowledge(ctx, f)
			if err == nil || !strings.Contains(err.Error(), "only a message fetched, opened and verified by this client can be acknowledged") {
				t.Errorf("Acknowledge of %s: %v", name, err)
			}
		}
	})

	var fetched *client.Fetched
	t.Run("fetch", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "eingang", "4 C 12-26") // made by Fetch
		f, err := ct.Fetch(ctx, id, dir)
		fetched = f
		if err != nil {
			t.Fatalf("Fetch: %v", err)
		}
		var want []string
		for i, d := range docs {
			want = append(want, filepath.Join(dir, d.Name))
			got, err := os.ReadFile(f.Files[i])
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, d.Data) {
				t.Errorf("%s differs from what was sent", d.Name)
			}
		}
		if diff := cmp.Diff(want, f.Files); diff != "" {
			t.Errorf("files (-want +got):\n%s", diff)
		}
		if names := dirNames(t, dir); len(names) != len(docs) {
			t.Errorf("dir holds %q, want only the documents", names)
		}
		if f.Retrieval.Type() != evidence.Retrieval || f.Envelope.From != daemon.DevAgency || f.Signer.EmailAddresses[0] != daemon.DevAgency {
			t.Errorf("fetched: retrieval %s, from %s", f.Retrieval.Type(), f.Envelope.From)
		}
	})

	t.Run("acknowledge", func(t *testing.T) {
		if fetched == nil {
			t.Skip("nothing fetched")
		}
		if _, err := ag.Acknowledge(ctx, fetched); err == nil || !strings.Contains(err.Error(), "opened for "+daemon.DevCourt) {
			t.Errorf("the sender acknowledging the court's fetch: %v", err)
		}
		ack, err := ct.Acknowledge(ctx, fetched)
		if err != nil {
			t.Fatalf("Acknowledge: %v", err)
		}
		if ack.Type() != evidence.Acknowledgement || ack.Statement.Issuer != daemon.DevCourt {
			t.Errorf("ack: %s by %s", ack.Type(), ack.Statement.Issuer)
		}
		if ack.Statement.PreviousSHA256 != fetched.Retrieval.Digest() || ack.Statement.PayloadSHA256 != fetched.Envelope.PayloadSHA256 {
			t.Errorf("ack does not name the fetched Retrieval and payload")
		}
		again, err := ct.Acknowledge(ctx, fetched)
		if err != nil {
			t.Fatalf("Acknowledge again: %v", err)
		}
		if !bytes.Equal(again.DER, ack.DER) {
			t.Error("a second Acknowledge made another acknowledgement")
		}
	})

	t.Run("evidence", func(t *testing.T) {
		want := []evidence.Type{evidence.SubmissionAcceptance, evidence.Delivery, evidence.Retrieval, evidence.Acknowledgement}
		for name, c := range map[string]*client.Client{"court": ct, "agency": ag} {
			evs, err := c.Evidence(ctx, id)
			if err != nil {
				t.Fatalf("%s: Evidence: %v", name, err)
			}
			if diff := cmp.Diff(want, types(evs)); diff != "" {
				t.Errorf("%s: evidence (-want +got):\n%s", name, diff)
			}
		}
	})

	t.Run("fetch again", func(t *testing.T) {
		f, err := ct.Fetch(ctx, id, t.TempDir())
		if err != nil {
			t.Fatalf("Fetch: %v", err)
		}
		if f.Retrieval.Type() != evidence.Acknowledgement {
			t.Errorf("evidence of a second fetch: %s", f.Retrieval.Type())
		}
	})
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestClient_FetchTargetExists(t *testing.T) {
	ctx := ctxT(t)
	ag, ct := dial(t, agency), dial(t, court)
	id := send(t, ag, client.Document{Name: "a.txt", Data: []byte("from the agency")}, client.Document{Name: "b.txt", Data: []byte("b")})
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "a.txt"), []byte("mine"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ct.Fetch(ctx, id, dir); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("Fetch over an existing file: %v", err)
	}
	if diff := cmp.Diff([]string{"a.txt"}, dirNames(t, dir)); diff != "" {
		t.Errorf("dir after refused fetch (-want +got):\n%s", diff)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "a.txt")); string(b) != "mine" {
		t.Errorf("a.txt was changed to %q", b)
	}
}

// TestFault_FetchDiskFull: a recipient whose own disk fills while the
// documents of a valid message are written gets a *WriteError that says
// so, not an *OpenError (which would tell it to refuse the message as one
// that cannot be opened); nothing is left in the folder, and once there is
// room the same message fetches and opens.
func TestFault_FetchDiskFull(t *testing.T) {
	ctx := ctxT(t)
	ag, ct := dial(t, agency), dial(t, court)
	// The sealed payload (a little larger than the document) fits in the
	// tmpfs, the document beside it does not.
	const size = 1 << 20
	doc := client.Document{Name: "akte.bin", Data: randomBytes(t, 600<<10)}
	id := send(t, ag, doc)
	full := diskspacetest.Tmpfs(t, "", size)

	_, err := ct.Fetch(ctx, id, full)
	var we *client.WriteError
	if !errors.As(err, &we) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Fetch into a full folder: %v, want a *WriteError for ENOSPC", err)
	}
	if errors.As(err, new(*client.OpenError)) {
		t.Errorf("Fetch into a full folder: %v is an *OpenError", err)
	}
	if want := "fetch " + id + ": write the documents into " + full + ":"; !strings.HasPrefix(err.Error(), want) {
		t.Errorf("Fetch error %q, want it to start %q", err, want)
	}
	if names := dirNames(t, full); len(names) != 0 {
		t.Errorf("a failed fetch left %q", names)
	}

	f, err := ct.Fetch(ctx, id, t.TempDir())
	if err != nil {
		t.Fatalf("Fetch again with room: %v", err)
	}
	if b, _ := os.ReadFile(f.Files[0]); !bytes.Equal(b, doc.Data) {
		t.Errorf("fetched %d bytes, want the %d sent", len(b), len(doc.Data))
	}
}

// TestHostile_SendRefused refuses, before anything is sealed or sent, text
// that would show a person something else than it says.
func TestHostile_SendRefused(t *testing.T) {
	ag := dial(t, agency)
	doc := []client.Document{{Name: "a.txt", Data: []byte("a")}}
	for name, tt := range map[string]struct {
		msg  client.Message
		want string
	}{
		"bidi override in a file name": {client.Message{To: []string{daemon.DevCourt}, Subject: "s", Documents: []client.Document{
			{Name: "rechnung\u202efdp.exe", Data: []byte("x")}}}, "U+202E, a bidirectional control character"},
		"C1 control in the subject": {client.Message{To: []string{daemon.DevCourt}, Subject: "Mahnung\u009b2J", Documents: doc}, "subject contains U+009B"},
		"isolate in the reference":  {client.Message{To: []string{daemon.DevCourt}, Subject: "s", Reference: "4 C\u2067 12/26", Documents: doc}, "reference contains U+2067"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := ag.Send(ctxT(t), tt.msg, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Send: %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestClient_SendErrors(t *testing.T) {
	ag := dial(t, agency)
	doc := []client.Document{{Name: "a.txt", Data: []byte("a")}}
	tests := map[string]struct {
		msg  client.Message
		want string
	}{
		"unknown recipient": {client.Message{To: []string{"niemand@amtsgericht.example"}, Subject: "s", Documents: doc}, "no mailbox niemand@amtsgericht.example"},
		"no recipient":      {client.Message{Subject: "s", Documents: doc}, "no recipient"},
		"bad recipient":     {client.Message{To: []string{"Eingang@amtsgericht.example"}, Subject: "s", Documents: doc}, "invalid address"},
		"recipient twice":   {client.Message{To: []string{daemon.DevCourt, daemon.DevCourt}, Subject: "s", Documents: doc}, "named twice"},
		"no subject":        {client.Message{To: []string{daemon.DevCourt}, Subject: " ", Documents: doc}, "no subject"},
		"no documents":      {client.Message{To: []string{daemon.DevCourt}, Subject: "s"}, "no documents"},
		"path in name":      {client.Message{To: []string{daemon.DevCourt}, Subject: "s", Documents: []client.Document{{Name: "../x", Data: nil}}}, "path separator"},
		"duplicate name": {client.Message{To: []string{daemon.DevCourt}, Subject: "s", Documents: []client.Document{
			{Name: "a.txt"}, {Name: "a.txt"}}}, `two documents are named "a.txt"`},
		"negative expiry": {client.Message{To: []string{daemon.DevCourt}, Subject: "s", Documents: doc, Expires: -time.Hour}, "expires is negative"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := ag.Send(ctxT(t), tt.msg, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Send: %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestClient_SealExpiry(t *testing.T) {
	// A clock in another zone: the envelope's times are written in UTC.
	now := time.Now().In(time.FixedZone("CET", 3600)).Truncate(time.Second)
	c, err := client.Dial(context.Background(), nodeAddr, agency, client.WithCRL(crlPath), client.WithClock(func() time.Time { return now }))
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	tests := map[string]struct {
		expires time.Duration
		want    time.Duration
	}{
		"default":  {0, client.DefaultExpiry},
		"36 hours": {36 * time.Hour, 36 * time.Hour},
		"a second": {time.Second, time.Second},
		"90 days":  {90 * 24 * time.Hour, 90 * 24 * time.Hour},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			s, err := c.Seal(ctxT(t), client.Message{To: []string{daemon.DevCourt}, Subject: "expiry", Expires: tt.expires,
				Documents: []client.Document{{Name: "a.txt", Data: []byte("a")}}})
			if err != nil {
				t.Fatalf("Seal: %v", err)
			}
			b := s.Envelope
			env, err := envelope.Parse(b)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if env.Version != envelope.Version {
				t.Errorf("version %d, want %d", env.Version, envelope.Version)
			}
			if !env.Created.Equal(now) || env.Expires.Sub(env.Created) != tt.want {
				t.Errorf("created %v, expires %v; want %v and %s later", env.Created, env.Expires, now, tt.want)
			}
			wantBytes := `"created":"` + now.UTC().Format(time.RFC3339Nano) + `","expires":"` + now.UTC().Add(tt.want).Format(time.RFC3339Nano) + `"`
			if !bytes.Contains(b, []byte(wantBytes)) {
				t.Errorf("envelope %s does not contain %s", b, wantBytes)
			}
		})
	}
	t.Run("the node accepts it", func(t *testing.T) {
		r, err := c.Send(ctxT(t), client.Message{To: []string{daemon.DevCourt}, Subject: "expiry", Expires: 36 * time.Hour,
			Documents: []client.Document{{Name: "a.txt", Data: []byte("a")}}}, nil)
		if err != nil {
			t.Fatalf("Send: %v", err)
		}
		f, err := dial(t, court).Fetch(ctxT(t), r.MessageID, t.TempDir())
		if err != nil {
			t.Fatalf("Fetch: %v", err)
		}
		if f.Envelope.Version != envelope.Version || f.Envelope.Expires.Sub(f.Envelope.Created) != 36*time.Hour {
			t.Errorf("fetched envelope: version %d, created %v, expires %v", f.Envelope.Version, f.Envelope.Created, f.Envelope.Expires)
		}
	})
}

func TestClient_SubmitTwice(t *testing.T) {
	ctx := ctxT(t)
	ag, ct := dial(t, agency), dial(t, court)
	s, err := ag.Seal(ctx, client.Message{To: []string{daemon.DevCourt}, Subject: "twice", Documents: []client.Document{{Name: "a.txt", Data: randomBytes(t, 300<<10)}}})
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	first, err := ag.Submit(ctx, s, nil)
	if err != nil {
		t.Fatalf("Submit: %v", err)
	}
	second, err := ag.Submit(ctx, s, nil)
	if err != nil {
		t.Fatalf("Submit again: %v", err)
	}
	if first.MessageID != second.MessageID || len(first.Evidence) != len(second.Evidence) {
		t.Fatalf("receipts differ: %d vs %d evidence", len(first.Evidence), len(second.Evidence))
	}
	for i := range first.Evidence {
		if !bytes.Equal(first.Evidence[i].DER, second.Evidence[i].DER) {
			t.Errorf("evidence %d differs between the submissions", i+1)
		}
	}
	evs, err := ct.Evidence(ctx, first.MessageID)
	if err != nil {
		t.Fatalf("Evidence: %v", err)
	}
	if diff := cmp.Diff([]evidence.Type{evidence.SubmissionAcceptance, evidence.Delivery}, types(evs)); diff != "" {
		t.Errorf("stored evidence (-want +got):\n%s", diff)
	}
	n := 0
	for _, id := range inboxIDs(t, ct) {
		if id == first.MessageID {
			n++
		}
	}
	if n != 1 {
		t.Errorf("message listed %d times in the inbox", n)
	}

	t.Run("same id, other content", func(t *testing.T) {
		other, err := ag.Reseal(s, "another subject")
		if err != nil {
			t.Fatal(err)
		}
		_, err = ag.Submit(ctx, other, nil)
		var rej *client.RejectedError
		if !errors.As(err, &rej) {
			t.Fatalf("Submit of another message under a used id: %v, want a *RejectedError", err)
		}
		if rej.Code != codes.AlreadyExists || status.Code(err) != codes.AlreadyExists {
			t.Errorf("code %s", rej.Code)
		}
		if rej.Evidence == nil || rej.Evidence.Type() != evidence.SubmissionRejection || rej.Evidence.Statement.Reason == "" {
			t.Errorf("rejection evidence %+v", rej.Evidence)
		}
	})
}

// TestClient_Subscribe: once the subscription is ready, the next message
// sent is announced, without a race between subscribing and sending.
func TestClient_Subscribe(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ag, ct := dial(t, agency), dial(t, court)

	notices := make(chan client.InboxEntry, 16)
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- ct.Subscribe(ctx, func(e client.InboxEntry) error { notices <- e; return nil }, client.OnReady(func() error { close(ready); return nil }))
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("Subscribe ended before it was ready: %v", err)
	}
	r, err := ag.Send(ctx, client.Message{To: []string{daemon.DevCourt}, Subject: "notice", Documents: []client.Document{{Name: "a.txt", Data: []byte("a")}}}, nil)
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	for {
		select {
		case e := <-notices:
			if e.ID != r.MessageID {
				continue // a message another test sent meanwhile
			}
			if e.From != daemon.DevAgency || e.Subject != "notice" || e.State != "delivered" {
				t.Errorf("notice %+v", e)
			}
			cancel()
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Errorf("Subscribe after cancel: %v", err)
			}
			return
		case err := <-done:
			t.Fatalf("Subscribe ended before the notice: %v", err)
		case <-ctx.Done():
			t.Fatal("no notice of the message sent once the subscription was ready")
		}
	}
}

func TestClient_SubscribeEndsWithContext(t *testing.T) {
	ct := dial(t, court)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ct.Subscribe(ctx, func(client.InboxEntry) error { return nil }) }()
	time.Sleep(100 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Subscribe after cancel: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Subscribe did not return after cancel")
	}
}

func TestDial(t *testing.T) {
	if _, err := client.Dial(context.Background(), nodeAddr, nil); err == nil {
		t.Error("Dial without identity succeeded")
	}
	node, err := pki.LoadIdentity(filepath.Join(devDir, "node"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Dial(context.Background(), nodeAddr, node); err == nil || !strings.Contains(err.Error(), "participant") {
		t.Errorf("Dial with a node identity: %v", err)
	}
	if _, err := client.Dial(context.Background(), nodeAddr, agency, client.WithCRL(filepath.Join(devDir, "missing.pem"))); err == nil {
		t.Error("Dial with a missing CRL succeeded")
	}
}

// retryMaxWait is the longest a retry may oversleep its budget: none, since
// it does not start a wait that would end past it; room for scheduling.
const retryMaxWait = 500 * time.Millisecond

func TestClient_SubmitRetriesUnavailable(t *testing.T) {
	ctx := ctxT(t)
	ag := dial(t, agency)
	s, err := ag.Seal(ctx, client.Message{To: []string{daemon.DevCourt}, Subject: "retry", Documents: []client.Document{{Name: "a.txt", Data: []byte("a")}}})
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	// A port where nothing listens: every attempt fails with Unavailable.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := lis.Addr().String()
	lis.Close()
	var logs logbuf.Buffer
	down, err := client.Dial(ctx, dead, agency, client.WithCRL(crlPath), client.WithRetry(1500*time.Millisecond),
		client.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	if err != nil {
		t.Fatal(err)
	}
	defer down.Close()
	start := time.Now()
	_, err = down.Submit(ctx, s, nil)
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("Submit to a dead node: %v, want Unavailable", err)
	}
	if n := strings.Count(logs.String(), "trying again"); n < 3 {
		t.Errorf("%d retries logged, want at least 3 within the retry time:\n%s", n, logs.String())
	}
	if d := time.Since(start); d < 700*time.Millisecond || d > 1500*time.Millisecond+retryMaxWait {
		t.Errorf("gave up after %v, want after about the 1.5 s it was given", d)
	}
	// The same sealed message, once the node is reachable, goes through.
	r, err := ag.Submit(ctx, s, nil)
	if err != nil {
		t.Fatalf("Submit to the live node: %v", err)
	}
	if len(r.Evidence) != 2 {
		t.Errorf("receipt with %d evidence", len(r.Evidence))
	}
}

// TestClient_RevocationFromNode: without WithCRL the client checks signers
// against the CRL its node serves, so a message whose sender was revoked
// after sending is refused when fetched.
func TestClient_RevocationFromNode(t *testing.T) {
	ctx := ctxT(t)
	authority, err := ca.Open(filepath.Join(devDir, "ca"))
	if err != nil {
		t.Fatal(err)
	}
	sender, err := authority.IssueParticipant(filepath.Join(t.TempDir(), "agency2"), daemon.DevAgency)
	if err != nil {
		t.Fatal(err)
	}
	sc, err := client.Dial(ctx, nodeAddr, sender)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	id := send(t, sc, client.Document{Name: "a.txt", Data: []byte("signed before the revocation")})

	if err := authority.Revoke(sender.Cert.SerialNumber, 1); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // the node rereads its CRL at most once a second
	if _, err := authority.WriteCRL(24 * time.Hour); err != nil {
		t.Fatal(err)
	}
	cc, err := client.Dial(ctx, nodeAddr, court) // no WithCRL: the node's CRL
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	dir := t.TempDir()
	_, err = cc.Fetch(ctx, id, dir)
	if !errors.Is(err, pki.ErrRevoked) {
		t.Fatalf("Fetch of a revoked sender's message: %v, want ErrRevoked", err)
	}
	if names := dirNames(t, dir); len(names) != 0 {
		t.Fatalf("a refused fetch wrote %v", names)
	}
	// The revoked sender's own calls are refused, naming the reason.
	if _, err := sc.Inbox(ctx); !errors.Is(err, client.ErrRevoked) || status.Code(err) != codes.Unauthenticated {
		t.Fatalf("inbox of a revoked participant: %v (code %s), want ErrRevoked and Unauthenticated", err, status.Code(err))
	}
}

// TestFault_SealedSaveAndResubmit saves a sealed message, reads it back
// and submits it twice, as an application would after a crash: one
// message, the same receipt. A damaged or foreign file is refused.
func TestFault_SealedSaveAndResubmit(t *testing.T) {
	ctx := ctxT(t)
	ag := dial(t, agency)
	s, err := ag.Seal(ctx, client.Message{To: []string{daemon.DevCourt}, Subject: "gespeichert", Documents: []client.Document{{Name: "a.txt", Data: randomBytes(t, 5000)}}})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := s.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	saved := bytes.Clone(buf.Bytes())
	back, err := client.ReadSealed(bytes.NewReader(saved))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(s, back, cmpopts.IgnoreUnexported(client.Sealed{})); diff != "" {
		t.Fatalf("read back (-written +read):\n%s", diff)
	}
	first, err := ag.Submit(ctx, s, nil)
	if err != nil {
		t.Fatal(err)
	}
	again, err := ag.Submit(ctx, back, nil)
	if err != nil {
		t.Fatal(err)
	}
	if again.MessageID != first.MessageID || !bytes.Equal(again.Evidence[0].DER, first.Evidence[0].DER) {
		t.Fatalf("the resubmission got another receipt: %s vs %s", again.MessageID, first.MessageID)
	}
	ct := dial(t, court)
	n := 0
	entries, err := ct.Inbox(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.ID == s.ID {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("the court's inbox holds the message %d times", n)
	}

	bad := map[string][]byte{
		"empty":         nil,
		"another file":  []byte("%PDF-1.7\n"),
		"truncated":     saved[:len(saved)-1],
		"data after":    append(bytes.Clone(saved), 0),
		"huge envelope": append([]byte("KURIER-SEALED 1\n"), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff),
		"not an envelope": func() []byte {
			var b bytes.Buffer
			(&client.Sealed{Envelope: []byte("{}"), Signature: s.Signature, Payload: s.Payload}).WriteTo(&b)
			return b.Bytes()
		}(),
	}
	for name, in := range bad {
		t.Run(name, func(t *testing.T) {
			if _, err := client.ReadSealed(bytes.NewReader(in)); err == nil {
				t.Fatal("ReadSealed accepted it")
			}
		})
	}
}

// TestClient_ErrorsToBranchOn: the refusals an integrator handles are
// sentinels and gRPC codes alike: an unknown recipient is ErrNoMailbox
// and NotFound (as the node's own refusal is), a malformed id
// envelope.ErrInvalidID and says "invalid message id".
func TestClient_ErrorsToBranchOn(t *testing.T) {
	ag := dial(t, agency)
	_, err := ag.Send(ctxT(t), client.Message{To: []string{"niemand@amtsgericht.example"}, Subject: "s",
		Documents: []client.Document{{Name: "a.txt", Data: []byte("a")}}}, nil)
	if !errors.Is(err, client.ErrNoMailbox) || !errors.Is(err, client.ErrUnknownRecipient) || status.Code(err) != codes.NotFound {
		t.Errorf("send to an unknown recipient: %v (code %s), want ErrNoMailbox, ErrUnknownRecipient and NotFound", err, status.Code(err))
	}
	file := filepath.Join(t.TempDir(), "eingang")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	id, _ := envelope.NewID()
	if _, err := ag.Fetch(ctxT(t), id, file); err == nil || !strings.Contains(err.Error(), "the folder for the documents") {
		t.Errorf("fetch into a file: %v, want the folder refused", err)
	}
	// A fetch that fails leaves no folder behind, not even its own.
	base := t.TempDir()
	if _, err := ag.FetchWith(ctxT(t), id, client.FetchOptions{Dir: base, PerMessage: true, KeepSealed: true}); status.Code(err) != codes.NotFound {
		t.Errorf("fetch of a message not in the mailbox: %v, want NotFound", err)
	}
	if entries, _ := os.ReadDir(base); len(entries) != 0 {
		t.Errorf("a failed fetch left %v in the folder", entries)
	}
	// An error from OnReady ends Subscribe with it.
	errReady := errors.New("listing failed")
	if err := ag.Subscribe(ctxT(t), func(client.InboxEntry) error { return nil }, client.OnReady(func() error { return errReady })); !errors.Is(err, errReady) {
		t.Errorf("Subscribe with a failing OnReady: %v, want its error", err)
	}
	_, err = ag.Check(ctxT(t), "4 C 12/26")
	if !errors.Is(err, envelope.ErrInvalidID) || !strings.Contains(err.Error(), "invalid message id") || strings.Contains(err.Error(), "envelope") {
		t.Errorf("check of a case reference instead of an id: %v, want ErrInvalidID saying invalid message id", err)
	}
}
