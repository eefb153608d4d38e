package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/envelope"
)

// The benchmarks use the production options. One operation is what a
// submission to one local recipient stores: a message, one copy and two
// evidence (SubmissionAcceptance, Delivery) of 1 KiB each, reported as
// 4 records.

const recordsPerMessage = 4

func openBench(b *testing.B) *DB {
	b.Helper()
	db, err := Open(b.TempDir(), Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	return db
}

// benchMessages makes messages from a template, each with a fresh id and
// the blob it is given.
type benchMessages struct {
	tmpl fixture
	der  []byte
}

func newBenchMessages(b *testing.B, payload broker.Blob) *benchMessages {
	return &benchMessages{tmpl: buildFixture(b, payload, t0, court), der: randomBytes(b, 1024)}
}

func (bm *benchMessages) next(b *testing.B, blob string) (*broker.Message, []broker.Copy, []broker.Evidence) {
	id, err := envelope.NewID()
	if err != nil {
		b.Fatal(err)
	}
	m := *bm.tmpl.msg
	h := *m.Header
	h.ID, m.Header, m.Blob = id, &h, blob
	c := bm.tmpl.copies[0]
	c.MessageID = id
	return &m, []broker.Copy{c}, []broker.Evidence{
		{MessageID: id, Sender: sender, Type: "SubmissionAcceptance", DER: bm.der},
		{MessageID: id, Sender: sender, Recipient: court, Type: "Delivery", DER: bm.der},
	}
}

// putBlobs stores n complete blobs of payload directly, outside the timed
// part, so that the CreateMessage benchmark measures CreateMessage only.
func putBlobs(b *testing.B, db *DB, n int, payload []byte) (broker.Blob, []string) {
	b.Helper()
	sum := sha256.Sum256(payload)
	hv, err := json.Marshal(blobHeader{Started: time.Now().UTC(), Complete: true, Size: int64(len(payload)), SHA256: hex.EncodeToString(sum[:])})
	if err != nil {
		b.Fatal(err)
	}
	wb := db.bdb.NewWriteBatch()
	ids := make([]string, n)
	for i := range ids {
		ids[i] = newBlobID()
		if err := wb.Set(blobChunkKey(ids[i], 0), payload); err != nil {
			b.Fatal(err)
		}
		if err := wb.Set(blobHeaderKey(ids[i]), hv); err != nil {
			b.Fatal(err)
		}
	}
	if err := wb.Flush(); err != nil {
		b.Fatal(err)
	}
	return broker.Blob{ID: ids[0], Size: int64(len(payload)), SHA256: sum}, ids
}

func reportRecords(b *testing.B) {
	b.ReportMetric(float64(b.N*recordsPerMessage)/b.Elapsed().Seconds(), "records/s")
}

func BenchmarkCreateMessage(b *testing.B) {
	ctx := context.Background()
	payload := make([]byte, 1024)
	run := func(b *testing.B, parallel bool) {
		db := openBench(b)
		tmpl, blobs := putBlobs(b, db, b.N, payload)
		bm := newBenchMessages(b, tmpl)
		var next atomic.Int64
		create := func() {
			m, copies, evs := bm.next(b, blobs[next.Add(1)-1])
			if _, err := db.CreateMessage(ctx, m, copies, evs, nil); err != nil {
				b.Error(err)
			}
		}
		b.ResetTimer()
		if parallel {
			b.SetParallelism(32)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					create()
				}
			})
		} else {
			for range b.N {
				create()
			}
		}
		b.StopTimer()
		reportRecords(b)
	}
	b.Run("serial", func(b *testing.B) { run(b, false) })
	b.Run("parallel", func(b *testing.B) { run(b, true) })
}

