package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kurier.dev/kurier/internal/logbuf"
)

// federation is a development federation written by `kurier dev
// federation`, with its nodes run as real kurierd processes.
type federation struct {
	t     *testing.T
	dir   string
	ca    string
	addrs map[string]string    // domain → listen address
	nodes map[string]*nodeProc // domain → the running process, if started
	ids   map[string]string    // address → identity folder
}

// Domains and mailboxes of the test federation.
const (
	stadt      = "stadt.example"
	amtsg      = "amtsgericht.example"
	landg      = "landgericht.example"
	poststelle = "poststelle@stadt.example"
	amtsgEin   = "eingang@amtsgericht.example"
	landgEin   = "eingang@landgericht.example"
)

// newFederation writes a federation of the three test domains on free
// loopback ports, with one mailbox each; no node runs yet.
func newFederation(ctx context.Context, t *testing.T) *federation {
	t.Helper()
	return newFederationOf(ctx, t, []string{stadt, amtsg, landg}, []string{poststelle, amtsgEin, landgEin})
}

// newFederationOf writes a federation of domains with the mailboxes given,
// on free loopback ports; no node runs yet.
func newFederationOf(ctx context.Context, t *testing.T, domains, mailboxes []string) *federation {
	t.Helper()
	f := &federation{t: t, dir: filepath.Join(t.TempDir(), "fed"), addrs: map[string]string{}, nodes: map[string]*nodeProc{}, ids: map[string]string{}}
	args := []string{"dev", "federation", "-o", f.dir, "--json"}
	for _, d := range domains {
		f.addrs[d] = freePort(t)
		args = append(args, "--node", d+"="+f.addrs[d])
	}
	for _, m := range mailboxes {
		args = append(args, "--mailbox", m)
	}
	out, err := exec.CommandContext(ctx, kurier, args...).Output()
	if err != nil {
		t.Fatalf("kurier dev federation: %v", err)
	}
	var res struct {
		CA         string
		Identities []struct{ Address, Dir string }
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("kurier dev federation printed %q: %v", out, err)
	}
	f.ca = res.CA
	for _, id := range res.Identities {
		f.ids[id.Address] = id.Dir
	}
	return f
}

// freePort returns a loopback address that was free a moment ago: the
// nodes must know each other's addresses before any of them listens.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// start runs the node of domain and waits until it listens.
func (f *federation) start(domain string) *nodeProc {
	f.t.Helper()
	cfg := filepath.Join(f.dir, domain, "kurierd.yaml")
	cmd := exec.Command(kurierd, "-config", cfg, "-log-level", "debug")
	logs := &logbuf.Buffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		f.t.Fatal(err)
	}
	n := &nodeProc{t: f.t, dir: filepath.Join(f.dir, domain), addr: f.addrs[domain], cmd: cmd, logs: logs, exited: make(chan struct{})}
	go func() { cmd.Wait(); close(n.exited) }()
	f.t.Cleanup(n.stop)
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(logs.String(), "node listening") {
		select {
		case <-n.exited:
			f.t.Fatalf("kurierd for %s exited before listening: %v\n%s", domain, cmd.ProcessState, logs)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("kurierd for %s did not listen within 60s\n%s", domain, logs)
		}
	}
	f.nodes[domain] = n
	return n
}

// as runs the kurier CLI as the participant addr against its home node.
func (f *federation) as(ctx context.Context, addr string, out any, args ...string) error {
	n := f.nodes[domainOf(addr)]
	if n == nil {
		return fmt.Errorf("the node of %s is not running", addr)
	}
	if out == nil {
		_, err := n.run(ctx, f.ids[addr], args...)
		return err
	}
	return n.runJSON(ctx, f.ids[addr], out, args...)
}

func domainOf(addr string) string { return addr[strings.LastIndexByte(addr, '@')+1:] }

// evidenceTypes returns the types of the evidence that addr sees of
// message id, per recipient, in order.
func (f *federation) evidenceTypes(ctx context.Context, addr, id string) (map[string][]string, error) {
	var evs []struct{ Type, Recipient string }
	if err := f.as(ctx, addr, &evs, "evidence", id); err != nil {
		return nil, err
	}
	out := map[string][]string{}
	for _, e := range evs {
		out[e.Recipient] = append(out[e.Recipient], e.Type)
	}
	return out, nil
}

// waitEvidence polls the evidence addr sees of message id until every
// recipient in want has exactly the chain named there, or fails after
// limit. Relay runs in the background, so the test waits for it.
func (f *federation) waitEvidence(ctx context.Context, addr, id string, limit time.Duration, want map[string][]string) {
	f.t.Helper()
	deadline := time.Now().Add(limit)
	var got map[string][]string
	var err error
	for {
		got, err = f.evidenceTypes(ctx, addr, id)
		if err == nil && chainsEqual(got, want) {
			return
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	var logs strings.Builder
	for d, n := range f.nodes {
		fmt.Fprintf(&logs, "--- %s\n%s\n", d, n.logs)
	}
	f.t.Fatalf("evidence of %s at %s after %s: %v (%v), want %v\n%s", id, addr, limit, got, err, want, logs.String())
}

func chainsEqual(got, want map[string][]string) bool {
	if len(got) != len(want) {
		return false
	}
	for r, w := range want {
		if strings.Join(got[r], ",") != strings.Join(w, ",") {
			return false
		}
	}
	return true
}

// writeDoc writes a document of size random-looking bytes and returns its
// path.
func writeDoc(t *testing.T, name string, size int) string {
	t.Helper()
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(i*7 + i/251)
	}
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
