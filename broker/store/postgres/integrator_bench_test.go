package postgres_test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/broker/store/postgres"
	"kurier.dev/kurier/broker/store/postgres/pgtest"
	"kurier.dev/kurier/tlog"
)

// BenchmarkLogAppend compares two ways of keeping the log gap-free with
// several writers (docs/SCALING.md, "The log's append: serialised or
// integrated"):
//
//   - serial: the store as it is; CreateMessage appends its two evidence
//     to the log under the log_head row lock, inside its transaction.
//   - unlogged: the same transaction with the evidence marked as another
//     log's, so nothing is appended: what the writes cost without the log.
//   - integrated/<delay>: a prototype of an integrator, here only. Writers
//     run the unlogged transaction with the evidence marked pending (no
//     log lock); one integrator, elected by pg_try_advisory_lock, assigns
//     leaf indexes to all pending evidence in one transaction, with the
//     tree's nodes and head, every delay (poke: at once when a writer says
//     it committed).
//
// Every writer commits with synchronous_commit on. Reported: evidence
// appended to the log per second, counted until the last one has its leaf
// index durably, and the time from a call's start until its evidence's
// leaf index is durable (for serial: the call).
func BenchmarkLogAppend(b *testing.B) {
	type variant struct {
		name  string
		mode  string // serial, unlogged, integrated
		delay time.Duration
	}
	var vs []variant
	for _, w := range []int{1, 8, 32} {
		p := fmt.Sprintf("writers=%d/", w)
		vs = append(vs, variant{p + "serial", "serial", 0},
			variant{p + "unlogged", "unlogged", 0},
			variant{p + "integrated/poke", "integrated", 0},
			variant{p + "integrated/5ms", "integrated", 5 * time.Millisecond},
			variant{p + "integrated/20ms", "integrated", 20 * time.Millisecond})
	}
	for _, v := range vs {
		var writers int
		fmt.Sscanf(v.name, "writers=%d/", &writers)
		b.Run(v.name, func(b *testing.B) { benchLogAppend(b, writers, v.mode, v.delay) })
	}
}

// sampleWaits has the benchmark sample what the writers' backends wait
// for (pg_stat_activity), to see where the serialised append spends its
// time; the sampling costs CPU, so it is off for the rates.
var sampleWaits = flag.Duration("logappend.waits", 0, "BenchmarkLogAppend: sample the writers' wait events at this interval and report their shares")

// pendingLog marks evidence not yet integrated, in the prototype only.
const pendingLog = "pending.invalid/log"

