package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"kurier.dev/kurier/client"
	"kurier.dev/kurier/internal/logbuf"
	"kurier.dev/kurier/pki"
)

// TestOperator_FromZero follows docs/OPERATIONS.md with real processes:
// a CA, a node identity, a log key and two participants that keep their
// own keys, all with `kurier pki`; a kurierd.yaml made from the sample;
// `kurierd -config`; a message sent, fetched and acknowledged with the
// CLI; the metrics that count it; a backup while the node runs, a wiped
// data directory, a restore and a restart, after which every message is
// there and the log is consistent with a checkpoint signed before the
// backup; and a SIGTERM while a subscription and an upload are open.
func TestOperator_FromZero(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	root := t.TempDir()
	at := func(p ...string) string { return filepath.Join(append([]string{root}, p...)...) }
	const agencyAddr, courtAddr = "poststelle@stadt.example", "eingang@amtsgericht.example"

	// 1–3: the CA with its first CRL, the node and its log key, the
	// participants from their own CSRs.
	kurierCLI(ctx, t, "pki", "init", "--ca", at("ca"))
	kurierCLI(ctx, t, "pki", "issue", "--ca", at("ca"), "--node", "stadt.example,amtsgericht.example", "-o", at("node"))
	kurierCLI(ctx, t, "pki", "log-key", "-o", at("node"))
	for dir, addr := range map[string]string{"agency": agencyAddr, "court": courtAddr} {
		kurierCLI(ctx, t, "pki", "csr", "--participant", addr, "-o", at(dir))
		kurierCLI(ctx, t, "pki", "issue", "--ca", at("ca"), "--csr", at(dir, "csr.pem"), at(dir, "enc-csr.pem"))
	}
	copyFile(t, at("ca", "crl.pem"), at("node", "crl.pem"))

	// 4: the configuration, from the sample.
	listen, metrics := freeAddr(t), freeAddr(t)
	cfg := sampleConfig(t, map[string]any{
		"listen": listen, "data": at("store"), "identity": at("node"), "crl": at("node", "crl.pem"),
		"log_key": at("node", "log.key"), "domains": []string{"stadt.example", "amtsgericht.example"},
		"participants": []map[string]string{
			{"address": agencyAddr, "display_name": "Stadt, Poststelle", "kind": "agency", "encryption_cert": at("agency", "enc-cert.pem")},
			{"address": courtAddr, "display_name": "Amtsgericht, Eingang", "kind": "court", "encryption_cert": at("court", "enc-cert.pem")},
		},
		// A peer that is down: its queue is watched, empty.
		"peers": map[string]string{"kreis-soest.example": freeAddr(t)}, "metrics_listen": metrics, "audit_log": at("log", "audit.jsonl"),
	})
	cfgPath := at("kurierd.yaml")
	if err := os.WriteFile(cfgPath, cfg, 0o600); err != nil {
		t.Fatal(err)
	}

	// 5–6: the node, and the first checks.
	n := startConfigNode(ctx, t, cfgPath)
	if code, body := httpGet(ctx, t, "http://"+metrics+"/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz = %d %q", code, body)
	}
	as := func(dir string) []string { return []string{"--id", at(dir), "--node", listen} }
	doc := at("klage.pdf")
	if err := os.WriteFile(doc, []byte("%PDF-1.7 Klage gegen den Bescheid vom 1. Dezember"), 0o600); err != nil {
		t.Fatal(err)
	}
	var sent struct {
		MessageID string `json:"id"`
	}
	kurierJSON(ctx, t, &sent, append([]string{"send", "--to", courtAddr, "--subject", "Klage", doc}, as("agency")...)...)
	kurierCLI(ctx, t, append([]string{"fetch", sent.MessageID, "-o", at("eingang")}, as("court")...)...)
	kurierCLI(ctx, t, append([]string{"ack", sent.MessageID}, as("court")...)...)
	if got, err := os.ReadFile(filepath.Join(at("eingang"), "klage.pdf")); err != nil || !strings.Contains(string(got), "Klage gegen") {
		t.Fatalf("the fetched document: %q, %v", got, err)
	}

	// 7: the metrics count what happened.
	m := scrapeMetrics(ctx, t, "http://"+metrics+"/metrics")
	for series, want := range map[string]float64{
		`kurier_submissions_total{outcome="accepted"}`:              1,
		`kurier_evidence_stored_total{type="SubmissionAcceptance"}`: 1,
		`kurier_evidence_stored_total{type="Delivery"}`:             1,
		`kurier_evidence_stored_total{type="Retrieval"}`:            1,
		`kurier_evidence_stored_total{type="Acknowledgement"}`:      1,
		`kurier_log_leaves`: 4,
		`kurier_mailbox_waiting_messages{state="unfetched"}`:                                                                               0,
		`kurier_mailbox_waiting_messages{state="unanswered"}`:                                                                              0,
		`kurier_outbound_queued_messages{domain="kreis-soest.example"}`:                                                                    0,
		`grpc_server_handled_total{grpc_code="OK",grpc_method="Submit",grpc_service="kurier.v1.MailboxService",grpc_type="client_stream"}`: 1,
	} {
		if got, ok := m[series]; !ok || got != want {
			t.Errorf("%s = %v (found %v), want %v", series, got, ok, want)
		}
	}
	for _, series := range []string{"kurier_crl_next_update_seconds", "kurier_node_certificate_expiry_seconds", "kurier_disk_free_bytes"} {
		if m[series] <= 0 {
			t.Errorf("%s = %v, want it positive", series, m[series])
		}
	}

	// 8: a checkpoint signed before the backup, kept by a verifier; a
	// second message, which the backup holds, not fetched yet.
	before := at("before.checkpoint")
	kurierCLI(ctx, t, append([]string{"checkpoint", "-o", before}, as("agency")...)...)
	var second struct {
		MessageID string `json:"id"`
	}
	kurierJSON(ctx, t, &second, append([]string{"send", "--to", courtAddr, "--subject", "Nachtrag", doc}, as("agency")...)...)

	// 9: a backup while the node runs; the node stops; its data is lost.
	kurierdCLI(ctx, t, "backup", "-config", cfgPath, "-o", at("backup.kbk"))
	n.stop()
	if err := os.RemoveAll(at("store")); err != nil {
		t.Fatal(err)
	}
	kurierdCLI(ctx, t, "restore", "-config", cfgPath, "-i", at("backup.kbk"))

	// 10: the restored node has every message, and its log extends the
	// checkpoint signed before the backup.
	n = startConfigNode(ctx, t, cfgPath)
	var inbox []struct {
		ID string `json:"id"`
	}
	kurierJSON(ctx, t, &inbox, append([]string{"inbox"}, as("court")...)...)
	ids := map[string]bool{}
	for _, e := range inbox {
		ids[e.ID] = true
	}
	if len(ids) != 2 || !ids[sent.MessageID] || !ids[second.MessageID] {
		t.Fatalf("after the restore the court's inbox holds %v, want %s and %s", ids, sent.MessageID, second.MessageID)
	}
	kurierCLI(ctx, t, append([]string{"fetch", second.MessageID, "-o", at("eingang2")}, as("court")...)...)
	kurierCLI(ctx, t, append([]string{"export", sent.MessageID, "--since", before, "-o", at("proof.zip")}, as("agency")...)...)
	kurierCLI(ctx, t, "verify", at("proof.zip"), "--ca", at("ca", "ca.pem"), "--since", before, "--log-key", at("node", "log.vkey"))

	// 11: SIGTERM while a subscription is open and an upload under way.
	shutdownWhileBusy(ctx, t, n, at("agency"), at("court"), at("node", "crl.pem"), courtAddr)

	// The audit log has the story.
	audit, err := os.ReadFile(at("log", "audit.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	for _, event := range []string{"node_started", "node_stopped", "backup", "restore"} {
		if !strings.Contains(string(audit), `"event":"`+event+`"`) {
			t.Errorf("the audit log has no %s event:\n%s", event, audit)
		}
	}
}

