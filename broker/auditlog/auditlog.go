// Package auditlog records a node's security events as JSON lines in a
// file of their own, apart from its operational log (OWASP ASVS V7): calls
// refused for authentication, authorization or revocation, CRL changes
// the node sees, backups, restores, start-ups and stops. The operational
// log may be verbose and short-lived; this one is what an auditor or a
// SIEM reads, so each line is one event with fixed keys: time, event,
// and what the event names (peer, remote, method, code, reason, ...).
//
// It records no payloads, keys or message contents; reasons are the
// node's own refusal messages, which quote at most 64 escaped bytes of
// what a caller sent.
package auditlog

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Events, the value of the "event" key.
const (
	// EventRefused is a call the node refused; kind says why:
	// authentication (no usable certificate, revoked, CRL stale) or
	// authorization (a valid caller asking for what it may not).
	EventRefused = "call_refused"
	// EventCRL is a new CRL the node took up: its number, its
	// nextUpdate, and how many certificates it revokes.
	EventCRL = "crl_changed"
	// EventStart and EventStop are the node starting to serve and
	// stopping.
	EventStart = "node_started"
	EventStop  = "node_stopped"
	// EventBackup and EventRestore are a backup taken and a store
	// restored from one.
	EventBackup  = "backup"
	EventRestore = "restore"
)

// Log is an audit log. Its methods are safe for concurrent use; a nil
// *Log records nothing, for a node configured without one.
type Log struct {
	mu   sync.Mutex
	f    io.WriteCloser
	sl   *slog.Logger
	now  func() time.Time
	errs *slog.Logger // where a failed write is reported

	hsMu      sync.Mutex // guards the two below
	hsLimit   *rate.Limiter
	hsDropped int // refused handshakes over the limit since the last recorded
}

// Open appends to the audit log at path, creating it (mode 0600, and its
// folder 0700) if need be. logger, if not nil, is told of events that
// could not be written.
func Open(path string, logger *slog.Logger) (*Log, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	return New(f, logger), nil
}

// New writes the audit log to w, which Close closes.
func New(w io.WriteCloser, logger *slog.Logger) *Log {
	if logger == nil {
		logger = slog.Default()
	}
	l := &Log{f: w, now: time.Now, errs: logger}
	l.sl = slog.New(slog.NewJSONHandler(&reportingWriter{l: l}, &slog.HandlerOptions{
		// Every event is recorded; the level says nothing here.
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && (a.Key == slog.LevelKey) {
				return slog.Attr{}
			}
			if len(groups) == 0 && a.Key == slog.MessageKey {
				a.Key = "event"
			}
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Time(slog.TimeKey, a.Value.Time().UTC())
			}
			return a
		},
	}))
	return l
}

// SetClock replaces the clock that stamps events; for tests.
func (l *Log) SetClock(now func() time.Time) { l.now = now }

// Record writes one event with its attributes.
func (l *Log) Record(event string, attrs ...slog.Attr) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	r := slog.NewRecord(l.now(), slog.LevelInfo, event, 0)
	r.AddAttrs(attrs...)
	l.sl.Handler().Handle(context.Background(), r)
}

// Close closes the file.
func (l *Log) Close() error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return errors.New("audit log: closed twice")
	}
	err := l.f.Close()
	l.f = nil
	return err
}

// reportingWriter writes one JSON line, whole, and reports a failure in
// the operational log rather than dropping it silently. A line is one
// write(2) on an O_APPEND file, so lines of several processes do not mix.
type reportingWriter struct{ l *Log }

func (w *reportingWriter) Write(p []byte) (int, error) {
	if w.l.f == nil {
		w.l.errs.Error("audit event after the audit log was closed", slog.Int("bytes", len(p)))
		return len(p), nil
	}
	n, err := w.l.f.Write(p)
	if err != nil {
		w.l.errs.Error("cannot write the audit log", slog.Any("err", err))
	}
	return n, err
}
