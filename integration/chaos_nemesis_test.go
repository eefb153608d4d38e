package integration

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"gopkg.in/yaml.v3"

	"kurier.dev/kurier/broker/diskspace"
	"kurier.dev/kurier/pki"
	kurierv1 "kurier.dev/kurier/proto/kurier/v1"
	"kurier.dev/kurier/tlog"
)

// links are the fault-injecting TCP proxies (toxiproxy, in process) that
// the two nodes of the fault run reach each other through: the city's
// node relays to the court's through one, and the court's node pushes
// evidence back through the other. Clients reach their nodes directly.
type links struct {
	t       *testing.T
	proxies []*toxiproxy.Proxy
}

// newLinks starts a proxy in front of each node of f and points the other
// node's peers entry at it. It must run before the nodes start.
func newLinks(t *testing.T, f *federation) *links {
	t.Helper()
	// The toxics log through zerolog's global logger.
	zerolog.SetGlobalLevel(zerolog.Disabled)
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	l := &links{t: t}
	for from, to := range map[string]string{stadt: amtsg, amtsg: stadt} {
		p := toxiproxy.NewProxy(srv, from+"-to-"+to, "127.0.0.1:0", f.addrs[to])
		if err := p.Start(); err != nil {
			t.Fatalf("start the proxy from %s to %s: %v", from, to, err)
		}
		t.Cleanup(p.Stop)
		cfg := filepath.Join(f.dir, from, "kurierd.yaml")
		b, err := os.ReadFile(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), f.addrs[to]) {
			t.Fatalf("%s names no peer address %s", cfg, f.addrs[to])
		}
		if err := os.WriteFile(cfg, []byte(strings.ReplaceAll(string(b), f.addrs[to], p.Listen)), 0o600); err != nil {
			t.Fatal(err)
		}
		l.proxies = append(l.proxies, p)
	}
	return l
}

// partition cuts both links: open connections are closed and new ones
// refused, until heal.
func (l *links) partition() {
	for _, p := range l.proxies {
		p.Stop()
	}
}

// heal ends a partition and removes every toxic.
func (l *links) heal() {
	for _, p := range l.proxies {
		p.Toxics.ResetToxics(context.Background())
		if err := p.Start(); err != nil && !strings.Contains(err.Error(), "already") {
			l.t.Errorf("restart proxy %s: %v", p.Name, err)
		}
	}
}

// toxic adds a toxic (toxiproxy's JSON form) to every link.
func (l *links) toxic(json string) {
	for _, p := range l.proxies {
		if _, err := p.Toxics.AddToxicJson(strings.NewReader(json)); err != nil {
			l.t.Errorf("add toxic %s to %s: %v", json, p.Name, err)
		}
	}
}

