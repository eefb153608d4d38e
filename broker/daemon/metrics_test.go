package daemon_test

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"gopkg.in/yaml.v3"

	"kurier.dev/kurier/broker/daemon"
	"kurier.dev/kurier/broker/diskspace"
	"kurier.dev/kurier/client"
)

// TestRun_Metrics runs a node with its metrics listener, sends, repeats,
// fetches and acknowledges through the client, and finds each step in
// what a Prometheus scrape reads, beside the gauges an operator alerts on.
func TestRun_Metrics(t *testing.T) {
	dir := t.TempDir()
	cfg, err := daemon.Dev(dir, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MetricsListener, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	// A peer that is never reached: its queue is reported, empty.
	cfg.Peers = map[string]string{"kreis-soest.example": "127.0.0.1:9"}
	base := "http://" + cfg.MetricsListener.Addr().String()
	ctx := context.Background()
	node := startRun(t, cfg, &logBuffer{})
	addr := node.addr
	agency, _ := dialDev(ctx, t, dir, "agency", addr, cfg.CRL)
	court, _ := dialDev(ctx, t, dir, "court", addr, cfg.CRL)

	msg := func(n int) client.Message {
		return client.Message{To: []string{daemon.DevCourt}, Subject: fmt.Sprintf("Klage %d", n),
			Documents: []client.Document{{Name: "klage.pdf", Data: []byte("%PDF-1.7 Klage")}}}
	}
	sealed, err := agency.Seal(ctx, msg(1))
	if err != nil {
		t.Fatal(err)
	}
	defer sealed.Close()
	first, err := agency.Submit(ctx, sealed, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := agency.Submit(ctx, sealed, nil); err != nil { // the same sealed message again
		t.Fatal(err)
	}
	if _, err := agency.Send(ctx, msg(2), nil); err != nil {
		t.Fatal(err)
	}
	f, err := court.Check(ctx, first.MessageID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := court.Acknowledge(ctx, f); err != nil {
		t.Fatal(err)
	}

	got := scrape(t, base+"/metrics")
	for _, w := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"kurier_submissions_total", map[string]string{"outcome": "accepted"}, 2},
		{"kurier_submissions_total", map[string]string{"outcome": "repeated"}, 1},
		{"kurier_submissions_total", map[string]string{"outcome": "forbidden"}, 0},
		{"kurier_evidence_stored_total", map[string]string{"type": "SubmissionAcceptance"}, 2},
		{"kurier_evidence_stored_total", map[string]string{"type": "Delivery"}, 2},
		{"kurier_evidence_stored_total", map[string]string{"type": "Retrieval"}, 1},
		{"kurier_evidence_stored_total", map[string]string{"type": "Acknowledgement"}, 1},
		{"kurier_evidence_stored_total", map[string]string{"type": "NonDelivery"}, 0},
		{"kurier_log_leaves", nil, 6},
		{"kurier_outbound_queued_messages", map[string]string{"domain": "kreis-soest.example"}, 0},
		{"kurier_outbound_oldest_age_seconds", map[string]string{"domain": "kreis-soest.example"}, 0},
		{"kurier_crl_warn_before_seconds", nil, daemon.DefaultCRLWarnBefore.Seconds()},
		{"kurier_crl_usable", nil, 1},
		{"kurier_disk_min_free_bytes", nil, float64(cmp.Or(cfg.Limits.MinFreeBytes, diskspace.DefaultMin))},
		{"kurier_mailbox_waiting_messages", map[string]string{"state": "unfetched"}, 1},
		{"kurier_mailbox_waiting_messages", map[string]string{"state": "unanswered"}, 0},
		{"kurier_mailbox_oldest_age_seconds", map[string]string{"state": "unanswered"}, 0},
		{"grpc_server_handled_total", map[string]string{"grpc_method": "Submit", "grpc_code": "OK"}, 3},
		{"grpc_server_handled_total", map[string]string{"grpc_method": "Acknowledge", "grpc_code": "OK"}, 1},
		{"grpc_server_handled_total", map[string]string{"grpc_method": "Reject", "grpc_code": "OK"}, 0},
	} {
		if v, ok := value(got, w.name, w.labels); !ok || v != w.want {
			t.Errorf("%s%v = %v (found %v), want %v", w.name, w.labels, v, ok, w.want)
		}
	}
	for _, w := range []struct {
		name     string
		labels   map[string]string
		min, max float64
	}{
		{"kurier_mailbox_oldest_age_seconds", map[string]string{"state": "unfetched"}, 0, 60},
		{"kurier_crl_next_update_seconds", nil, 3600, 400 * 24 * 3600},
		{"kurier_node_certificate_expiry_seconds", nil, 24 * 3600, 10 * 366 * 24 * 3600},
		{"kurier_disk_free_bytes", nil, 1, 1 << 62},
		{"go_goroutines", nil, 1, 1e6},
		{"process_resident_memory_bytes", nil, 1 << 20, 1 << 40},
	} {
		if v, ok := value(got, w.name, w.labels); !ok || v < w.min || v > w.max {
			t.Errorf("%s%v = %v (found %v), want within [%v, %v]", w.name, w.labels, v, ok, w.min, w.max)
		}
	}
	checkAlertRules(t, got)
	if h := got["grpc_server_handling_seconds"]; h == nil || h.GetType() != dto.MetricType_HISTOGRAM {
		t.Errorf("no latency histogram grpc_server_handling_seconds: %v", h)
	}

	for path, want := range map[string]int{"/healthz": http.StatusOK, "/readyz": http.StatusOK, "/metrics/../debug": http.StatusNotFound} {
		if code := get(t, base+path); code != want {
			t.Errorf("GET %s = %d, want %d", path, code, want)
		}
	}
	// A CRL file gone bad shows, once the node looks at it again (at most
	// a second later), as kurier_crl_usable 0.
	if err := os.WriteFile(cfg.CRL, []byte("not a CRL"), 0o644); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		if v, _ := value(scrape(t, base+"/metrics"), "kurier_crl_usable", nil); v == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("kurier_crl_usable still 1 10 s after the CRL file was damaged")
		}
	}
	node.stop(t)
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Error("the metrics listener still answers after the node stopped")
	}
}

// scrape reads a Prometheus text exposition.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v\n%s", url, resp.StatusCode, err, body)
	}
	var p expfmt.TextParser
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("parse the scrape: %v", err)
	}
	return fams
}

// value returns the value of the one series of name with the labels.
func value(fams map[string]*dto.MetricFamily, name string, labels map[string]string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range labels {
			if have[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Untyped != nil:
			return m.GetUntyped().GetValue(), true
		}
	}
	return 0, false
}

func get(t *testing.T, url string) int {
	t.Helper()
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// checkAlertRules: every metric the sample alert rules name is one the
// node exports, so that no alert watches a series that never comes.
func checkAlertRules(t *testing.T, exported map[string]*dto.MetricFamily) {
	t.Helper()
	b, err := os.ReadFile("../../deploy/prometheus/kurier-alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(b, &rules); err != nil {
		t.Fatal(err)
	}
	name := regexp.MustCompile(`\b(kurier|grpc_server)_[a-z_]+\b`)
	n := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			n++
			for _, m := range name.FindAllString(r.Expr, -1) {
				if exported[m] == nil {
					t.Errorf("alert %s watches %s, which the node does not export", r.Alert, m)
				}
			}
		}
	}
	if n < 8 {
		t.Errorf("the sample rules hold %d alerts", n)
	}
}
