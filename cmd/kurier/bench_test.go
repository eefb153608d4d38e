package main

import (
	"strings"
	"testing"

	"kurier.dev/kurier/broker/daemon"
)

// kurier bench --json prints one object with every figure, under the
// names the documentation gives.
func TestRun_BenchJSON(t *testing.T) {
	var out map[string]any
	kurierJSON(t, &out, append(as("agency"), "bench", "--to", daemon.DevCourt, "--recipient-id", daemon.DevIdentity(devDir, "court"),
		"--mode", "lifecycle", "--open", "--messages", "4", "--size", "100", "--concurrency", "2")...)
	for _, k := range []string{"mode", "open", "messages", "size", "concurrency", "sealed", "submitted", "lifecycles", "errors", "timed_out", "elapsed_s",
		"submit_per_s", "lifecycle_per_s", "submit_p50_ms", "submit_p99_ms", "lifecycle_p50_ms", "lifecycle_p99_ms",
		"node_cpu_us_per_msg", "node_peak_rss_bytes", "self_cpu_us_per_msg", "self_peak_rss_bytes",
		"sign_key", "sign_us", "verify_us", "rsa_key", "rsa_private_us", "cores", "ops_per_msg", "bound_per_s"} {
		if _, ok := out[k]; !ok {
			t.Errorf("no %q in %v", k, out)
		}
	}
	if out["errors"] != 0.0 || out["lifecycles"] != 4.0 || out["mode"] != "lifecycle" {
		t.Errorf("errors %v, lifecycles %v, mode %v; want 0, 4, lifecycle", out["errors"], out["lifecycles"], out["mode"])
	}

	summary := kurier(t, append(as("agency"), "bench", "--to", daemon.DevCourt, "--messages", "2", "--concurrency", "1")...)
	if !strings.Contains(summary, "submitted   2,") || !strings.Contains(summary, "bound") {
		t.Errorf("summary:\n%s", summary)
	}
	if _, err := try(t, append(as("agency"), "bench", "--to", daemon.DevCourt, "--mode", "lifecycle")...); err == nil || !strings.Contains(err.Error(), "--recipient-id") {
		t.Errorf("lifecycle without a recipient: %v; want a refusal naming --recipient-id", err)
	}
}
