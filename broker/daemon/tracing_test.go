package daemon_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"

	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"kurier.dev/kurier/broker/daemon"
)

// TestRun_Tracing: with OTEL_EXPORTER_OTLP_ENDPOINT set, the node sends a
// span of each call it serves to that OTLP collector, under the service
// name kurierd, by the time it has stopped.
func TestRun_Tracing(t *testing.T) {
	var mu sync.Mutex
	var spans []string
	var services []string
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/traces" {
			http.NotFound(w, r)
			return
		}
		body, err := io.ReadAll(r.Body)
		var req coltrace.ExportTraceServiceRequest
		if err == nil {
			err = proto.Unmarshal(body, &req)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		for _, rs := range req.GetResourceSpans() {
			for _, kv := range rs.GetResource().GetAttributes() {
				if kv.GetKey() == "service.name" {
					services = append(services, kv.GetValue().GetStringValue())
				}
			}
			for _, ss := range rs.GetScopeSpans() {
				for _, s := range ss.GetSpans() {
					spans = append(spans, s.GetName())
				}
			}
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
		b, _ := proto.Marshal(&coltrace.ExportTraceServiceResponse{})
		w.Write(b)
	}))
	defer collector.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.URL)
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")

	dir := t.TempDir()
	cfg, err := daemon.Dev(dir, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	node := startRun(t, cfg, &logBuffer{})
	addr := node.addr
	c, _ := dialDev(ctx, t, dir, "court", addr, cfg.CRL)
	if _, err := c.Inbox(ctx); err != nil {
		t.Fatal(err)
	}
	c.Close()
	node.stop(t)
	mu.Lock()
	defer mu.Unlock()
	if !slices.Contains(spans, "kurier.v1.MailboxService/ListInbox") {
		t.Errorf("the collector got spans %q, none of the ListInbox call", spans)
	}
	if len(services) == 0 || slices.ContainsFunc(services, func(s string) bool { return s != "kurierd" }) {
		t.Errorf("spans came from services %q, want kurierd", services)
	}
}