func benchLogAppend(b *testing.B, writers int, mode string, delay time.Duration) {
	ctx := context.Background()
	dsn := pgtest.DSN(b)
	st, err := postgres.Open(ctx, dsn, postgres.WithLogger(slog.New(slog.DiscardHandler)), postgres.WithMaxConns(int32(writers)))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(st.Close)
	tmpl := newFixture(b, st)
	blobs := putBlobs(b, dsn, b.N, tmpl.msg.Header.PayloadSize, tmpl.msg.Header.PayloadSHA256)
	der := randomBytes(1024)
	var in *integrator
	if mode == "integrated" {
		conn := connect(b, dsn)
		if _, err := conn.Exec(ctx, "CREATE INDEX evidence_pending ON evidence (message_id, pos) WHERE log = '"+pendingLog+"'"); err != nil {
			b.Fatal(err)
		}
		in = newIntegrator(conn, delay)
		if err := in.elect(ctx); err != nil {
			b.Fatal(err)
		}
	}
	started := make([]time.Time, b.N)
	called := make([]time.Duration, b.N)
	ids := make([]string, b.N)
	var next atomic.Int64
	create := func() bool {
		i := int(next.Add(1)) - 1
		if i >= b.N {
			return false
		}
		m, copies, evs := benchMessage(b, tmpl, blobs[i], der, mode != "serial")
		if mode == "integrated" {
			for j := range evs {
				evs[j].Log = pendingLog
			}
		}
		ids[i], started[i] = m.ID(), time.Now()
		if _, err := st.CreateMessage(ctx, m, copies, evs, nil); err != nil {
			b.Error(err)
			return false
		}
		called[i] = time.Since(started[i])
		if in != nil {
			in.poke()
		}
		return true
	}
	b.ResetTimer()
	stopSampling := startWaitSampler(b, dsn)
	var ierr error
	idone := make(chan struct{})
	if in != nil {
		go func() {
			defer close(idone)
			ictx, cancel := context.WithTimeout(ctx, 5*time.Minute)
			defer cancel()
			ierr = in.run(ictx, 2*b.N)
		}()
	}
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			for create() {
			}
		})
	}
	wg.Wait()
	if in != nil {
		<-idone
	}
	b.StopTimer()
	stopSampling()
	if ierr != nil {
		b.Fatal(ierr)
	}
	if mode != "unlogged" {
		// The log holds every evidence once, and its nodes give a root.
		if n, err := st.LogSize(ctx); err != nil || n != uint64(2*b.N) {
			b.Fatalf("log size %d (%v), want %d", n, err, 2*b.N)
		}
		if _, err := st.LogRoot(ctx, uint64(2*b.N)); err != nil {
			b.Fatal(err)
		}
	}
	lat := called
	if in != nil {
		lat = make([]time.Duration, b.N)
		for i, id := range ids {
			lat[i] = in.done[id].Sub(started[i])
		}
	}
	slices.Sort(lat)
	b.ReportMetric(float64(2*b.N)/b.Elapsed().Seconds(), "appends/s")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "leaf-p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "leaf-p99-ms")
	if in != nil {
		b.ReportMetric(float64(2*b.N)/float64(in.batches), "evidence/batch")
	}
}

// integrator is the prototype: it owns a connection that holds the log's
// advisory lock and integrates pending evidence from it.
type integrator struct {
	conn   *pgx.Conn
	delay  time.Duration
	pokes  chan struct{}
	ranges *compact.RangeFactory

	done    map[string]time.Time // message id → when its leaf indexes were durable
	batches int
}

// integratorLock is the advisory lock's key: who holds it integrates.
const integratorLock = 0x6b75726965726c67

func newIntegrator(conn *pgx.Conn, delay time.Duration) *integrator {
	return &integrator{
		conn: conn, delay: delay, pokes: make(chan struct{}, 1),
		ranges: &compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren},
		done:   map[string]time.Time{},
	}
}

// elect takes the advisory lock for the connection's session; a second
// integrator would be refused until this connection ends.
func (in *integrator) elect(ctx context.Context) error {
	var ok bool
	if err := in.conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", int64(integratorLock)).Scan(&ok); err != nil {
		return fmt.Errorf("take the integrator lock: %w", err)
	}
	if !ok {
		return fmt.Errorf("another integrator holds the lock")
	}
	return nil
}

// poke tells the integrator that a writer committed pending evidence.
func (in *integrator) poke() {
	select {
	case in.pokes <- struct{}{}:
	default:
	}
}

// run integrates until want evidence are in the log.
func (in *integrator) run(ctx context.Context, want int) error {
	var tick <-chan time.Time
	if in.delay > 0 {
		t := time.NewTicker(in.delay)
		defer t.Stop()
		tick = t.C
	}
	for n := 0; n < want; {
		select {
		case <-ctx.Done():
			return fmt.Errorf("integrated %d of %d: %w", n, want, ctx.Err())
		case <-tick:
		case <-in.pokes:
			if in.delay > 0 {
				continue // the ticker decides when
			}
		}
		for {
			k, err := in.integrate(ctx)
			if err != nil {
				return err
			}
			n += k
			if k < maxBatch {
				break
			}
		}
	}
	return nil
}

// maxBatch bounds the evidence one integration takes.
const maxBatch = 4096