// startConfigNode starts kurierd -config path and waits until it logs that
// it listens; its nodeProc has no dev folder.
func startConfigNode(ctx context.Context, t *testing.T, path string) *nodeProc {
	t.Helper()
	cmd := exec.CommandContext(ctx, kurierd, "-config", path)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	n := &nodeProc{t: t, cmd: cmd, logs: &logbuf.Buffer{}, exited: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	listening := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(io.TeeReader(stderr, n.logs))
		seen := false
		for sc.Scan() {
			if m := listenLine.FindStringSubmatch(sc.Text()); m != nil && !seen {
				seen = true
				listening <- m[1]
			}
		}
		io.Copy(io.Discard, stderr)
	}()
	go func() { cmd.Wait(); close(n.exited) }()
	t.Cleanup(n.stop)
	select {
	case n.addr = <-listening:
	case <-n.exited:
		t.Fatalf("kurierd -config exited before listening: %v\n%s", cmd.ProcessState, n.logs)
	case <-time.After(60 * time.Second):
		t.Fatalf("kurierd -config did not listen within 60s\n%s", n.logs)
	}
	return n
}

// listenLine is the log line of a node that serves, with its address.
var listenLine = regexp.MustCompile(`msg="node listening" addr=(\S+)`)

// sampleConfig is deploy/kurierd.yaml with the given top-level keys set
// (nil removes one) and limits the sample sets to their defaults.
func sampleConfig(t *testing.T, set map[string]any) []byte {
	t.Helper()
	b, err := os.ReadFile("../deploy/kurierd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	for k, v := range set {
		if _, ok := cfg[k]; !ok {
			t.Fatalf("the sample has no key %s", k)
		}
		if v == nil {
			delete(cfg, k)
		} else {
			cfg[k] = v
		}
	}
	out, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// kurierCLI runs the kurier CLI and returns its stdout, failing the test
// with its stderr if it fails.
func kurierCLI(ctx context.Context, t *testing.T, args ...string) string {
	t.Helper()
	return runBinary(ctx, t, kurier, args...)
}

// kurierdCLI runs a kurierd subcommand (backup, restore) like kurierCLI.
func kurierdCLI(ctx context.Context, t *testing.T, args ...string) string {
	t.Helper()
	return runBinary(ctx, t, kurierd, args...)
}

func runBinary(ctx context.Context, t *testing.T, bin string, args ...string) string {
	t.Helper()
	var stderr strings.Builder
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(bin), strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

// kurierJSON runs the kurier CLI with --json and decodes its output.
func kurierJSON(ctx context.Context, t *testing.T, out any, args ...string) {
	t.Helper()
	s := kurierCLI(ctx, t, append(args, "--json")...)
	if err := json.Unmarshal([]byte(s), out); err != nil {
		t.Fatalf("kurier %s --json: %v\n%s", strings.Join(args, " "), err, s)
	}
}

// freeAddr returns a loopback address with a port free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func httpGet(ctx context.Context, t *testing.T, url string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// sampleLine is one line of the Prometheus text format, labels sorted by
// name as client_golang writes them.
var sampleLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (\S+)$`)

// scrapeMetrics reads /metrics into series → value.
func scrapeMetrics(ctx context.Context, t *testing.T, url string) map[string]float64 {
	t.Helper()
	code, body := httpGet(ctx, t, url)
	if code != http.StatusOK {
		t.Fatalf("GET %s = %d\n%s", url, code, body)
	}
	out := map[string]float64{}
	for line := range strings.SplitSeq(body, "\n") {
		m := sampleLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		v, err := strconv.ParseFloat(m[2], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[m[1]] = v
	}
	if len(out) == 0 {
		t.Fatalf("no metrics in %s:\n%s", url, body)
	}
	return out
}

// shutdownWhileBusy sends SIGTERM to n while the court is subscribed and
// the agency's upload is under way: the node must exit within 2 s, the
// subscription end with Unavailable, and the upload either complete or
// fail cleanly with Unavailable, as docs/OPERATIONS.md says.
func shutdownWhileBusy(ctx context.Context, t *testing.T, n *nodeProc, agencyDir, courtDir, crl, courtAddr string) {
	t.Helper()
	addr := n.addr
	agency, court := dialIdentity(ctx, t, agencyDir, addr, crl), dialIdentity(ctx, t, courtDir, addr, crl)
	ready := make(chan struct{})
	subEnded := make(chan error, 1)
	go func() {
		subEnded <- court.Subscribe(ctx, func(client.InboxEntry) error { return nil }, client.OnReady(func() error { close(ready); return nil }))
	}()
	select {
	case <-ready:
	case err := <-subEnded:
		t.Fatalf("the subscription ended before SIGTERM: %v", err)
	}
	h := &heldUpload{holding: make(chan struct{}), letGo: make(chan struct{}), done: make(chan error, 1)}
	go func() {
		data := make([]byte, 2<<20)
		r, err := agency.Send(ctx, client.Message{To: []string{courtAddr}, Subject: "unterwegs", Documents: []client.Document{{Name: "b.pdf", Data: data}}}, h.progress)
		h.receipt = r
		h.done <- err
	}()
	select {
	case <-h.holding:
	case err := <-h.done:
		t.Fatalf("the upload ended before it was held: %v", err)
	}
	term := time.Now()
	if err := n.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	wantShuttingDown(t, "the subscription", <-subEnded)
	close(h.letGo)
	if err := <-h.done; err != nil {
		wantShuttingDown(t, "the upload under way", err)
	}
	select {
	case <-n.exited:
	case <-time.After(20 * time.Second):
		t.Fatalf("kurierd still runs 20s after SIGTERM\n%s", n.logs)
	}
	took := time.Since(term)
	t.Logf("kurierd -config exited %v after SIGTERM", took)
	if took > 2*time.Second {
		t.Errorf("kurierd took %v to exit after SIGTERM, want at most 2s", took)
	}
	if code := n.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("kurierd exited with %d after SIGTERM\n%s", code, n.logs)
	}
}

// dialIdentity connects the client as the identity in dir.
func dialIdentity(ctx context.Context, t *testing.T, dir, addr, crl string) *client.Client {
	t.Helper()
	id, err := pki.LoadIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.Dial(ctx, addr, id, client.WithCRL(crl), client.WithRetry(0), client.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
