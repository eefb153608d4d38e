// Package loadgen drives a Kurier node with many messages and measures
// what it sustains: submissions per second, whole lifecycles (submit,
// fetch, acknowledgement) per second, submission latency percentiles, the
// node's and its own CPU and memory per message, and the bound the
// machine's signature and RSA costs set. It seals every message before the
// timed phase, so the figures show the node and not the sealing.
package loadgen

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"kurier.dev/kurier/client"
	"kurier.dev/kurier/pki"
)

// Mode is what the timed phase does with each message.
type Mode string

const (
	// Submit times durable submissions: each worker submits a sealed
	// message and waits for the node's receipt.
	Submit Mode = "submit"
	// Lifecycle times submit, fetch by the recipient and the recipient's
	// signed acknowledgement, one message after the other per worker.
	Lifecycle Mode = "lifecycle"
)

// DefaultTimeout bounds a run when Config.Timeout is zero.
const DefaultTimeout = 5 * time.Minute

// Config is one run.
type Config struct {
	Node      string        // host:port of the node under load
	Sender    *pki.Identity // submits the messages
	Recipient *pki.Identity // fetches and acknowledges them (Lifecycle)
	To        string        // the recipient's address
	Messages  int           // how many messages
	Size      int           // bytes of the one document each carries
	// Concurrency is how many workers submit (and fetch) at once.
	Concurrency int
	Mode        Mode
	// Open makes the recipient decrypt and verify each message as a real
	// recipient does (client.Check) before acknowledging it. Without it the
	// recipient checks the payload against the envelope's digest only and
	// acknowledges, standing for a recipient system that opens elsewhere
	// (it speaks the MailboxService itself: the client acknowledges only
	// what it opened).
	Open bool
	// NodePID, if not zero, is the node's process, whose CPU time and peak
	// memory are read from /proc.
	NodePID int
	// Timeout bounds the whole run, sealing included (DefaultTimeout if
	// zero); at its end the run reports what was done.
	Timeout time.Duration
	// CRL, if set, is the CRL file to check the node's and signers'
	// certificates against (client.WithCRL); else the node's CRL is used.
	CRL string
}

func (c *Config) check() error {
	switch {
	case c.Sender == nil:
		return errors.New("bench: no sender identity")
	case c.To == "":
		return errors.New("bench: no recipient address; give --to ADDR")
	case c.Messages <= 0:
		return fmt.Errorf("bench: --messages must be positive, not %d", c.Messages)
	case c.Size < 0 || c.Size > client.MaxPayload:
		return fmt.Errorf("bench: --size must be between 0 and %d bytes", client.MaxPayload)
	case c.Concurrency <= 0:
		return fmt.Errorf("bench: --concurrency must be positive, not %d", c.Concurrency)
	case c.Timeout < 0:
		return errors.New("bench: --timeout must not be negative")
	}
	switch c.Mode {
	case Submit:
	case Lifecycle:
		if c.Recipient == nil {
			return errors.New("bench: lifecycle needs the recipient's identity; give --recipient-id DIR")
		}
	default:
		return fmt.Errorf("bench: unknown mode %q; give submit or lifecycle", c.Mode)
	}
	return nil
}

// Result is what a run measured. Its JSON form is the output of
// kurier bench --json; fields that could not be measured are null.
type Result struct {
	Mode        Mode `json:"mode"`
	Open        bool `json:"open"`
	Messages    int  `json:"messages"`
	Size        int  `json:"size"`
	Concurrency int  `json:"concurrency"`

	Sealed     int     `json:"sealed"`                // messages sealed before the timed phase
	Submitted  int     `json:"submitted"`             // submissions the node accepted
	Lifecycles int     `json:"lifecycles"`            // messages fetched and acknowledged (Lifecycle)
	Errors     int     `json:"errors"`                // operations that failed (not those cut off by the timeout)
	FirstError string  `json:"first_error,omitempty"` // the first of them, for a person to act on
	TimedOut   bool    `json:"timed_out"`             // the timeout ended the run before all messages were done
	ElapsedS   float64 `json:"elapsed_s"`             // length of the timed phase

	SubmitPerS     float64 `json:"submit_per_s"`
	LifecyclePerS  float64 `json:"lifecycle_per_s"`
	SubmitP50Ms    float64 `json:"submit_p50_ms"`
	SubmitP99Ms    float64 `json:"submit_p99_ms"`
	LifecycleP50Ms float64 `json:"lifecycle_p50_ms"`
	LifecycleP99Ms float64 `json:"lifecycle_p99_ms"`

	NodeCPUUsPerMsg  *float64 `json:"node_cpu_us_per_msg"`
	NodePeakRSSBytes *int64   `json:"node_peak_rss_bytes"`
	SelfCPUUsPerMsg  *float64 `json:"self_cpu_us_per_msg"`
	SelfPeakRSSBytes *int64   `json:"self_peak_rss_bytes"`

	Costs
}

