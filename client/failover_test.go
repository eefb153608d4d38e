package client_test

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"kurier.dev/kurier/broker/daemon"
	"kurier.dev/kurier/client"
	"kurier.dev/kurier/internal/logbuf"
	"kurier.dev/kurier/pki"
	"kurier.dev/kurier/pki/ca"
)

// replica starts another process of the test node (same domains, same
// node certificate, a badger store of its own) and returns it with a stop
// that may be called more than once; the test's end stops it too.
func replica(t *testing.T) (addr string, stop func()) {
	t.Helper()
	n, err := devNode.StartReplica(t.TempDir())
	if err != nil {
		t.Fatalf("start a second node process: %v", err)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			if err := n.Stop(); err != nil {
				t.Errorf("stop the node process at %s: %v", n.Addr, err)
			}
		})
	}
	t.Cleanup(stop)
	return n.Addr, stop
}

// dialNodes dials node (one address or a list) as id, retrying for
// retry.
func dialNodes(t *testing.T, node string, id *pki.Identity, retry time.Duration) *client.Client {
	t.Helper()
	c, err := client.Dial(ctxT(t), node, id, client.WithCRL(crlPath), client.WithRetry(retry),
		client.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatalf("Dial %s: %v", node, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestParseNodes(t *testing.T) {
	for _, tc := range []struct {
		list string
		want []string
	}{
		{"kurier.stadt.example:7443", []string{"kurier.stadt.example:7443"}},
		{"a:1,b:2", []string{"a:1", "b:2"}},
		{" a:1 , [::1]:7443 ", []string{"a:1", "[::1]:7443"}},
	} {
		got, err := client.ParseNodes(tc.list)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("ParseNodes(%q) = %q, %v; want %q", tc.list, got, err, tc.want)
		}
	}
	tooMany := strings.Repeat("a:1,", 16) + "a:1"
	for _, tc := range []struct{ list, msg string }{
		{"", "no node address"},
		{" ", "no node address"},
		{"127.0.0.1", "give the node as host:port"},
		{"a:", "give the node as host:port"},
		{"a:https", "give the node as host:port"},
		{"a:0", "give the node as host:port"},
		{"a:65536", "give the node as host:port"},
		{"a:1,b:x", `element 2, "b:x", has no port number`},
		{"a:1,,b:2", "element 2 of 3 is empty"},
		{"a:1,", "element 2 of 2 is empty"},
		{"a:1,b", `element 2, "b", has no port number`},
		{"a:1,b:2,a:1", `"a:1" is listed twice`},
		{tooMany, "17 node addresses; at most 16"},
		{strings.Repeat("a", 5000) + ":1", "at most 4096"},
	} {
		if got, err := client.ParseNodes(tc.list); err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("ParseNodes(%.40q) = %q, %v; want it refused with %q", tc.list, got, err, tc.msg)
		}
	}
}

// TestDial_NodeListRefused: Dial refuses a list it cannot use before it
// connects, naming the list and the bad element.
func TestDial_NodeListRefused(t *testing.T) {
	_, err := client.Dial(ctxT(t), "127.0.0.1:7443,kurier2", agency)
	want := `dial: node "127.0.0.1:7443,kurier2": element 2, "kurier2", has no port number`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("Dial = %v, want %q", err, want)
	}
}

// TestFaultDial_DeadNodeInList: a list whose first process is dead from the
// start works without a single retry: calls go to the one that answers.
func TestFaultDial_DeadNodeInList(t *testing.T) {
	ag := dialNodes(t, "127.0.0.1:1,"+nodeAddr, agency, 0)
	ct := dialNodes(t, "127.0.0.1:1,"+nodeAddr, court, 0)
	for range 3 {
		id := send(t, ag, client.Document{Name: "a.txt", Data: []byte("a")})
		if ids := inboxIDs(t, ct); !slices.Contains(ids, id) {
			t.Fatalf("%s is not in the court's inbox", id)
		}
	}
}

