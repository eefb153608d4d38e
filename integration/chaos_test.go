package integration

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"kurier.dev/kurier/broker/diskspace/diskspacetest"
	"kurier.dev/kurier/client"
	"kurier.dev/kurier/pki"
)

// The fault run's sizes. CI runs the defaults; the soak documented in
// docs/RELIABILITY.md runs, for example,
//
//	go test ./integration -run TestFault_Chaos -timeout 3h -v \
//	  -chaos.messages 10000 -chaos.kills 24 -chaos.partitions 12 -chaos.pauses 12
var (
	chaosMessages   = flag.Int("chaos.messages", 150, "fault run: messages to send")
	chaosSenders    = flag.Int("chaos.senders", 4, "fault run: concurrent senders")
	chaosKills      = flag.Int("chaos.kills", 3, "fault run: SIGKILLs of a node")
	chaosPauses     = flag.Int("chaos.pauses", 2, "fault run: SIGSTOP/SIGCONT pauses of a node")
	chaosPartitions = flag.Int("chaos.partitions", 2, "fault run: partitions between the nodes")
	chaosSlow       = flag.Int("chaos.slow", 1, "fault run: periods of a slow link between the nodes")
	chaosCuts       = flag.Int("chaos.cuts", 1, "fault run: periods in which the link is cut mid-payload")
	chaosDisks      = flag.Int("chaos.disks", 1, "fault run: periods in which the city node's disk is almost full")
	chaosSeed       = flag.Uint64("chaos.seed", 0, "fault run: the seed of its choices; 0 picks one (logged)")
)

// The fault run's mailboxes: the city's office sends to a court on another
// node (relayed) and to a local mailbox (delivered at once).
const kanzlei = "kanzlei@stadt.example"

// TestFault_Chaos drives concurrent senders and recipients against a
// federation of two real kurierd processes, linked through fault-injecting
// proxies, while a nemesis kills and pauses the nodes and partitions,
// slows and cuts the link between them. Senders seal each message once
// and submit the same bytes until they get a receipt (the client's retry,
// then a final resubmission of every submission that ended without an
// answer). At the end the checker classifies every message: each one the
// node accepted must have been fetched by its recipient exactly once, and
// nothing else; and every checkpoint a node signed during the run must be
// consistent with its last one.
func TestFault_Chaos(t *testing.T) {
	seed := *chaosSeed
	if seed == 0 {
		seed = rand.Uint64()
	}
	t.Logf("chaos seed %d (rerun with -chaos.seed %d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, seed>>1))
	budget := 5*time.Minute + time.Duration(*chaosMessages)*300*time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), budget)
	defer cancel()

	c := newChaosFederation(ctx, t)
	h := newHistory()
	logs := c.watchLogs(ctx, t)

	recvCtx, stopRecv := context.WithCancel(ctx)
	var recv sync.WaitGroup
	for _, mb := range []string{amtsgEin, kanzlei} {
		recv.Go(func() { c.receive(recvCtx, t, h, mb) })
	}
	nemesisDone := make(chan struct{})
	go func() {
		defer close(nemesisDone)
		c.nemesis(ctx, t, h, rng, logs)
	}()
	// Senders keep pace with the nemesis (whose faults and gaps take about
	// 5 s each), so that messages are under way during every fault.
	faults := *chaosKills + *chaosPauses + *chaosPartitions + *chaosSlow + *chaosCuts + *chaosDisks
	pace := time.Duration(faults) * 5 * time.Second / time.Duration(max(1, *chaosMessages / *chaosSenders))
	var send sync.WaitGroup
	for g := range *chaosSenders {
		send.Go(func() { c.send(ctx, t, h, g, pace) })
	}
	send.Wait()
	<-nemesisDone
	c.heal(t)
	c.resubmitPending(ctx, t, h)
	c.awaitDelivery(ctx, h)
	stopRecv()
	recv.Wait()
	logs.check(ctx, t)

	v := h.check()
	t.Logf("%s; %d client retries; %s", h.summary(), c.retries.Load(), v)
	if !v.clean() {
		t.Errorf("lost %v\nduplicated %v\nunexpected %v\nunresolved %v", v.Lost, v.Duplicated, v.Unexpected, v.Unresolved)
	}
	if len(v.OK) == 0 {
		t.Error("no message went through the fault run")
	}
}

// chaosFederation is the fault run's two nodes and the proxies between
// them.
type chaosFederation struct {
	*federation
	links    *links
	clients  map[string]*client.Client // by mailbox address
	sealedMu sync.Mutex
	sealed   map[string]*client.Sealed // by key, while its submission has no answer
	retries  atomic.Int64              // tries the clients repeated
	disk     string                    // the city node's store, on a filesystem of its own
}

func newChaosFederation(ctx context.Context, t *testing.T) *chaosFederation {
	f := newFederationOf(ctx, t, []string{stadt, amtsg}, []string{poststelle, kanzlei, amtsgEin})
	c := &chaosFederation{federation: f, links: newLinks(t, f), clients: map[string]*client.Client{}, sealed: map[string]*client.Sealed{}}
	// The run tests faults, not the rate limit: one office sends here as
	// fast as a whole agency would.
	for _, d := range []string{stadt, amtsg} {
		setLimits(t, filepath.Join(f.dir, d, "kurierd.yaml"), map[string]any{"messages_per_second": 1000, "message_burst": 1000, "min_free_bytes": chaosMinFree})
	}
	if *chaosDisks > 0 {
		c.disk = diskspacetest.Tmpfs(t, filepath.Join(f.dir, stadt, "store"), chaosDiskSize())
	}
	for _, d := range []string{stadt, amtsg} {
		f.start(d)
	}
	for _, mb := range []string{poststelle, kanzlei, amtsgEin} {
		id, err := pki.LoadIdentity(f.ids[mb])
		if err != nil {
			t.Fatal(err)
		}
		// The retry time outlasts a restart (up to ~10 s on a loaded
		// machine) and a partition, not the whole run: what is left
		// without an answer is resubmitted at the end.
		cl, err := client.Dial(ctx, f.addrs[domainOf(mb)], id, client.WithRetry(45*time.Second), client.WithLogger(slog.New(retryCounter{&c.retries})))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cl.Close() })
		c.clients[mb] = cl
	}
	return c
}