// Run seals cfg.Messages messages, measures the machine's signature and RSA
// costs, then runs the timed phase and returns what it measured. It
// returns an error only if the run could not start (bad configuration, no
// connection, a failed calibration); failed messages are counted in
// Result.Errors.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	timeout := cfg.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	res := &Result{Mode: cfg.Mode, Open: cfg.Open, Messages: cfg.Messages, Size: cfg.Size, Concurrency: cfg.Concurrency}
	costs, err := Measure(cfg.Sender, cfg.Recipient)
	if err != nil {
		return nil, err
	}
	res.Costs = costs.For(cfg.Mode, cfg.Open)

	// Each submission is tried once: a retry would hide in the latencies
	// the node's rate limit or failures, which are what a run should show.
	opts := []client.Option{client.WithRetry(0)}
	if cfg.CRL != "" {
		opts = append(opts, client.WithCRL(cfg.CRL))
	}
	sender, err := client.Dial(ctx, cfg.Node, cfg.Sender, opts...)
	if err != nil {
		return nil, fmt.Errorf("bench: connect the sender: %w", err)
	}
	defer sender.Close()
	var rcpt recipient
	if cfg.Mode == Lifecycle {
		if rcpt, err = dialRecipient(ctx, cfg, opts); err != nil {
			return nil, err
		}
		defer rcpt.Close()
	}

	sealed, err := seal(ctx, sender, cfg)
	res.Sealed = len(sealed)
	defer func() {
		for _, s := range sealed {
			s.Close() // a payload over 4 MiB is in a temporary file
		}
	}()
	if err != nil && ctx.Err() == nil {
		return nil, err
	}

	t := &tally{lifecycles: cfg.Mode == Lifecycle}
	nodeBefore, nodeErr := readProcCPU(cfg.NodePID)
	selfBefore, selfErr := selfUsage()
	start := time.Now()
	t.runAll(ctx, cfg.Concurrency, sender, rcpt, sealed)
	elapsed := time.Since(start)

	res.Submitted, res.Lifecycles, res.Errors, res.FirstError = len(t.submit), len(t.lifecycle), t.errors, t.firstError
	res.TimedOut = ctx.Err() != nil && t.done() < cfg.Messages
	res.ElapsedS = elapsed.Seconds()
	if s := elapsed.Seconds(); s > 0 {
		res.SubmitPerS = float64(res.Submitted) / s
		res.LifecyclePerS = float64(res.Lifecycles) / s
	}
	res.SubmitP50Ms, res.SubmitP99Ms = percentileMs(t.submit, 50), percentileMs(t.submit, 99)
	res.LifecycleP50Ms, res.LifecycleP99Ms = percentileMs(t.lifecycle, 50), percentileMs(t.lifecycle, 99)

	done := t.done()
	if nodeErr == nil {
		if after, err := readProcCPU(cfg.NodePID); err == nil && done > 0 {
			res.NodeCPUUsPerMsg = ptr(float64((after - nodeBefore).Microseconds()) / float64(done))
		}
		if rss, err := readProcPeakRSS(cfg.NodePID); err == nil {
			res.NodePeakRSSBytes = &rss
		}
	}
	if selfErr == nil {
		if after, err := selfUsage(); err == nil {
			if done > 0 {
				res.SelfCPUUsPerMsg = ptr(float64((after.cpu - selfBefore.cpu).Microseconds()) / float64(done))
			}
			res.SelfPeakRSSBytes = &after.peakRSS
		}
	}
	return res, nil
}

