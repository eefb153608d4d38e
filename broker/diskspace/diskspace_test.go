package diskspace_test

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/broker/diskspace"
)

// TestFaultAlarm_Injected drives the alarm with an injected free space:
// it is raised below the limit (logged at WARN) and cleared above it
// (INFO), reservations of uploads under way count against the free space
// until given back, and a free space that cannot be read leaves the alarm
// as it was.
func TestFaultAlarm_Injected(t *testing.T) {
	var logs bytes.Buffer
	free, ferr := uint64(1000), error(nil)
	a := &diskspace.Alarm{Dir: "/data", Min: 500, Free: func(string) (uint64, error) { return free, ferr },
		Logger: slog.New(slog.NewTextHandler(&logs, nil))}

	if err := a.Check(); err != nil || a.Raised() {
		t.Fatalf("Check with room = %v (raised %v)", err, a.Raised())
	}
	release, err := a.Reserve(400)
	if err != nil {
		t.Fatalf("Reserve(400) of 500 spare = %v", err)
	}
	if _, err := a.Reserve(200); !errors.Is(err, broker.ErrNoSpace) {
		t.Fatalf("Reserve(200) with 100 spare after a reservation = %v, want ErrNoSpace", err)
	}
	release()
	release() // once only
	if r, err := a.Reserve(200); err != nil {
		t.Fatalf("Reserve(200) after the release = %v", err)
	} else {
		r()
	}
	if logs.Len() != 0 {
		t.Fatalf("logged without a change of state: %s", logs.String())
	}

	free = 499
	err = a.Check()
	if !errors.Is(err, broker.ErrNoSpace) || !strings.Contains(err.Error(), "fetch and acknowledge still work") || !a.Raised() {
		t.Fatalf("Check below the limit = %v (raised %v)", err, a.Raised())
	}
	if !strings.Contains(logs.String(), "level=WARN msg=\"disk alarm raised") {
		t.Fatalf("raising logged %q, want a WARN", logs.String())
	}
	ferr, free = errors.New("statfs: EIO"), 10000
	if err := a.Check(); !errors.Is(err, broker.ErrNoSpace) {
		t.Fatalf("Check that cannot read the free space = %v, want the alarm kept", err)
	}
	ferr = nil
	logs.Reset()
	if err := a.Check(); err != nil || a.Raised() {
		t.Fatalf("Check with room again = %v (raised %v)", err, a.Raised())
	}
	if !strings.Contains(logs.String(), "level=INFO msg=\"disk alarm cleared") {
		t.Fatalf("clearing logged %q, want an INFO", logs.String())
	}
}

// TestFaultStatfs reads the free space of a real filesystem.
func TestFaultStatfs(t *testing.T) {
	if n, err := diskspace.Statfs(t.TempDir()); err != nil || n == 0 {
		t.Fatalf("Statfs = %d, %v", n, err)
	}
	if _, err := diskspace.Statfs("/no/such/dir"); err == nil {
		t.Fatal("Statfs of a missing directory succeeded")
	}
}