// nemesis injects the run's faults one after another, in an order and
// with durations drawn from rng, a short random gap apart.
func (c *chaosFederation) nemesis(ctx context.Context, t *testing.T, h *history, rng *rand.Rand, logs *logWatch) {
	var faults []string
	for kind, n := range map[string]int{"kill": *chaosKills, "pause": *chaosPauses, "partition": *chaosPartitions, "slow": *chaosSlow, "cut": *chaosCuts, "disk": *chaosDisks} {
		for range n {
			faults = append(faults, kind)
		}
	}
	faults = shuffled(rng, faults)
	between := func(lo, hi time.Duration) time.Duration { return lo + time.Duration(rng.Int64N(int64(hi-lo))) }
	for _, kind := range faults {
		pause(ctx, between(500*time.Millisecond, 3*time.Second))
		if ctx.Err() != nil {
			return
		}
		domain := []string{stadt, amtsg}[rng.IntN(2)]
		began := time.Now()
		switch kind {
		case "kill":
			logs.sample(ctx)
			c.nodes[domain].kill()
			pause(ctx, between(0, 2*time.Second))
			c.start(domain)
			logs.sample(ctx)
		case "pause":
			n := c.nodes[domain]
			n.cmd.Process.Signal(syscall.SIGSTOP)
			pause(ctx, between(time.Second, 4*time.Second))
			n.cmd.Process.Signal(syscall.SIGCONT)
		case "partition":
			domain = "link"
			c.links.partition()
			pause(ctx, between(2*time.Second, 6*time.Second))
			c.links.heal()
		case "slow":
			domain = "link"
			c.links.toxic(`{"type":"latency","stream":"downstream","attributes":{"latency":300,"jitter":200}}`)
			c.links.toxic(`{"type":"bandwidth","stream":"upstream","attributes":{"rate":256}}`)
			pause(ctx, between(3*time.Second, 6*time.Second))
			c.links.heal()
		case "cut":
			// Every connection over the link closes after this many bytes
			// of the relaying side: relays and pushes break mid-payload.
			domain = "link"
			c.links.toxic(fmt.Sprintf(`{"type":"limit_data","stream":"upstream","attributes":{"bytes":%d}}`, 16<<10+rng.IntN(400<<10)))
			pause(ctx, between(3*time.Second, 6*time.Second))
			c.links.heal()
		case "disk":
			domain = stadt
			c.fillDisk(t, func() { pause(ctx, between(3*time.Second, 6*time.Second)) })
		}
		h.fault(kind, domain, began)
		t.Logf("fault %s %s for %s", kind, domain, time.Since(began).Round(time.Millisecond))
	}
}

// heal ends every fault: the links are whole and both nodes run.
func (c *chaosFederation) heal(t *testing.T) {
	c.links.heal()
	for _, d := range []string{stadt, amtsg} {
		n := c.nodes[d]
		n.cmd.Process.Signal(syscall.SIGCONT)
		select {
		case <-n.exited:
			t.Logf("the node of %s had stopped; starting it", d)
			c.start(d)
		default:
		}
	}
}

func shuffled(rng *rand.Rand, s []string) []string {
	rng.Shuffle(len(s), func(i, j int) { s[i], s[j] = s[j], s[i] })
	return s
}

// logWatch keeps every checkpoint the nodes sign during the run, so that
// a log that lost or re-issued positions after a crash shows up as a
// checkpoint its last one is not consistent with.
type logWatch struct {
	mu    sync.Mutex
	c     *chaosFederation
	conns map[string]kurierv1.LogServiceClient
	keys  map[string]string // domain → the log's verifier key, as first served
	seen  map[string][][]byte
}

// watchLogs connects to both nodes' log services and samples them every
// second until ctx ends.
func (c *chaosFederation) watchLogs(ctx context.Context, t *testing.T) *logWatch {
	w := &logWatch{c: c, conns: map[string]kurierv1.LogServiceClient{}, keys: map[string]string{}, seen: map[string][][]byte{}}
	for d, mb := range map[string]string{stadt: poststelle, amtsg: amtsgEin} {
		id, err := pki.LoadIdentity(c.ids[mb])
		if err != nil {
			t.Fatal(err)
		}
		trust, err := pki.NewTrustStore(id.Roots, "")
		if err != nil {
			t.Fatal(err)
		}
		conn, err := grpc.NewClient(c.addrs[d], grpc.WithTransportCredentials(credentials.NewTLS(pki.ClientTLS(id, trust, d))))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		w.conns[d] = kurierv1.NewLogServiceClient(conn)
	}
	go func() {
		for ctx.Err() == nil {
			w.sample(ctx)
			pause(ctx, time.Second)
		}
	}()
	return w
}

// sample keeps each node's current checkpoint; a node that is down is
// skipped.
func (w *logWatch) sample(ctx context.Context) {
	for d, lc := range w.conns {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		resp, err := lc.GetCheckpoint(ctx, &kurierv1.GetCheckpointRequest{})
		cancel()
		if err != nil {
			continue
		}
		w.mu.Lock()
		if w.keys[d] == "" {
			w.keys[d] = resp.GetLogKey()
		}
		w.seen[d] = append(w.seen[d], resp.GetCheckpoint())
		w.mu.Unlock()
	}
}