// TestFaultDial_NodeDies: with two processes of the node listed, sends go
// on through the other once the first is stopped, without the caller
// doing anything: a send that met the stopped one is retried with the
// same sealed message, and the retry goes to the survivor.
func TestFaultDial_NodeDies(t *testing.T) {
	a, stopA := replica(t)
	b, _ := replica(t)
	ag := dialNodes(t, a+","+b, agency, 10*time.Second)
	send(t, ag, client.Document{Name: "vorher.txt", Data: []byte("vorher")})
	stopA()
	var sent []string
	for i := range 20 {
		r, err := ag.Send(ctxT(t), message(fmt.Sprintf("nach dem Halt %d", i)), nil)
		if err != nil {
			t.Fatalf("send %d after the first process stopped: %v", i+1, err)
		}
		sent = append(sent, r.MessageID)
	}
	// The stores are apart: all of them are in the survivor's.
	got := inboxIDs(t, dialNodes(t, b, court, 0))
	for _, id := range sent {
		if !slices.Contains(got, id) {
			t.Fatalf("%s is not in the surviving process's inbox %q", id, got)
		}
	}
}

// TestFaultSubscribe_NodeDies: a subscription whose process stops ends
// with Unavailable; subscribing again, as Subscribe's caller does, goes to
// the process that still runs and announces what arrives there.
func TestFaultSubscribe_NodeDies(t *testing.T) {
	a, stopA := replica(t)
	b, _ := replica(t)
	ag := dialNodes(t, a+","+b, agency, 10*time.Second)
	ct := dialNodes(t, a+","+b, court, 10*time.Second)
	ctx := ctxT(t)
	notices := make(chan string, 8)
	subscribe := func(ready func() error) <-chan error {
		ended := make(chan error, 1)
		go func() {
			ended <- ct.Subscribe(ctx, func(e client.InboxEntry) error {
				notices <- e.ID
				return nil
			}, client.OnReady(ready))
		}()
		return ended
	}
	awaitNotice := func(want string) {
		t.Helper()
		for {
			select {
			case id := <-notices:
				if id == want {
					return
				}
			case <-ctx.Done():
				t.Fatalf("no notice of %s", want)
			}
		}
	}
	subscribed := make(chan struct{})
	first := subscribe(func() error { close(subscribed); return nil })
	select {
	case <-subscribed:
	case err := <-first:
		t.Fatalf("Subscribe: %v", err)
	}
	stopA()
	id := send(t, ag, client.Document{Name: "a.txt", Data: []byte("a")}) // to the survivor
	select {
	case err := <-first: // the stream was with the stopped process
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("the subscription of a stopped process ended with %v, want Unavailable", err)
		}
		again := make(chan string, 1)
		second := subscribe(func() error {
			r, err := ag.Send(ctx, message("nach dem Halt"), nil)
			if err != nil {
				return err
			}
			again <- r.MessageID
			return nil
		})
		select {
		case want := <-again:
			awaitNotice(want)
		case err := <-second:
			t.Fatalf("subscribing again: %v", err)
		}
	case got := <-notices: // the stream was with the survivor
		if got != id {
			t.Fatalf("notice of %s, want %s", got, id)
		}
	case <-ctx.Done():
		t.Fatal("the subscription neither ended nor announced the message")
	}
}

// message is a small message to the court.
func message(subject string) client.Message {
	return client.Message{To: []string{daemon.DevCourt}, Subject: subject, Documents: []client.Document{{Name: "a.txt", Data: []byte("a")}}}
}

// TestHostileDial_WrongNodeInList: every listed address must prove a node
// certificate for the client's own domain. A process with a valid
// certificate of the same CA for another domain is never used: calls go
// to the right one, and a list of only such processes fails, saying why.
func TestHostileDial_WrongNodeInList(t *testing.T) {
	authority, err := ca.Open(filepath.Join(devDir, "ca"))
	if err != nil {
		t.Fatal(err)
	}
	other, err := authority.IssueNode(filepath.Join(t.TempDir(), "andere"), []string{"andere.example"})
	if err != nil {
		t.Fatal(err)
	}
	wrong1, wrong2 := tlsListener(t, other), tlsListener(t, other)

	ag := dialNodes(t, wrong1+","+nodeAddr+","+wrong2, agency, 0)
	for range 3 {
		if _, err := ag.Inbox(ctxT(t)); err != nil {
			t.Fatalf("Inbox through a list with the right node in it: %v", err)
		}
	}

	bad := dialNodes(t, wrong1+","+wrong2, agency, 0)
	_, err = bad.Inbox(ctxT(t))
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "not stadt.example") {
		t.Fatalf("Inbox through nodes of another domain: %v, want Unavailable saying the certificate is not for stadt.example", err)
	}
}