// dialRecipient connects the recipient of a lifecycle run: the client,
// which opens each message, or with cfg.Open unset the digest checker.
func dialRecipient(ctx context.Context, cfg Config, opts []client.Option) (recipient, error) {
	var r recipient
	var addr string
	if cfg.Open {
		cl, err := client.Dial(ctx, cfg.Node, cfg.Recipient, opts...)
		if err != nil {
			return nil, fmt.Errorf("bench: connect the recipient: %w", err)
		}
		r, addr = opener{cl}, cl.Address()
	} else {
		d, err := dialDigestChecker(cfg.Node, cfg.Recipient, cfg.CRL)
		if err != nil {
			return nil, err
		}
		r, addr = d, d.addr
	}
	if addr != cfg.To {
		r.Close()
		return nil, fmt.Errorf("bench: the recipient identity is %s, but the messages go to %s", addr, cfg.To)
	}
	return r, nil
}

func ptr[T any](v T) *T { return &v }

// seal seals the run's messages, cfg.Concurrency at a time, and returns
// those sealed before an error or the end of ctx.
func seal(ctx context.Context, cl *client.Client, cfg Config) ([]*client.Sealed, error) {
	data := make([]byte, cfg.Size)
	rand.Read(data)
	out := make([]*client.Sealed, cfg.Messages)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	next := make(chan int)
	for range cfg.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				s, err := cl.Seal(ctx, client.Message{
					To:        []string{cfg.To},
					Subject:   fmt.Sprintf("kurier bench %d/%d", i+1, cfg.Messages),
					Documents: []client.Document{{Name: "bench.bin", Data: data}},
				})
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = fmt.Errorf("bench: seal message %d: %w", i+1, err)
				}
				out[i] = s
				mu.Unlock()
			}
		}()
	}
	for i := range cfg.Messages {
		mu.Lock()
		stop := firstErr != nil
		mu.Unlock()
		if stop || ctx.Err() != nil {
			break
		}
		next <- i
	}
	close(next)
	wg.Wait()
	done := slices.DeleteFunc(out, func(s *client.Sealed) bool { return s == nil })
	return done, firstErr
}

// tally collects the outcomes of the timed phase from all workers.
type tally struct {
	mu         sync.Mutex
	submit     []time.Duration // latency of each accepted submission
	lifecycle  []time.Duration // latency of each whole lifecycle
	lifecycles bool            // the run is a Lifecycle run
	errors     int
	firstError string
}

// runAll takes the sealed messages through the timed phase, workers at
// once, until all are done or ctx ends.
func (t *tally) runAll(ctx context.Context, workers int, sender *client.Client, rcpt recipient, sealed []*client.Sealed) {
	work := make(chan *client.Sealed)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for s := range work {
				t.run(ctx, sender, rcpt, s)
			}
		}()
	}
	defer wg.Wait()
	defer close(work)
	for _, s := range sealed {
		select {
		case work <- s:
		case <-ctx.Done():
			return
		}
	}
}

// run takes one sealed message through the timed phase: submit, and with a
// recipient fetch and acknowledge.
func (t *tally) run(ctx context.Context, sender *client.Client, rcpt recipient, s *client.Sealed) {
	start := time.Now()
	r, err := sender.Submit(ctx, s, nil)
	if err != nil {
		t.fail(ctx, fmt.Errorf("submit %s: %w", s.ID, err))
		return
	}
	submitted := time.Since(start)
	t.mu.Lock()
	t.submit = append(t.submit, submitted)
	t.mu.Unlock()
	if rcpt == nil {
		return
	}
	if err := rcpt.take(ctx, r.MessageID); err != nil {
		t.fail(ctx, err)
		return
	}
	total := time.Since(start)
	t.mu.Lock()
	t.lifecycle = append(t.lifecycle, total)
	t.mu.Unlock()
}

// fail counts err, unless the run's end cut the operation off.
func (t *tally) fail(ctx context.Context, err error) {
	if ctx.Err() != nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.errors++
	if t.firstError == "" {
		t.firstError = err.Error()
	}
}

// done is how many messages went all the way through the timed phase.
func (t *tally) done() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.lifecycles {
		return len(t.lifecycle)
	}
	return len(t.submit)
}

// percentileMs is the p-th percentile of d in milliseconds, exactly, by
// the nearest-rank method over the sorted latencies; 0 if d is empty.
func percentileMs(d []time.Duration, p int) float64 {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	rank := (p*len(s) + 99) / 100 // ceil(p/100 · n)
	return float64(s[max(rank, 1)-1]) / float64(time.Millisecond)
}