// integrate gives the pending evidence leaf indexes in one transaction
// and returns how many it did.
func (in *integrator) integrate(ctx context.Context) (int, error) {
	tx, err := in.conn.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback(ctx)
	var size int64
	var hashes [][]byte
	if err := tx.QueryRow(ctx, "SELECT size, hashes FROM log_head FOR UPDATE").Scan(&size, &hashes); err != nil {
		return 0, fmt.Errorf("read the log's head: %w", err)
	}
	tree, err := in.ranges.NewRange(0, uint64(size), hashes)
	if err != nil {
		return 0, err
	}
	rows, err := tx.Query(ctx, "SELECT message_id, pos, record FROM evidence WHERE log = $1 ORDER BY message_id, pos LIMIT $2", pendingLog, maxBatch)
	if err != nil {
		return 0, err
	}
	var msgs []string
	var poss, leaves []int64
	var levels []int16
	var idxs []int64
	var nodes [][]byte
	var id string
	var pos int64
	var rec []byte
	_, err = pgx.ForEachRow(rows, []any{&id, &pos, &rec}, func() error {
		var ev broker.Evidence
		if err := json.Unmarshal(rec, &ev); err != nil {
			return err
		}
		msgs, poss, leaves = append(msgs, id), append(poss, pos), append(leaves, int64(tree.End()))
		return tree.Append(tlog.LeafHash(ev.DER), func(n compact.NodeID, h []byte) {
			levels, idxs, nodes = append(levels, int16(n.Level)), append(idxs, int64(n.Index)), append(nodes, h)
		})
	})
	if err != nil || len(msgs) == 0 {
		return 0, err
	}
	bt := &pgx.Batch{}
	bt.Queue(`UPDATE evidence e SET log = '', leaf_index = u.leaf FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS u (id, pos, leaf)
		WHERE e.message_id = u.id AND e.pos = u.pos`, msgs, poss, leaves)
	bt.Queue("INSERT INTO log_nodes (level, idx, hash) SELECT * FROM unnest($1::smallint[], $2::bigint[], $3::bytea[])", levels, idxs, nodes)
	bt.Queue("UPDATE log_head SET size = $1, hashes = $2", int64(tree.End()), tree.Hashes())
	if err := tx.SendBatch(ctx, bt).Close(); err != nil {
		return 0, fmt.Errorf("integrate %d evidence: %w", len(msgs), err)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, err
	}
	now := time.Now()
	for _, m := range msgs {
		in.done[m] = now
	}
	in.batches++
	return len(msgs), nil
}

// startWaitSampler samples, every *sampleWaits, what the store's backends
// wait for, and returns the function that stops it and reports the share
// of samples in each class: lock (a row lock: the log's head), walsync
// (the commit's WAL flush and the wait for it), client (the backend waits
// for the next statement: Go and the network), cpu (running).
func startWaitSampler(b *testing.B, dsn string) func() {
	if *sampleWaits <= 0 {
		return func() {}
	}
	conn := connect(b, dsn)
	ctx, cancel := context.WithCancel(context.Background())
	counts := map[string]int{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(*sampleWaits)
		defer t.Stop()
		for range t.C {
			if ctx.Err() != nil {
				return
			}
			rows, err := conn.Query(ctx, `SELECT coalesce(wait_event_type, ''), coalesce(wait_event, '') FROM pg_stat_activity
				WHERE datname = current_database() AND backend_type = 'client backend' AND pid <> pg_backend_pid() AND state <> 'idle'`)
			if err != nil {
				return
			}
			var typ, ev string
			pgx.ForEachRow(rows, []any{&typ, &ev}, func() error {
				switch {
				case typ == "Lock":
					counts["lock"]++
				case ev == "WALSync" || ev == "WALWrite" || typ == "IPC" && ev == "SyncRep":
					counts["walsync"]++
				case typ == "Client":
					counts["client"]++
				case typ == "":
					counts["cpu"]++
				default:
					counts["other"]++
				}
				return nil
			})
		}
	}()
	return func() {
		cancel()
		<-done
		total := 0
		for _, n := range counts {
			total += n
		}
		if total == 0 {
			return
		}
		for _, k := range []string{"lock", "walsync", "client", "cpu", "other"} {
			b.ReportMetric(100*float64(counts[k])/float64(total), k+"-%")
		}
	}
}
