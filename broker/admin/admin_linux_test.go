package admin

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
)

// TestAuthzOtherUser: a connection of another user (as the kernel reports
// it) is refused before anything is backed up.
func TestAuthzOtherUser(t *testing.T) {
	h := &handler{b: refusing{}, log: slog.New(slog.DiscardHandler), uid: os.Getuid()}
	for name, ctx := range map[string]context.Context{
		"another user":      context.WithValue(context.Background(), peerKey{}, os.Getuid()+1),
		"unknown user":      context.WithValue(context.Background(), peerKey{}, -1),
		"not a unix socket": context.Background(),
	} {
		t.Run(name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			h.backup(rec, httptest.NewRequestWithContext(ctx, http.MethodPost, BackupPath, nil))
			if rec.Code != http.StatusForbidden || !strings.Contains(rec.Body.String(), "node's own user") {
				t.Errorf("answer %d %q, want 403 naming who may connect", rec.Code, rec.Body.String())
			}
		})
	}
	// The node's own user, as a real connection reports it, gets past it
	// (to the store's answer).
	db, dir := openStore(t)
	listen(t, dir, db)
	if _, err := Backup(context.Background(), dir, &strings.Builder{}); err != nil {
		t.Errorf("Backup as the node's own user: %v", err)
	}
}
