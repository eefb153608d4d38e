package pgnotify

import (
	"testing"
	"time"
)

// TestBackoff: the listener's waits double from a second and stop at a
// minute, so that a database down for hours is tried, and the failure
// logged, once a minute.
func TestBackoff(t *testing.T) {
	for failures, want := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 6: 32 * time.Second, 7: time.Minute, 1000: time.Minute} {
		if got := backoff(failures); got != want {
			t.Errorf("backoff(%d) = %v, want %v", failures, got, want)
		}
	}
}