// check proves every kept checkpoint consistent with each node's last
// one: same leaves, never fewer.
func (w *logWatch) check(ctx context.Context, t *testing.T) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for d, lc := range w.conns {
		resp, err := lc.GetCheckpoint(ctx, &kurierv1.GetCheckpointRequest{})
		if err != nil {
			t.Errorf("the last checkpoint of %s: %v", d, err)
			continue
		}
		last, err := tlog.Open(resp.GetCheckpoint(), w.keys[d])
		if err != nil {
			t.Errorf("the last checkpoint of %s does not verify with the log key it served first: %v", d, err)
			continue
		}
		checked := map[uint64]bool{}
		for _, signed := range w.seen[d] {
			older, err := tlog.Open(signed, w.keys[d])
			if err != nil {
				t.Errorf("a checkpoint of %s: %v", d, err)
				continue
			}
			if checked[older.Size] {
				continue
			}
			checked[older.Size] = true
			p, err := lc.GetConsistencyProof(ctx, &kurierv1.GetConsistencyProofRequest{FromSize: older.Size, ToSize: last.Size})
			if err == nil {
				err = tlog.VerifyConsistency(older, last, p.GetHashes())
			}
			if err != nil {
				t.Errorf("log of %s: the checkpoint of size %d signed during the run is not consistent with the last one (%d): %v", d, older.Size, last.Size, err)
			}
		}
		t.Logf("log of %s: %d checkpoints of %d sizes, all consistent with the last (%d leaves)", d, len(w.seen[d]), len(checked), last.Size)
	}
}

// retryCounter is a slog handler that counts the clients' retries (each
// logged at WARN) and drops every record.
type retryCounter struct{ n *atomic.Int64 }

func (r retryCounter) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (r retryCounter) Handle(context.Context, slog.Record) error {
	r.n.Add(1)
	return nil
}
func (r retryCounter) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r retryCounter) WithGroup(string) slog.Handler      { return r }

// The city node keeps chaosMinFree of its store's tmpfs free (the least a
// node may be configured with).
const chaosMinFree = 1 << 30

// chaosDiskSize is the size of the city node's tmpfs: the free space the
// alarm keeps, and room for the run's messages (a few KiB each, every 20th
// 300 KiB, with their evidence and badger's own files), so that the alarm
// is raised only by the nemesis.
func chaosDiskSize() int64 {
	return chaosMinFree + 512<<20 + int64(*chaosMessages)*64<<10
}

// fillDisk fills the city node's filesystem until less than its disk
// alarm's limit is free, runs hold, and frees it again. Submissions to the
// city are refused meanwhile; the node must not crash.
func (c *chaosFederation) fillDisk(t *testing.T, hold func()) {
	free, err := diskspace.Statfs(c.disk)
	if err != nil {
		t.Errorf("free space of %s: %v", c.disk, err)
		return
	}
	filler := filepath.Join(c.disk, "filler")
	if free > chaosMinFree {
		if err := writeZeros(filler, int64(free-chaosMinFree)+8<<20); err != nil {
			t.Errorf("fill %s: %v", c.disk, err)
		}
	}
	hold()
	if err := os.Remove(filler); err != nil && !os.IsNotExist(err) {
		t.Errorf("free %s: %v", c.disk, err)
	}
}

// writeZeros writes a file of n bytes (allocated, not sparse).
func writeZeros(path string, n int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	for n > 0 {
		k := min(n, int64(len(buf)))
		if _, err := f.Write(buf[:k]); err != nil {
			f.Close()
			return err
		}
		n -= k
	}
	return f.Close()
}

// setLimits sets keys of the limits section of the node config at path.
func setLimits(t *testing.T, path string, limits map[string]any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	l, _ := cfg["limits"].(map[string]any)
	if l == nil {
		l = map[string]any{}
	}
	maps.Copy(l, limits)
	cfg["limits"] = l
	if b, err = yaml.Marshal(cfg); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