// send seals and submits the messages of sender g: every g-th of them,
// alternately to the court on the other node and to the local mailbox,
// every 20th one large enough to be relayed in several chunks; one every
// pace.
func (c *chaosFederation) send(ctx context.Context, t *testing.T, h *history, g int, pace time.Duration) {
	cl := c.clients[poststelle]
	for i := g; i < *chaosMessages && ctx.Err() == nil; i += *chaosSenders {
		key := fmt.Sprintf("m%05d", i)
		to := []string{amtsgEin, kanzlei}[i%2]
		size := 2 << 10
		if i%20 == 0 {
			size = 300 << 10
		}
		m := client.Message{To: []string{to}, Subject: "chaos " + key, Documents: []client.Document{{Name: key + ".bin", Data: chaosDoc(i, size)}}}
		var s *client.Sealed
		for s == nil && ctx.Err() == nil {
			var err error
			if s, err = cl.Seal(ctx, m); err != nil {
				t.Logf("seal %s: %v (sealing again)", key, err)
			}
		}
		if s == nil {
			return
		}
		h.sealed(key, s.ID, to)
		began := time.Now()
		c.submit(ctx, h, key, s)
		pause(ctx, pace-time.Since(began))
	}
}

// submit submits s once (with the client's retry) and records how it
// ended; a submission without an answer keeps s for the final round.
func (c *chaosFederation) submit(ctx context.Context, h *history, key string, s *client.Sealed) {
	_, err := c.clients[poststelle].Submit(ctx, s, nil)
	o := outcomeOf(err)
	h.submitted(key, o, err)
	c.sealedMu.Lock()
	defer c.sealedMu.Unlock()
	if o == sendPending {
		c.sealed[key] = s
	} else {
		delete(c.sealed, key)
	}
}

// outcomeOf classifies a submission's error as the sender must take it.
// A node that is out of room (its disk almost full) refuses for now, not
// for good: like a node that cannot be reached, the same sealed message is
// submitted again at the end.
func outcomeOf(err error) sendOutcome {
	var rej *client.RejectedError
	switch {
	case err == nil:
		return sendAccepted
	case errors.As(err, &rej):
		return sendRefused
	default:
		return sendPending
	}
}

// resubmitPending submits, once every node is up and linked, each sealed
// message whose submission ended without an answer, until it gets one or
// resubmitFor has passed; what is left is unresolved.
func (c *chaosFederation) resubmitPending(ctx context.Context, t *testing.T, h *history) {
	ctx, cancel := context.WithTimeout(ctx, resubmitFor)
	defer cancel()
	for _, key := range h.pending() {
		c.sealedMu.Lock()
		s := c.sealed[key]
		c.sealedMu.Unlock()
		for ctx.Err() == nil {
			c.submit(ctx, h, key, s)
			if !slices.Contains(h.pending(), key) {
				break
			}
			t.Logf("resubmit %s: still no receipt: %s", key, h.lastError(key))
			pause(ctx, time.Second)
		}
	}
}

// resubmitFor bounds the final resubmissions: every fault has ended by
// then, so a message still without a receipt after it is a failure.
const resubmitFor = 3 * time.Minute

// receive fetches and acknowledges every new message in mailbox until ctx
// ends, recording each one fetched. A message listed twice in one listing
// is recorded twice: the checker calls it duplicated.
func (c *chaosFederation) receive(ctx context.Context, t *testing.T, h *history, mailbox string) {
	cl := c.clients[mailbox]
	seen := map[string]bool{}
	dir := t.TempDir()
	for ctx.Err() == nil {
		entries, err := cl.Inbox(ctx)
		if err != nil {
			pause(ctx, 200*time.Millisecond)
			continue
		}
		listed := map[string]int{}
		for _, e := range entries {
			if listed[e.ID]++; listed[e.ID] == 2 {
				h.receivedMsg(mailbox, e.ID, strings.TrimPrefix(e.Subject, "chaos "))
			}
			if seen[e.ID] {
				continue
			}
			out, err := os.MkdirTemp(dir, "fetch")
			if err != nil {
				t.Error(err)
				return
			}
			fetched, err := cl.Fetch(ctx, e.ID, out)
			os.RemoveAll(out)
			if err != nil {
				continue // the node is down or paused: next round
			}
			seen[e.ID] = true
			h.receivedMsg(mailbox, e.ID, strings.TrimPrefix(e.Subject, "chaos "))
			cl.Acknowledge(ctx, fetched) // best effort: the checker counts fetches
		}
		pause(ctx, 100*time.Millisecond)
	}
}

// awaitDelivery waits until every accepted message has been fetched, or
// ctx ends; the checker then calls what is missing lost.
func (c *chaosFederation) awaitDelivery(ctx context.Context, h *history) {
	for ctx.Err() == nil {
		v := h.check()
		if len(v.Lost) == 0 {
			return
		}
		pause(ctx, 500*time.Millisecond)
	}
}

// chaosDoc is a document of size bytes that differs for every i.
func chaosDoc(i, size int) []byte {
	b := make([]byte, size)
	for j := range b {
		b[j] = byte(i*31 + j*7 + j/253)
	}
	return b
}

func pause(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
