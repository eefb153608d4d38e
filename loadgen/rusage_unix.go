//go:build unix

package loadgen

import (
	"runtime"
	"syscall"
	"time"
)

// usage is this process's CPU time so far and its peak resident memory.
type usage struct {
	cpu     time.Duration
	peakRSS int64
}

func selfUsage() (usage, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return usage{}, err
	}
	cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	rss := int64(ru.Maxrss) << 10 // kilobytes on Linux and the BSDs
	if runtime.GOOS == "darwin" {
		rss = int64(ru.Maxrss) // bytes on macOS
	}
	return usage{cpu: cpu, peakRSS: rss}, nil
}
