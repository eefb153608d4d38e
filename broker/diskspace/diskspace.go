// Package diskspace is a node's disk alarm, like RabbitMQ's: below a set
// amount of free space on the filesystem of the store, the node takes no
// new messages (submissions, relayed messages), while fetching and
// acknowledging, which write little, keep working, so that recipients can
// still empty their mailboxes.
//
// # Why the headroom
//
// badger writes its write-ahead logs (.mem files) and value-log files
// (.vlog) through memory maps. Each is created sparse, truncated to twice
// its size (2 × MemTableSize, 2 × ValueLogFileSize) and mapped whole; a
// page first written when the filesystem has no block left for it kills
// the process with SIGBUS instead of returning an error. Only what is
// written takes space, so the alarm must keep free, beyond the payloads
// it lets in, what badger writes on its own:
//
//   - the active write-ahead log, at most 2 × MemTableSize (128 MiB with
//     the node's 64 MiB memtables);
//   - flushing the full memtables to level-0 tables, up to NumMemtables ×
//     MemTableSize (3 × 64 MiB);
//   - a level-0 compaction, whose new tables are written before the old
//     ones go: up to NumLevelZeroTablesStall × MemTableSize (15 × 64 MiB)
//     plus the overlapping level-1 tables;
//   - the small records of fetches, acknowledgements and evidence taken
//     while the alarm is raised.
//
// That is about 1.3 GiB; DefaultMin (2 GiB) leaves room beyond it, and
// MinFloor (1 GiB) is the least a node may be configured with.
// Payloads themselves are reserved (Reserve) before they are written, so
// uploads under way cannot together run past the limit.
package diskspace

import (
	"fmt"
	"log/slog"
	"sync"
	"syscall"
	"time"

	"kurier.dev/kurier/broker"
)

// Limits of the free space kept.
const (
	DefaultMin = 2 << 30
	MinFloor   = 1 << 30
)

// Interval is how often a node calls Check besides the calls of each new
// message, so that the alarm is raised and cleared (and logged) even while
// nobody sends.
const Interval = 5 * time.Second

// Alarm watches the free space of the filesystem holding Dir. Its methods
// are safe for concurrent use.
type Alarm struct {
	// Dir is a directory on the filesystem watched (the store's).
	Dir string
	// Min is the free space, in bytes, below which new messages are
	// refused.
	Min uint64
	// Free returns the bytes free for an unprivileged writer on dir's
	// filesystem; default Statfs. Tests inject their own.
	Free   func(dir string) (uint64, error)
	Logger *slog.Logger

	mu       sync.Mutex
	reserved uint64 // payload bytes let in but not yet stored
	raised   bool
}

// Statfs returns the bytes available to unprivileged writers on the
// filesystem holding dir (f_bavail × f_bsize).
func Statfs(dir string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("free space of %s: %w", dir, err)
	}
	return st.Bavail * uint64(st.Bsize), nil
}

// Check looks at the free space now and raises or clears the alarm; it
// returns an error wrapping broker.ErrNoSpace while the alarm is raised.
func (a *Alarm) Check() error {
	_, err := a.Reserve(0)
	return err
}

// Reserve asks for room for a payload of size bytes: it is refused with
// an error wrapping broker.ErrNoSpace if the free space, less what other
// payloads under way have reserved and less size, would be below Min.
// Otherwise it returns the function that gives the reservation back, to
// be called once the payload is stored (then the filesystem counts it) or
// dropped. If the free space cannot be read, the alarm stays as it was.
func (a *Alarm) Reserve(size int64) (release func(), err error) {
	free, ferr := a.free()
	a.mu.Lock()
	defer a.mu.Unlock()
	log := a.logger()
	if ferr != nil {
		log.Error("cannot read the free disk space; the disk alarm stays as it was", slog.Any(broker.LogErr, ferr))
	} else if below := free < a.Min+a.reserved; below != a.raised {
		a.raised = below
		if below {
			log.Warn("disk alarm raised: the node takes no new messages until there is room; fetch and acknowledge still work",
				slog.String("dir", a.Dir), slog.Uint64("free_bytes", free), slog.Uint64("reserved_bytes", a.reserved), slog.Uint64("min_free_bytes", a.Min))
		} else {
			log.Info("disk alarm cleared: the node takes new messages again", slog.String("dir", a.Dir), slog.Uint64("free_bytes", free), slog.Uint64("min_free_bytes", a.Min))
		}
	}
	need := uint64(max(size, 0))
	if a.raised || (ferr == nil && free < a.Min+a.reserved+need) {
		return nil, fmt.Errorf("%w (%s free, less %s for uploads under way, of the %s it keeps free); it takes no new messages until its operator makes room, try again later; fetch and acknowledge still work",
			broker.ErrNoSpace, mib(free), mib(a.reserved), mib(a.Min))
	}
	a.reserved += need
	return sync.OnceFunc(func() {
		a.mu.Lock()
		a.reserved -= need
		a.mu.Unlock()
	}), nil
}

// Raised reports whether the alarm is raised, as of the last look.
func (a *Alarm) Raised() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.raised
}

func (a *Alarm) free() (uint64, error) {
	if a.Free != nil {
		return a.Free(a.Dir)
	}
	return Statfs(a.Dir)
}

func (a *Alarm) logger() *slog.Logger {
	if a.Logger != nil {
		return a.Logger
	}
	return slog.Default()
}

// mib writes n bytes in MiB, for people.
func mib(n uint64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
