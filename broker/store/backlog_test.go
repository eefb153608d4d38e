package store

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"kurier.dev/kurier/broker"
)

// TestDB_Backlog: what an operator's alerts watch. Copies waiting to be
// fetched and answered, and messages waiting to be relayed, with the
// oldest of each; what is done does not count.
func TestDB_Backlog(t *testing.T) {
	ctx := context.Background()
	db := openTest(t, t.TempDir())
	got, err := db.Backlog(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(broker.Backlog{Queued: map[string]broker.Waiting{}}, got); diff != "" {
		t.Fatalf("an empty store's backlog (-want +got):\n%s", diff)
	}

	expiry := t0.Add(48 * time.Hour)
	// To the court's node: an older message (two recipients there, one
	// message in the queue) and a newer one.
	older := newFixture(t, db, t0.Add(time.Minute), court, "kanzlei@amtsgericht.example")
	older.relayed(t, court, courtDomain, expiry)
	older.relayed(t, "kanzlei@amtsgericht.example", courtDomain, expiry)
	newer := newFixture(t, db, t0.Add(time.Hour), court, amt)
	newer.relayed(t, court, courtDomain, expiry)
	// amt's copy of newer is local and delivered: unfetched since t0+1h.
	unfetched := newFixture(t, db, t0.Add(2*time.Hour), amt)
	retrieved := newFixture(t, db, t0.Add(3*time.Hour), amt)
	retrieved.copies[0].State = broker.StateRetrieved
	answered := newFixture(t, db, t0, amt)
	answered.copies[0].State = broker.StateAcknowledged
	rejected := newFixture(t, db, t0, amt)
	rejected.copies[0].State = broker.StateRejected
	kreisDone := newFixture(t, db, t0, kreis) // relayed and accepted: delivered there
	kreisDone.relayed(t, kreis, kreisDomain, expiry)
	kreisDone.copies[0].State, kreisDone.outbound = broker.StateDelivered, nil
	for _, f := range []fixture{older, newer, unfetched, retrieved, answered, rejected, kreisDone} {
		f.create(t, db)
	}

	got, err = db.Backlog(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := broker.Backlog{
		Queued:     map[string]broker.Waiting{courtDomain: {Count: 2, Oldest: t0.Add(time.Minute)}},
		Unfetched:  broker.Waiting{Count: 2, Oldest: t0.Add(time.Hour)},
		Unanswered: broker.Waiting{Count: 1, Oldest: t0.Add(3 * time.Hour)},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("backlog (-want +got):\n%s", diff)
	}
}
