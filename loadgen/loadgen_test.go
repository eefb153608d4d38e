package loadgen_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"kurier.dev/kurier/broker/daemon/daemontest"
	"kurier.dev/kurier/loadgen"
)

// The development node, in process, over real mutual TLS and a real
// badger store. Submit runs send from the agency to the court; the
// lifecycle run sends from the court to the agency, so that the agency's
// mailbox holds exactly the messages of that run.
var node *daemontest.Node

func TestMain(m *testing.M) {
	daemontest.Main(m, func(n *daemontest.Node) error { node = n; return nil })
}

func config(mode loadgen.Mode) loadgen.Config {
	cfg := loadgen.Config{
		Node: node.Addr, Sender: node.Agency, Recipient: node.Court, To: node.Court.Cert.EmailAddresses[0],
		Messages: 20, Size: 512, Concurrency: 4, Mode: mode, Timeout: time.Minute,
		CRL: node.CRL,
	}
	if mode == loadgen.Lifecycle {
		cfg.Sender, cfg.Recipient, cfg.To = node.Court, node.Agency, node.Agency.Cert.EmailAddresses[0]
		cfg.Open = true
	}
	return cfg
}

// checkRates checks what every complete run reports: positive rates and
// consistent percentiles, the machine's costs and the bound they set.
func checkRates(t *testing.T, r *loadgen.Result) {
	t.Helper()
	if r.Errors != 0 || r.FirstError != "" || r.TimedOut {
		t.Errorf("errors %d (%q), timed out %v; want none", r.Errors, r.FirstError, r.TimedOut)
	}
	if r.Sealed != r.Messages || r.Submitted != r.Messages {
		t.Errorf("sealed %d, submitted %d of %d", r.Sealed, r.Submitted, r.Messages)
	}
	if r.SubmitPerS <= 0 || r.ElapsedS <= 0 {
		t.Errorf("submit_per_s %v, elapsed_s %v; want positive", r.SubmitPerS, r.ElapsedS)
	}
	if r.SubmitP50Ms <= 0 || r.SubmitP50Ms > r.SubmitP99Ms {
		t.Errorf("submit p50 %v ms, p99 %v ms; want 0 < p50 ≤ p99", r.SubmitP50Ms, r.SubmitP99Ms)
	}
	if r.SignUs <= 0 || r.VerifyUs <= 0 || r.RSAUs <= 0 || r.BoundPerS <= 0 || r.Cores <= 0 {
		t.Errorf("costs %+v; want all positive", r.Costs)
	}
	if r.SignKey != "ECDSA P-256" || r.RSAKey != "RSA-3072" {
		t.Errorf("measured keys %q and %q; want the identities' ECDSA P-256 and RSA-3072", r.SignKey, r.RSAKey)
	}
	if r.SelfCPUUsPerMsg == nil || *r.SelfCPUUsPerMsg <= 0 || r.SelfPeakRSSBytes == nil || *r.SelfPeakRSSBytes <= 0 {
		t.Errorf("own CPU per message %v, peak RSS %v; want positive", r.SelfCPUUsPerMsg, r.SelfPeakRSSBytes)
	}
}

func TestRun_Submit(t *testing.T) {
	cfg := config(loadgen.Submit)
	r, err := loadgen.Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	checkRates(t, r)
	if r.Lifecycles != 0 || r.LifecyclePerS != 0 {
		t.Errorf("a submit run reports %d lifecycles at %v/s", r.Lifecycles, r.LifecyclePerS)
	}
	if want := (loadgen.Ops{Sign: 2, Verify: 1}); r.OpsPerMsg != want {
		t.Errorf("ops per message %+v, want %+v", r.OpsPerMsg, want)
	}
	// The node's figures are read only when its process is named.
	if r.NodeCPUUsPerMsg != nil || r.NodePeakRSSBytes != nil {
		t.Errorf("node CPU %v and RSS %v without a node process", r.NodeCPUUsPerMsg, r.NodePeakRSSBytes)
	}
}

// inbox counts the messages in the agency's mailbox, and those of them
// kurier bench sent that are acknowledged.
func inbox(t *testing.T) (all, acked int) {
	t.Helper()
	cl, err := node.Dial(context.Background(), node.Agency)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	entries, err := cl.Inbox(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Subject, "kurier bench ") && e.State == "acknowledged" {
			acked++
		}
	}
	return len(entries), acked
}

func TestRun_Lifecycle(t *testing.T) {
	for _, tc := range []struct {
		name string
		open bool
		ops  loadgen.Ops
	}{
		{"open", true, loadgen.Ops{Sign: 4, Verify: 3, RSA: 1}},
		{"digest only", false, loadgen.Ops{Sign: 4, Verify: 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := config(loadgen.Lifecycle)
			cfg.Open = tc.open
			all0, acked0 := inbox(t)
			r, err := loadgen.Run(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			checkRates(t, r)
			if r.Lifecycles != cfg.Messages || r.LifecyclePerS <= 0 {
				t.Errorf("lifecycles %d at %v/s; want %d, positive", r.Lifecycles, r.LifecyclePerS, cfg.Messages)
			}
			if r.LifecycleP50Ms <= 0 || r.LifecycleP50Ms > r.LifecycleP99Ms || r.LifecycleP50Ms < r.SubmitP50Ms {
				t.Errorf("lifecycle p50 %v ms, p99 %v ms, submit p50 %v ms; want submit p50 ≤ p50 ≤ p99", r.LifecycleP50Ms, r.LifecycleP99Ms, r.SubmitP50Ms)
			}
			if r.OpsPerMsg != tc.ops {
				t.Errorf("ops per message %+v, want %+v", r.OpsPerMsg, tc.ops)
			}
			// The node holds the recipient's acknowledgement of each.
			all, acked := inbox(t)
			if all-all0 != cfg.Messages || acked-acked0 != cfg.Messages {
				t.Errorf("the recipient's mailbox has %d more messages, %d more acknowledged; want %d, all", all-all0, acked-acked0, cfg.Messages)
			}
		})
	}
}

func TestRun_WrongRecipient(t *testing.T) {
	cfg := config(loadgen.Lifecycle)
	cfg.Recipient = node.Court // the messages go to the agency
	for _, open := range []bool{true, false} {
		cfg.Open = open
		if _, err := loadgen.Run(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "but the messages go to") {
			t.Errorf("open %v: recipient identity not the addressee: %v", open, err)
		}
	}
}

// A run ends at its timeout and reports what it did by then.
func TestFault_RunTimeout(t *testing.T) {
	cfg := config(loadgen.Submit)
	cfg.Messages = 1000
	cfg.Timeout = time.Nanosecond
	r, err := loadgen.Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !r.TimedOut || r.Submitted >= cfg.Messages || r.Errors != 0 {
		t.Errorf("timed out %v, submitted %d of %d, errors %d; want timed out, fewer, none", r.TimedOut, r.Submitted, cfg.Messages, r.Errors)
	}
}
