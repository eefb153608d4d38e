package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"kurier.dev/kurier/broker/store/postgres/pgnotify"
	"kurier.dev/kurier/broker/store/postgres/pgtest"
	"kurier.dev/kurier/client"
)

// The primary failover's load: failoverSenders × primaryPerSender
// messages; the primary is killed once primaryKillAfter have receipts.
const (
	primaryPerSender = 10
	primaryKillAfter = 10
)

// TestPostgres_Failover runs two kurierd -dev processes on a PostgreSQL
// primary with a synchronous streaming standby, through a DSN that names
// both servers with target_session_attrs=read-write. Senders send over
// both processes while the primary is killed with SIGKILL and the standby
// promoted; they submit the same sealed messages again until they have
// receipts. Every message is then in the court's inbox exactly once and
// fetches intact through the processes, which kept running through the
// failover; a subscriber on one hears of a message sent through the other
// (their listeners found the new primary); and the log is consistent
// with a checkpoint taken before the kill.
func TestPostgres_Failover(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	pair := pgtest.StartPair(t, pgtest.PairOptions{Synchronous: true})
	db := pair.CreateDatabase()
	dir := t.TempDir()
	dev := filepath.Join(dir, "dev")
	args := []string{"-listen", "127.0.0.1:0", "-store", pair.DSN(db)}
	a := startDevNodeArgs(t, dev, args)
	b := startDevNodeArgs(t, dev, args)
	agency, court := a.identity("agency"), a.identity("court")
	beforeKill := filepath.Join(dir, "before-kill.checkpoint")
	if _, err := b.run(ctx, court, "checkpoint", "-o", beforeKill); err != nil {
		t.Fatal(err)
	}

	both := a.addr + "," + b.addr
	ids, afterKill := sendThroughFailover(ctx, t, pair, both, agency)
	if t.Failed() {
		return
	}
	for _, n := range []*nodeProc{a, b} {
		select {
		case <-n.exited:
			t.Fatalf("kurierd on %s exited during the failover: %v\n%s", n.addr, n.cmd.ProcessState, n.logs)
		default:
		}
	}
	fetchEachOnce(ctx, t, both, court, ids, filepath.Join(dir, "eingang"))
	awaitListeners(ctx, t, pair.StandbyDSN(db), 2)
	subscribeAcross(ctx, t, a, b, dir)
	fresh := filepath.Join(dir, "fresh")
	os.MkdirAll(fresh, 0o755)
	exportAndVerify(ctx, t, b, agency, afterKill, beforeKill, fresh, "after-failover.zip")
}

// sendThroughFailover runs the senders over the addresses nodes, kills
// the primary once primaryKillAfter messages have receipts, waits until a
// call has failed for it, and promotes the standby. It returns the ids of
// all the messages by subject, and the id of one accepted after the
// promotion.
func sendThroughFailover(ctx context.Context, t *testing.T, pair *pgtest.Pair, nodes, agencyDir string) (map[string]string, string) {
	t.Helper()
	var retries, resubmits atomic.Int64
	sender := dialBoth(ctx, t, nodes, agencyDir, &retries)
	ids, afterKill := sendThroughFault(ctx, t, sender, "primary failover", primaryPerSender, primaryKillAfter, &resubmits, func() {
		failed := retries.Load() + resubmits.Load()
		killedAt := time.Now()
		pair.KillPrimary()
		awaitFailure(ctx, t, func() int64 { return retries.Load() + resubmits.Load() - failed })
		pair.Promote()
		t.Logf("killed the primary and promoted the standby %v later", time.Since(killedAt).Round(time.Millisecond))
	})
	t.Logf("%d receipts; the client retried %d calls, the senders resubmitted %d times", len(ids), retries.Load(), resubmits.Load())
	return ids, afterKill
}