// tlsListener serves TLS handshakes with id's certificate on 127.0.0.1
// until the test ends, and returns its address.
func tlsListener(t *testing.T, id *pki.Identity) string {
	t.Helper()
	lis, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{id.TLSCertificate()},
		NextProtos: []string{"h2"}, ClientAuth: tls.RequestClientCert,
	})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { lis.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			conn, err := lis.Accept()
			if err != nil {
				return
			}
			_ = conn.(*tls.Conn).Handshake() // the client refuses it
			conn.Close()
		}
	})
	return lis.Addr().String()
}

// TestFaultSubmit_NodeDiesMidUpload: a process that dies while it takes
// an upload (its connections cut, no more taken) leaves the submission's
// outcome unknown; Submit sends the same sealed message again, and the
// retry goes to the other process, which stores it. The cuts are made by
// a TCP relay in front of each process, as a process's death makes them:
// the nodes behind are real. The second process answers only once the
// first is cut, so the upload starts at the first.
func TestFaultSubmit_NodeDiesMidUpload(t *testing.T) {
	a, _ := replica(t)
	b, _ := replica(t)
	pa, pb := relay(t, a), relay(t, b)
	pb.setRefusing(true)
	var logs logbuf.Buffer
	ag, err := client.Dial(ctxT(t), pa.addr+","+pb.addr, agency, client.WithCRL(crlPath), client.WithRetry(20*time.Second),
		client.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	if err != nil {
		t.Fatal(err)
	}
	defer ag.Close()
	m := message("mitten im Hochladen")
	m.Documents[0].Data = randomBytes(t, 1<<20) // four chunks
	var cut sync.Once
	r, err := ag.Send(ctxT(t), m, func(sent, total int64) {
		if sent > 0 && sent < total {
			cut.Do(func() { pa.setRefusing(true); pb.setRefusing(false) })
		}
	})
	if err != nil {
		t.Fatalf("Send while its process died: %v\n%s", err, logs.String())
	}
	if !strings.Contains(logs.String(), "trying again") {
		t.Errorf("the upload was not cut; no retry was logged:\n%s", logs.String())
	}
	if got := inboxIDs(t, dialNodes(t, b, court, 0)); !slices.Contains(got, r.MessageID) {
		t.Fatalf("%s is not in the second process's inbox %q", r.MessageID, got)
	}
}

// tcpRelay forwards connections to a node process until it is set to
// refuse: then it cuts the connections it carries and closes new ones at
// once.
type tcpRelay struct {
	addr     string
	mu       sync.Mutex
	refusing bool
	conns    map[net.Conn]bool
}

// relay starts a tcpRelay on 127.0.0.1 to target, stopped when the test
// ends.
func relay(t *testing.T, target string) *tcpRelay {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &tcpRelay{addr: lis.Addr().String(), conns: map[net.Conn]bool{}}
	var wg sync.WaitGroup
	t.Cleanup(func() { lis.Close(); r.setRefusing(true); wg.Wait() })
	wg.Go(func() {
		for {
			in, err := lis.Accept()
			if err != nil {
				return
			}
			out, err := r.connect(in, target)
			if err != nil {
				in.Close()
				continue
			}
			wg.Go(func() { io.Copy(out, in); out.Close() })
			wg.Go(func() { io.Copy(in, out); in.Close() })
		}
	})
	return r
}

// connect dials target for in, unless r refuses.
func (r *tcpRelay) connect(in net.Conn, target string) (net.Conn, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.refusing {
		return nil, errors.New("refusing")
	}
	out, err := net.Dial("tcp", target)
	if err != nil {
		return nil, err
	}
	r.conns[in], r.conns[out] = true, true
	return out, nil
}

// setRefusing makes r refuse (cutting what it carries) or forward.
func (r *tcpRelay) setRefusing(refusing bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.refusing = refusing
	if refusing {
		for c := range r.conns {
			c.Close()
		}
		clear(r.conns)
	}
}
