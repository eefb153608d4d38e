package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"kurier.dev/kurier/broker/store/postgres/pgtest"
)

// TestRun_DevStoreDSNHidesPassword: kurierd -dev -store with a DSN that
// does not parse says so, and neither its error (which main prints to
// stderr) nor its output shows the DSN's password.
func TestRun_DevStoreDSNHidesPassword(t *testing.T) {
	const secret = "Pw4Leak-x9Q7"
	dir := t.TempDir()
	for _, dsn := range pgtest.BadDSNs(secret) {
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), []string{"-dev", "-data", dir, "-listen", "127.0.0.1:0", "-store", dsn}, &stdout, &stderr)
		if err == nil || !strings.Contains(err.Error(), "does not parse") {
			t.Fatalf("kurierd -dev -store %q = %v, want that the DSN does not parse", dsn, err)
		}
		if out := err.Error() + stdout.String() + stderr.String(); strings.Contains(out, secret) {
			t.Errorf("kurierd -dev -store %q shows the password:\n%s", dsn, out)
		}
	}
}
