package daemon_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"kurier.dev/kurier/broker/daemon"
	"kurier.dev/kurier/client"
	"kurier.dev/kurier/pki/ca"
)

// TestRun_AuditLog: a node with an audit log records its start, the CRL
// it takes up when the CA revokes a participant, the revoked
// participant's refused call, and its stop, one JSON object a line; calls
// that succeed are not in it.
func TestRun_AuditLog(t *testing.T) {
	dir := t.TempDir()
	cfg, err := daemon.Dev(dir, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.AuditLog = filepath.Join(dir, "audit", "audit.jsonl")
	ctx := context.Background()
	node := startRun(t, cfg, &logBuffer{})
	addr := node.addr
	c, court := dialDev(ctx, t, dir, "court", addr, cfg.CRL)
	if _, err := c.Inbox(ctx); err != nil {
		t.Fatal(err)
	}

	authority, err := ca.Open(filepath.Join(dir, "ca"))
	if err != nil {
		t.Fatal(err)
	}
	if err := authority.Revoke(court.Cert.SerialNumber, 1); err != nil { // keyCompromise
		t.Fatal(err)
	}
	if _, err := authority.WriteCRL(24 * time.Hour); err != nil {
		t.Fatal(err)
	}
	// The node looks at the CRL file at most once a second; until then
	// the court is still served.
	for deadline := time.Now().Add(10 * time.Second); ; {
		_, err := c.Inbox(ctx)
		if err == nil && time.Now().Before(deadline) {
			continue
		}
		if err == nil {
			t.Fatal("the revoked court was still served 10 s after the CRL was written")
		}
		if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "revoked") {
			t.Fatalf("revoked caller got %v, want Unauthenticated naming the revocation", err)
		}
		break
	}
	// A new connection of the revoked court is refused in the TLS
	// handshake, before any call.
	fresh, err := client.Dial(ctx, addr, court, client.WithCRL(cfg.CRL), client.WithRetry(0))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fresh.Inbox(ctx); err == nil {
		t.Fatal("a new connection of the revoked court was served")
	}
	fresh.Close()
	node.stop(t)

	fi, err := os.Stat(cfg.AuditLog)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("audit log mode %v, want 0600", fi.Mode().Perm())
	}
	var events []map[string]any
	f, err := os.Open(cfg.AuditLog)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for sc := bufio.NewScanner(f); sc.Scan(); {
		var e map[string]any
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("audit line %q is not JSON: %v", sc.Text(), err)
		}
		if _, err := time.Parse(time.RFC3339Nano, e["time"].(string)); err != nil {
			t.Errorf("event without a time: %v", e)
		}
		events = append(events, e)
	}
	var names []string
	for _, e := range events {
		names = append(names, e["event"].(string))
	}
	// The handshake may be tried more than once by the client.
	joined := strings.Join(names, " ")
	if !strings.HasPrefix(joined, "node_started crl_changed call_refused call_refused") || !strings.HasSuffix(joined, "call_refused node_stopped") ||
		strings.Count(joined, "node_") != 2 {
		t.Fatalf("audit events %q, want a start, the CRL, the refused call, the refused handshakes and the stop:\n%v", names, events)
	}
	start, crl, refused, handshake := events[0], events[1], events[2], events[3]
	if handshake["method"] != "(TLS handshake)" || handshake["kind"] != "authentication" || handshake["remote"] == nil ||
		!strings.Contains(fmt.Sprint(handshake["reason"]), "revoked") {
		t.Errorf("the refused handshake was recorded as %v, want authentication, its remote address and the revocation", handshake)
	}
	if start["cert_serial"] == "" || start["crl_number"] == nil {
		t.Errorf("start names no certificate or CRL: %v", start)
	}
	if anchors, _ := start["trust_anchors"].([]any); len(anchors) != 1 || !strings.Contains(fmt.Sprint(anchors[0]), "sha256:") {
		t.Errorf("start names the trust anchors %v, want the CA with its fingerprint", start["trust_anchors"])
	}
	if crl["revoked_certificates"] != float64(1) {
		t.Errorf("CRL change %v, want one certificate revoked", crl)
	}
	for k, want := range map[string]string{
		"kind": "authentication", "code": "Unauthenticated", "peer": "participant " + daemon.DevCourt,
		"method": "/kurier.v1.MailboxService/ListInbox", "cert_serial": "0x" + court.Cert.SerialNumber.Text(16),
	} {
		if refused[k] != want {
			t.Errorf("refusal %s = %v, want %q", k, refused[k], want)
		}
	}
	if r, _ := refused["reason"].(string); !strings.Contains(r, "revoked") {
		t.Errorf("refusal reason %q does not say the certificate is revoked", r)
	}
}