// sendThroughFault runs failoverSenders senders that each send perSender
// messages with subjects "<prefix> <sender>-<i>" through cl, each until
// it has a receipt (sendUntilReceipt, counting in resubmits), and calls
// fault once killAfter have receipts, while the senders go on. It returns
// the ids of the messages with receipts by subject, and the id of one
// accepted after fault returned; a sender's error, a fault that never
// came, or no message accepted after it fail t.
func sendThroughFault(ctx context.Context, t *testing.T, cl *client.Client, prefix string, perSender, killAfter int, resubmits *atomic.Int64, fault func()) (map[string]string, string) {
	t.Helper()
	var mu sync.Mutex
	ids := map[string]string{}
	var afterFault string
	var faulted atomic.Bool
	var accepted atomic.Int64
	faultNow := make(chan struct{})
	var once sync.Once
	errs := make(chan error, failoverSenders*perSender)
	var wg sync.WaitGroup
	for g := range failoverSenders {
		wg.Go(func() {
			for i := range perSender {
				subject := fmt.Sprintf("%s %d-%02d", prefix, g, i)
				id, err := sendUntilReceipt(ctx, cl, subject, resubmits)
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				ids[subject] = id
				if faulted.Load() {
					afterFault = id
				}
				mu.Unlock()
				if accepted.Add(1) >= int64(killAfter) {
					once.Do(func() { close(faultNow) })
				}
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-faultNow:
		t.Logf("the fault after %d receipts", accepted.Load())
		fault()
		faulted.Store(true)
	case <-done:
		t.Errorf("the senders ended after %d receipts, before the fault", accepted.Load())
	}
	<-done
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if afterFault == "" && !t.Failed() {
		t.Error("no message was accepted after the fault; send more per sender")
	}
	return ids, afterFault
}

// awaitFailure waits up to 30 s until failures() counts a call that
// failed with the primary down, so that the senders meet the outage
// before the standby is promoted.
func awaitFailure(ctx context.Context, t *testing.T, failures func() int64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for failures() == 0 {
		if time.Now().After(deadline) {
			t.Error("no call failed within 30 s of the primary's death")
			return
		}
		pause(ctx, 20*time.Millisecond)
	}
}

// fetchEachOnce checks that the court's inbox through nodes holds each of
// ids (by subject) exactly once and nothing else, and fetches each intact.
func fetchEachOnce(ctx context.Context, t *testing.T, nodes, courtDir string, ids map[string]string, out string) {
	t.Helper()
	var none atomic.Int64
	receiver := dialBoth(ctx, t, nodes, courtDir, &none)
	inbox, err := receiver.Inbox(ctx)
	if err != nil {
		t.Fatalf("the court's inbox after the failover: %v", err)
	}
	count := map[string]int{}
	for _, e := range inbox {
		count[e.ID]++
	}
	for subject, id := range ids {
		if count[id] != 1 {
			t.Errorf("%q (%s) is %d times in the court's inbox, want once", subject, id, count[id])
			continue
		}
		delete(count, id)
		f, err := receiver.FetchWith(ctx, id, client.FetchOptions{Dir: out, PerMessage: true})
		if err != nil {
			t.Errorf("fetch %q: %v", subject, err)
			continue
		}
		if got, err := os.ReadFile(f.Files[0]); err != nil || string(got) != subject+"\n" {
			t.Errorf("fetched %q = %q (%v)", subject, got, err)
		}
	}
	if len(count) > 0 {
		t.Errorf("the court's inbox holds messages no one sent: %v", count)
	}
	if len(ids) != failoverSenders*primaryPerSender {
		t.Errorf("%d messages have receipts, want %d", len(ids), failoverSenders*primaryPerSender)
	}
}

// awaitListeners waits up to 30 s until want connections to the database
// at dsn listen for the processes' mailbox notices: the processes'
// listeners, which lost their connection with the primary, have
// connected to the new one.
func awaitListeners(ctx context.Context, t *testing.T, dsn string, want int) {
	t.Helper()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	deadline := time.Now().Add(30 * time.Second)
	var got int
	for {
		err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query = $1",
			"listen "+pgx.Identifier{pgnotify.Channel}.Sanitize()).Scan(&got)
		if err != nil {
			t.Fatal(err)
		}
		if got >= want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connections listen for notices on the new primary 30 s after the failover, want %d", got, want)
		}
		pause(ctx, 50*time.Millisecond)
	}
}
