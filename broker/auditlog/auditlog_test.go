package auditlog_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"kurier.dev/kurier/broker/auditlog"
)

// TestLog_LinesWhole: events recorded at once from many goroutines, and
// by two processes' worth of logs on one file, come out as whole JSON
// lines with the fixed keys, in UTC.
func TestLog_LinesWhole(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit", "audit.jsonl")
	var logs []*auditlog.Log
	for range 2 {
		l, err := auditlog.Open(path, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		l.SetClock(func() time.Time { return time.Date(2026, 12, 2, 10, 0, 0, 0, time.FixedZone("CET", 3600)) })
		logs = append(logs, l)
	}
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Go(func() {
			logs[i%2].Record(auditlog.EventRefused, slog.String("kind", "authentication"), slog.Int("n", i))
		})
	}
	wg.Wait()
	for _, l := range logs {
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
	}
	var nilLog *auditlog.Log
	nilLog.Record(auditlog.EventStart) // a node without an audit log
	if err := nilLog.Close(); err != nil {
		t.Fatal(err)
	}

	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	seen := map[float64]bool{}
	for sc := bufio.NewScanner(f); sc.Scan(); {
		var e struct {
			Time  string  `json:"time"`
			Event string  `json:"event"`
			Kind  string  `json:"kind"`
			N     float64 `json:"n"`
			Level *string `json:"level"`
		}
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		if e.Time != "2026-12-02T09:00:00Z" || e.Event != auditlog.EventRefused || e.Kind != "authentication" || e.Level != nil {
			t.Fatalf("line %q", sc.Text())
		}
		seen[e.N] = true
	}
	if len(seen) != 200 {
		t.Fatalf("%d distinct events read back, want 200", len(seen))
	}
}

// TestLog_HandshakesBounded: refused handshakes are recorded up to a
// bound, so that a flood of bad connections cannot fill the disk; the
// next one recorded says how many were not. A connection that closed
// before saying anything is no refusal.
func TestLog_HandshakesBounded(t *testing.T) {
	var buf closingBuffer
	l := auditlog.New(&buf, slog.New(slog.DiscardHandler))
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	l.SetClock(func() time.Time { return now })
	remote := &net.TCPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 40000}
	refused := errors.New("tls: client certificate revoked")
	l.HandshakeFailed(remote, io.EOF) // a port probe
	for range 120 {
		l.HandshakeFailed(remote, refused)
	}
	now = now.Add(time.Second)
	l.HandshakeFailed(remote, refused)
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 51 {
		t.Fatalf("%d events recorded of 120 refusals at once and one a second later, want the burst of 50 and 1", len(lines))
	}
	if last := lines[50]; !strings.Contains(last, `"not_recorded_before":70`) || !strings.Contains(last, `"remote":"192.0.2.7:40000"`) {
		t.Fatalf("the event after the flood: %s", last)
	}
}

// closingBuffer is a bytes.Buffer that can be the log's file.
type closingBuffer struct{ bytes.Buffer }

func (*closingBuffer) Close() error { return nil }
