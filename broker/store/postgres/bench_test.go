package postgres_test

import (
	"context"
	"encoding/hex"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/broker/store/postgres"
	"kurier.dev/kurier/broker/store/postgres/pgtest"
	"kurier.dev/kurier/envelope"
)

// BenchmarkCreateMessage measures what a submission to one local
// recipient stores, as broker/store's benchmark of the same name does: a
// message, one copy and two evidence of 1 KiB (reported as 4 records),
// committed with fsync on. It runs with 1 and 8 concurrent writers in one
// process (one pool), and 8 writers split over two processes (two pools);
// "unlogged" is the same with the evidence marked as another node's, so
// that nothing is appended to the log: the difference is what the
// serialised append under the log's row lock costs.
func BenchmarkCreateMessage(b *testing.B) {
	for _, c := range []struct {
		name              string
		processes, writer int
		unlogged          bool
	}{
		{"writers=1", 1, 1, false},
		{"writers=8", 1, 8, false},
		{"processes=2/writers=8", 2, 8, false},
		{"unlogged/writers=1", 1, 1, true},
		{"unlogged/writers=8", 1, 8, true},
	} {
		b.Run(c.name, func(b *testing.B) { benchCreate(b, c.processes, c.writer, c.unlogged) })
	}
}

func benchCreate(b *testing.B, processes, writers int, unlogged bool) {
	ctx := context.Background()
	dsn := pgtest.DSN(b)
	var stores []*postgres.Store
	for range processes {
		st, err := postgres.Open(ctx, dsn, postgres.WithLogger(slog.New(slog.DiscardHandler)), postgres.WithMaxConns(int32(writers)))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(st.Close)
		stores = append(stores, st)
	}
	tmpl := newFixture(b, stores[0])
	blobs := putBlobs(b, dsn, b.N, tmpl.msg.Header.PayloadSize, tmpl.msg.Header.PayloadSHA256)
	der := randomBytes(1024)
	var next atomic.Int64
	create := func(st *postgres.Store) bool {
		i := int(next.Add(1)) - 1
		if i >= b.N {
			return false
		}
		m, copies, evs := benchMessage(b, tmpl, blobs[i], der, unlogged)
		if _, err := st.CreateMessage(ctx, m, copies, evs, nil); err != nil {
			b.Error(err)
			return false
		}
		return true
	}
	b.ResetTimer()
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for create(stores[w%processes]) {
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N*4)/b.Elapsed().Seconds(), "records/s")
}

// benchMessage makes a message like tmpl with a fresh id and the blob.
func benchMessage(b *testing.B, tmpl fixture, blob string, der []byte, unlogged bool) (*broker.Message, []broker.Copy, []broker.Evidence) {
	f, err := envelope.NewID()
	if err != nil {
		b.Fatal(err)
	}
	m := *tmpl.msg
	h := *m.Header
	h.ID, m.Header, m.Blob = f, &h, blob
	c := tmpl.copies[0]
	c.MessageID = f
	evs := []broker.Evidence{
		{MessageID: f, Sender: sender, Type: "SubmissionAcceptance", DER: der},
		{MessageID: f, Sender: sender, Recipient: court, Type: "Delivery", DER: der},
	}
	if unlogged {
		for i := range evs {
			evs[i].Log, evs[i].LeafIndex = "amtsgericht.example/log", uint64(i)
		}
	}
	return &m, []broker.Copy{c}, evs
}

// putBlobs stores n complete blobs with the given size and digest
// directly, outside the timed part, so that the benchmark measures
// CreateMessage only (the benchmark never reads them).
func putBlobs(b *testing.B, dsn string, n int, size int64, sum string) []string {
	b.Helper()
	conn := connect(b, dsn)
	ids := make([]string, n)
	rows := make([][]any, n)
	for i := range ids {
		ids[i] = hex.EncodeToString(randomBytes(16))
		rows[i] = []any{ids[i], true, size, sum}
	}
	if _, err := conn.CopyFrom(context.Background(), pgx.Identifier{"blobs"}, []string{"id", "complete", "size", "sha256"}, pgx.CopyFromRows(rows)); err != nil {
		b.Fatal(err)
	}
	return ids
}
