//go:build !unix

package loadgen

import (
	"errors"
	"time"
)

// usage is this process's CPU time so far and its peak resident memory.
type usage struct {
	cpu     time.Duration
	peakRSS int64
}

func selfUsage() (usage, error) {
	return usage{}, errors.New("own CPU time and memory are measured on Unix only")
}