// BenchmarkSyncedTxn is the baseline without the committer: each request
// writes the same keys and values as CreateMessage in its own synced badger
// transaction (with no reads or checks at all, and stand-in hashes for the
// log's nodes).
func BenchmarkSyncedTxn(b *testing.B) {
	payload := make([]byte, 1024)
	run := func(b *testing.B, parallel bool) {
		db := openBench(b)
		tmpl, _ := putBlobs(b, db, 1, payload)
		bm := newBenchMessages(b, tmpl)
		var size atomic.Uint64
		hash := randomBytes(b, 32)
		write := func() {
			m, copies, evs := bm.next(b, tmpl.ID)
			id := m.ID()
			mv, _ := json.Marshal(m)
			cv, _ := json.Marshal(copies[0])
			ev0, _ := encodeEvidence(evs[0])
			ev1, _ := encodeEvidence(evs[1])
			n := size.Add(2) // leaves n-2 and n-1; n-2 is even
			err := db.bdb.Update(func(txn *badger.Txn) error {
				for _, kv := range [][2][]byte{
					{messageKey(id), mv},
					{blobRefKey(newBlobID()), []byte(id)},
					{copyKey(id, court), cv},
					{inboxKey(court, copies[0].Received, id), nil},
					{evidenceKey(id, 0), evidenceValue(n-2, ev0)},
					{leafKey(n - 2), evidenceKey(id, 0)},
					{treeNodeKey(0, n-2), hash},
					{evidenceKey(id, 1), evidenceValue(n-1, ev1)},
					{leafKey(n - 1), evidenceKey(id, 1)},
					{treeNodeKey(0, n-1), hash},
					{treeNodeKey(1, (n-2)/2), hash},
					{logSizeKey, encodeSeq(n)},
				} {
					if err := txn.Set(kv[0], kv[1]); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				b.Error(err)
			}
		}
		b.ResetTimer()
		if parallel {
			b.SetParallelism(32)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					write()
				}
			})
		} else {
			for range b.N {
				write()
			}
		}
		b.StopTimer()
		reportRecords(b)
	}
	b.Run("serial", func(b *testing.B) { run(b, false) })
	b.Run("parallel", func(b *testing.B) { run(b, true) })
}

// BenchmarkSubmit is the store's whole share of a submission: a 1 KiB
// payload through WriteBlob, then CreateMessage, from 16 goroutines (as
// many as kurier bench's default senders), with badger's memtable (whose
// write-ahead log every commit syncs) at the default size and smaller.
// Besides the time it reports the synced commits per submission
// (commits/op) and the CPU the process spent (cpu-µs/op, the kernel's
// share of each sync included).
func BenchmarkSubmit(b *testing.B) {
	for _, mem := range []int64{defaultMemTableSize, 16 << 20} {
		b.Run(fmt.Sprintf("memtable=%dMiB", mem>>20), func(b *testing.B) {
			benchSubmit(b, Options{MemTableSize: mem})
		})
	}
}

func benchSubmit(b *testing.B, opts Options) {
	ctx := context.Background()
	opts.Logger = slog.New(slog.DiscardHandler)
	db, err := Open(b.TempDir(), opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	payload := randomBytes(b, 1024)
	tmpl, _ := putBlobs(b, db, 1, payload)
	bm := newBenchMessages(b, tmpl)
	commits := db.commits.Load()
	cpu := processCPU(b)
	b.ResetTimer()
	b.SetParallelism(8) // × GOMAXPROCS 2 on the machines the figures come from
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			blob, err := db.WriteBlob(ctx, bytes.NewReader(payload), 1<<20)
			if err != nil {
				b.Error(err)
				return
			}
			m, copies, evs := bm.next(b, blob.ID)
			if _, err := db.CreateMessage(ctx, m, copies, evs, nil); err != nil {
				b.Error(err)
			}
		}
	})
	b.StopTimer()
	reportRecords(b)
	b.ReportMetric(float64(db.commits.Load()-commits)/float64(b.N), "commits/op")
	b.ReportMetric(float64((processCPU(b)-cpu).Microseconds())/float64(b.N), "cpu-µs/op")
}

// processCPU is the user and system CPU time the process has used.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func BenchmarkWriteBlob(b *testing.B) {
	ctx := context.Background()
	db := openBench(b)
	data := randomBytes(b, 8<<20)
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for range b.N {
		if _, err := db.WriteBlob(ctx, bytes.NewReader(data), 1<<30); err != nil {
			b.Fatal(err)
		}
	}
}
