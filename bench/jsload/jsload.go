// Package jsload measures the baseline Kurier's submission rate is held
// against: NATS JetStream with every publish fsynced before its PubAck
// (sync_interval: always). It starts a real nats-server in a child process
// (StartServer), creates a file-backed stream with one replica, and has
// concurrent publishers each publish and wait for the PubAck, as
// kurier bench --mode submit's workers each submit and wait for the
// receipt. Its Result has the keys of kurier bench's, named for
// publishing.
package jsload

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/procfs"
)

// DefaultTimeout bounds a run when Config.Timeout is zero.
const DefaultTimeout = 5 * time.Minute

// Stream and Subject are where the publishers publish.
const (
	Stream  = "KURIER_BENCH"
	Subject = "kurier.bench"
)

// Config is one run.
type Config struct {
	Messages    int  // how many messages
	Size        int  // bytes of each message's payload
	Concurrency int  // publishers at once, each waiting for its PubAck
	TLS         bool // mutual TLS 1.3 between the publishers and the server
	// StoreDir, if set, is the directory in which the run's JetStream
	// store is made (and removed at the end), to put it on the same disk
	// as the store of the Kurier node it is compared with; else the
	// system's temporary directory.
	StoreDir string
	// Timeout bounds the whole run, the server's start included
	// (DefaultTimeout if zero); at its end the run reports what was done.
	Timeout time.Duration
}

func (c *Config) check() error {
	switch {
	case c.Messages <= 0:
		return fmt.Errorf("jetstream bench: -messages must be positive, not %d", c.Messages)
	case c.Size < 0 || c.Size > maxPayload:
		return fmt.Errorf("jetstream bench: -size must be between 0 and %d bytes (the server's max_payload)", maxPayload)
	case c.Concurrency <= 0:
		return fmt.Errorf("jetstream bench: -concurrency must be positive, not %d", c.Concurrency)
	case c.Timeout < 0:
		return errors.New("jetstream bench: -timeout must not be negative")
	}
	return nil
}

// maxPayload is nats-server's default max_payload, less room for headers.
const maxPayload = 1<<20 - 1024

// Result is what a run measured. Its JSON form is the output of
// the jetstream bench with -json; fields that could not be measured are
// null.
type Result struct {
	Messages      int    `json:"messages"`
	Size          int    `json:"size"`
	Concurrency   int    `json:"concurrency"`
	TLS           bool   `json:"tls"`
	SyncAlways    bool   `json:"sync_always"` // as the running server reports its JetStream configuration
	ServerVersion string `json:"server_version"`

	Published  int     `json:"published"`             // publishes the server acknowledged
	Stored     *uint64 `json:"stored"`                // messages in the stream after the run (null if the run was cut off)
	Errors     int     `json:"errors"`                // publishes that failed (not those cut off by the timeout)
	FirstError string  `json:"first_error,omitempty"` // the first of them
	TimedOut   bool    `json:"timed_out"`             // the timeout (or a signal) ended the run before all messages were done
	ElapsedS   float64 `json:"elapsed_s"`             // length of the timed phase

	PublishPerS  float64 `json:"publish_per_s"`
	PublishP50Ms float64 `json:"publish_p50_ms"`
	PublishP99Ms float64 `json:"publish_p99_ms"`

	ServerCPUUsPerMsg  *float64 `json:"server_cpu_us_per_msg"` // the child's user+system CPU over the timed phase per acknowledged publish
	ServerPeakRSSBytes *int64   `json:"server_peak_rss_bytes"` // the child's VmHWM
	SelfCPUUsPerMsg    *float64 `json:"self_cpu_us_per_msg"`   // the same for the publishers' process
	SelfPeakRSSBytes   *int64   `json:"self_peak_rss_bytes"`   // its VmHWM
}

