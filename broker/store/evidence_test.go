package store

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/google/go-cmp/cmp"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/tlog"
)

func TestDB_Evidence_OtherLog(t *testing.T) {
	// Evidence that another node issued and relayed back (Log set) is
	// stored and chained with the leaf index that node gave it, but not
	// appended to this node's log. Each case stores some; the foreign one
	// always claims leaf index 1, which this node's own log also has.
	ctx := context.Background()
	origin := tlog.Origin(kreisDomain)
	foreign := func(s *broker.Step) {
		s.Evidence.Log, s.Evidence.LeafIndex = origin, 1
	}
	tests := []struct {
		name string
		// write stores the message of f (to court locally and relayed to
		// kreis) with evidence of the other log, and returns the evidence
		// as the store returned it, in the order stored.
		write func(t *testing.T, db *DB, f fixture) []broker.Evidence
	}{
		{"in CreateMessage", func(t *testing.T, db *DB, f fixture) []broker.Evidence {
			f.evs[2].Log, f.evs[2].LeafIndex = origin, 1 // kreis's Delivery
			return f.create(t, db)
		}},
		{"in AppendEvidence", func(t *testing.T, db *DB, f fixture) []broker.Evidence {
			evs := f.create(t, db)
			s := nextStep(t, f.copies[1], "Delivery", broker.StateDelivered)
			foreign(&s)
			return append(evs, appendStep(t, db, s))
		}},
		{"in FinishRelay", func(t *testing.T, db *DB, f fixture) []broker.Evidence {
			evs := f.create(t, db)
			acc := nextStep(t, f.copies[1], "RelayAcceptance", broker.StateRelaying)
			del := nextStep(t, acc.Next, "Delivery", broker.StateDelivered)
			foreign(&del)
			got, err := db.FinishRelay(ctx, kreisDomain, f.msg.ID(), []broker.Step{acc, del}, true)
			if err != nil {
				t.Fatalf("FinishRelay: %v", err)
			}
			return append(evs, got...)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			db := openTest(t, dir)
			f := newFixture(t, db, t0, court, kreis)
			f.relayed(t, kreis, kreisDomain, t0.Add(time.Hour))
			stored := tt.write(t, db, f)

			var own, others []broker.Evidence
			for _, ev := range stored {
				if ev.Log == "" {
					own = append(own, ev)
				} else {
					others = append(others, ev)
				}
			}
			if len(others) != 1 || others[0].Log != origin || others[0].LeafIndex != 1 {
				t.Fatalf("evidence of the other log as returned: %+v; want one of log %q with leaf index 1", others, origin)
			}
			for i, ev := range own {
				if ev.LeafIndex != uint64(i) {
					t.Errorf("own evidence %d (%s) has leaf index %d", i, ev.Type, ev.LeafIndex)
				}
			}
			if n := logSizeOf(t, db); n != uint64(len(own)) {
				t.Errorf("LogSize %d, want %d: only the node's own evidence is logged", n, len(own))
			}
			if diff := cmp.Diff(stored, evidenceOf(t, db, f.msg.ID())); diff != "" {
				t.Errorf("Evidence (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(dersOf(own), checkLog(t, db)); diff != "" {
				t.Errorf("log (-want +got):\n%s", diff)
			}
			if leaf, err := db.LogLeaf(ctx, 1); err != nil || leaf.Log != "" || !cmp.Equal(own[1], leaf) {
				t.Errorf("LogLeaf(1) = %+v, %v; want the node's own %+v", leaf, err, own[1])
			}

			// The next own evidence gets the next own leaf index, before
			// and after a reopen; another foreign one keeps its own.
			c, err := db.Copy(ctx, f.msg.ID(), court)
			if err != nil {
				t.Fatal(err)
			}
			retrieval := nextStep(t, *c, "Retrieval", broker.StateRetrieved)
			ret := appendStep(t, db, retrieval)
			if ret.LeafIndex != uint64(len(own)) {
				t.Errorf("own evidence after the other log's: leaf index %d, want %d", ret.LeafIndex, len(own))
			}
			stored, own = append(stored, ret), append(own, ret)

			db = reopen(t, db, dir)
			if diff := cmp.Diff(stored, evidenceOf(t, db, f.msg.ID())); diff != "" {
				t.Errorf("Evidence after reopen (-want +got):\n%s", diff)
			}
			rc, err := db.Copy(ctx, f.msg.ID(), kreis)
			if err != nil {
				t.Fatal(err)
			}
			s := nextStep(t, *rc, "Retrieval", broker.StateRetrieved)
			s.Evidence.Log, s.Evidence.LeafIndex = origin, 2
			fev := appendStep(t, db, s)
			if fev.LeafIndex != 2 || fev.Log != origin {
				t.Errorf("evidence of the other log after reopen: leaf index %d of %q, want 2 of %q", fev.LeafIndex, fev.Log, origin)
			}
			ack := appendStep(t, db, nextStep(t, retrieval.Next, "Acknowledgement", broker.StateAcknowledged))
			if ack.LeafIndex != uint64(len(own)) {
				t.Errorf("own evidence after reopen: leaf index %d, want %d", ack.LeafIndex, len(own))
			}
			stored, own = append(stored, fev, ack), append(own, ack)
			if diff := cmp.Diff(stored, evidenceOf(t, db, f.msg.ID())); diff != "" {
				t.Errorf("Evidence at the end (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(dersOf(own), checkLog(t, db)); diff != "" {
				t.Errorf("log after reopen (-want +got):\n%s", diff)
			}
			if _, err := db.LogLeaf(ctx, uint64(len(own))); !errors.Is(err, broker.ErrNotFound) {
				t.Errorf("LogLeaf beyond the own evidence: err %v, want ErrNotFound", err)
			}
		})
	}
}

func TestDB_Evidence_Order(t *testing.T) {
	// One message's evidence comes back in the order it was stored: across
	// many calls, with other messages' evidence in between, with evidence
	// of another log whose leaf indexes run backwards, and across reopens.
	dir := t.TempDir()
	db := openTest(t, dir)
	f := newFixture(t, db, t0, court, kreis)
	f.relayed(t, kreis, kreisDomain, time.Time{})
	want := f.create(t, db)
	other := newFixture(t, db, t0, court)
	other.create(t, db)
	copies := map[string]broker.Copy{court: f.copies[0], kreis: f.copies[1], "other": other.copies[0]}
	origin := tlog.Origin(kreisDomain)

	writes := []struct {
		rcpt, typ string
		leaf      uint64 // for evidence of kreis's log; 0 for the node's own
		reopen    bool   // reopen the store first
	}{
		{rcpt: kreis, typ: "Delivery", leaf: 900},
		{rcpt: court, typ: "Retrieval"},
		{rcpt: kreis, typ: "Retrieval", leaf: 17},
		{rcpt: court, typ: "Acknowledgement", reopen: true},
		{rcpt: kreis, typ: "Acknowledgement", leaf: 3, reopen: true},
		{rcpt: court, typ: "Expiry"},
	}
	for _, w := range writes {
		if w.reopen {
			db = reopen(t, db, dir) // outside t.Run: the store outlives the subtest
		}
		t.Run(w.typ+" for "+w.rcpt, func(t *testing.T) {
			s := nextStep(t, copies[w.rcpt], w.typ, copies[w.rcpt].State)
			if w.leaf != 0 {
				s.Evidence.Log, s.Evidence.LeafIndex = origin, w.leaf
			}
			want = append(want, appendStep(t, db, s))
			copies[w.rcpt] = s.Next
			// Another message's evidence in between.
			o := nextStep(t, copies["other"], "Retrieval", broker.StateRetrieved)
			appendStep(t, db, o)
			copies["other"] = o.Next

			if diff := cmp.Diff(want, evidenceOf(t, db, f.msg.ID())); diff != "" {
				t.Errorf("Evidence (-want +got):\n%s", diff)
			}
		})
	}
	db = reopen(t, db, dir)
	if diff := cmp.Diff(want, evidenceOf(t, db, f.msg.ID())); diff != "" {
		t.Errorf("Evidence after the last reopen (-want +got):\n%s", diff)
	}
	checkLog(t, db)
}

func TestDB_LogLeaf_OtherLog(t *testing.T) {
	// LogLeaf never returns evidence of another log, even where a damaged
	// leaf entry points at one that claims the same leaf index.
	db := openTest(t, "")
	f := newFixture(t, db, t0, court, kreis)
	f.relayed(t, kreis, kreisDomain, time.Time{})
	f.evs[2].Log, f.evs[2].LeafIndex = tlog.Origin(kreisDomain), 1
	evs := f.create(t, db) // own at leaves 0 and 1, then kreis's claiming 1
	if leaf, err := db.LogLeaf(context.Background(), 1); err != nil || !cmp.Equal(evs[1], leaf) {
		t.Fatalf("LogLeaf(1) = %+v, %v; want %+v", leaf, err, evs[1])
	}
	if err := db.bdb.Update(func(txn *badger.Txn) error {
		return txn.Set(leafKey(1), evidenceKey(f.msg.ID(), 2))
	}); err != nil {
		t.Fatal(err)
	}
	if leaf, err := db.LogLeaf(context.Background(), 1); err == nil {
		t.Errorf("LogLeaf(1) through a damaged leaf entry = %+v, want an error", leaf)
	}
}