// Run starts the server in a temporary directory, creates the stream,
// publishes cfg.Messages messages in the timed phase, stops the server and
// removes its store. It returns an error only if the run could not start
// or clean up; failed publishes are counted in Result.Errors.
func Run(ctx context.Context, cfg Config) (res *Result, err error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	timeout := cfg.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	dir, err := os.MkdirTemp("", "jsload-")
	if err != nil {
		return nil, fmt.Errorf("jetstream bench: %w", err)
	}
	defer os.RemoveAll(dir)
	store := dir
	if cfg.StoreDir != "" {
		if store, err = os.MkdirTemp(cfg.StoreDir, "jsload-store-"); err != nil {
			return nil, fmt.Errorf("jetstream bench: store: %w", err)
		}
		defer os.RemoveAll(store)
	}
	srv, err := StartServer(ctx, ServerConfig{Dir: dir, StoreDir: store, TLS: cfg.TLS})
	if err != nil {
		return nil, fmt.Errorf("jetstream bench: %w", err)
	}
	defer func() {
		if stopErr := srv.Stop(); stopErr != nil && err == nil {
			res, err = nil, fmt.Errorf("jetstream bench: %w", stopErr)
		}
	}()
	res = &Result{Messages: cfg.Messages, Size: cfg.Size, Concurrency: cfg.Concurrency, TLS: cfg.TLS}
	v, err := srv.Varz(ctx)
	if err != nil {
		return nil, fmt.Errorf("jetstream bench: %w", err)
	}
	res.ServerVersion = v.Version
	res.SyncAlways = v.JetStream.Config != nil && v.JetStream.Config.SyncAlways

	nc, err := srv.Connect()
	if err != nil {
		return nil, fmt.Errorf("jetstream bench: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream bench: %w", err)
	}
	stream, err := CreateStream(ctx, js)
	if err != nil {
		return nil, fmt.Errorf("jetstream bench: %w", err)
	}

	payload := make([]byte, cfg.Size)
	rand.Read(payload)
	serverBefore, serverErr := procCPU(srv.PID())
	selfBefore, selfErr := selfCPU()
	start := time.Now()
	t := Publish(ctx, js, cfg.Messages, cfg.Concurrency, payload)
	elapsed := time.Since(start)

	res.Published, res.Errors, res.FirstError = len(t.Latencies), t.Errors, t.FirstError
	res.TimedOut = ctx.Err() != nil && res.Published+res.Errors < cfg.Messages
	res.ElapsedS = elapsed.Seconds()
	if s := elapsed.Seconds(); s > 0 {
		res.PublishPerS = float64(res.Published) / s
	}
	res.PublishP50Ms, res.PublishP99Ms = percentileMs(t.Latencies, 50), percentileMs(t.Latencies, 99)
	if done := res.Published; done > 0 {
		if after, err := procCPU(srv.PID()); err == nil && serverErr == nil {
			res.ServerCPUUsPerMsg = usPerMsg(after-serverBefore, done)
		}
		if after, err := selfCPU(); err == nil && selfErr == nil {
			res.SelfCPUUsPerMsg = usPerMsg(after-selfBefore, done)
		}
	}
	res.ServerPeakRSSBytes, res.SelfPeakRSSBytes = peakRSS(srv.PID()), peakRSS(os.Getpid())

	if ctx.Err() == nil {
		info, err := stream.Info(ctx)
		if err != nil {
			return nil, fmt.Errorf("jetstream bench: stream state after the run: %w", err)
		}
		res.Stored = &info.State.Msgs
	}
	return res, nil
}

// CreateStream creates the file-backed stream of one replica the
// publishers publish to, with the server's default limits.
func CreateStream(ctx context.Context, js jetstream.JetStream) (jetstream.Stream, error) {
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name:     Stream,
		Subjects: []string{Subject},
		Storage:  jetstream.FileStorage,
		Replicas: 1,
	})
	if err != nil {
		return nil, fmt.Errorf("create stream %s: %w", Stream, err)
	}
	return s, nil
}

// Tally is what the publishers of a timed phase did.
type Tally struct {
	Latencies  []time.Duration // of each acknowledged publish
	Errors     int             // publishes that failed, not counting those cut off by ctx's end
	FirstError string
}

// Publish has concurrency publishers publish payload to Subject, messages
// times in all, each waiting for the PubAck before its next publish, until
// all are done or ctx ends. Each publish is tried once.
func Publish(ctx context.Context, js jetstream.JetStream, messages, concurrency int, payload []byte) *Tally {
	var (
		t    Tally
		mu   sync.Mutex
		wg   sync.WaitGroup
		next atomic.Int64
	)
	for range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for next.Add(1) <= int64(messages) && ctx.Err() == nil {
				start := time.Now()
				ack, err := js.Publish(ctx, Subject, payload)
				if err == nil && ack.Stream != Stream {
					err = fmt.Errorf("acknowledged by stream %q", ack.Stream)
				}
				if err != nil {
					if ctx.Err() == nil {
						mu.Lock()
						t.Errors++
						if t.FirstError == "" {
							t.FirstError = fmt.Sprintf("publish to %s: %v", Subject, err)
						}
						mu.Unlock()
					}
					continue
				}
				mine = append(mine, time.Since(start))
			}
			mu.Lock()
			t.Latencies = append(t.Latencies, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return &t
}

// procCPU is the user and system CPU time process pid has used, from
// /proc/PID/stat.
func procCPU(pid int) (time.Duration, error) {
	p, err := procfs.NewProc(pid)
	if err != nil {
		return 0, err
	}
	st, err := p.Stat()
	if err != nil {
		return 0, err
	}
	return time.Duration(st.CPUTime() * float64(time.Second)), nil
}

// selfCPU is the user and system CPU time this process has used, from
// getrusage, which counts in microseconds where /proc counts in ticks.
func selfCPU() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, err
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}

// usPerMsg is CPU time d in microseconds per message of done.
func usPerMsg(d time.Duration, done int) *float64 {
	us := float64(d.Microseconds()) / float64(done)
	return &us
}

// peakRSS is process pid's peak resident memory (VmHWM of
// /proc/PID/status) in bytes; nil if it could not be read.
func peakRSS(pid int) *int64 {
	p, err := procfs.NewProc(pid)
	if err != nil {
		return nil
	}
	st, err := p.NewStatus()
	if err != nil {
		return nil
	}
	rss := int64(st.VmHWM)
	return &rss
}

// percentileMs is the p-th percentile of d in milliseconds by the
// nearest-rank method, as kurier bench computes it; 0 if d is empty.
func percentileMs(d []time.Duration, p int) float64 {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	rank := (p*len(s) + 99) / 100 // ceil(p/100 · n)
	return float64(s[max(rank, 1)-1]) / float64(time.Millisecond)
}
