package store

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/envelope"
	"kurier.dev/kurier/tlog"
)

// dueModel is what Due should list: the copies as stored, by message id
// and recipient.
type dueModel map[[2]string]broker.Copy

func (m dueModel) set(c broker.Copy) { m[[2]string{c.MessageID, c.Recipient}] = c }

// due returns the copies with a deadline not after now, earliest first
// (ties in an arbitrary but fixed order), at most limit of them (0 for
// all).
func (m dueModel) due(now time.Time, limit int) []broker.Copy {
	var out []broker.Copy
	for _, c := range m {
		if !c.Deadline.IsZero() && !c.Deadline.After(now) {
			out = append(out, c)
		}
	}
	slices.SortFunc(out, compareDue)
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out
}

func compareDue(a, b broker.Copy) int {
	if c := a.Deadline.Compare(b.Deadline); c != 0 {
		return c
	}
	if c := strings.Compare(a.MessageID, b.MessageID); c != 0 {
		return c
	}
	return strings.Compare(a.Recipient, b.Recipient)
}

// withDeadline counts the copies that have a deadline.
func (m dueModel) withDeadline() int {
	n := 0
	for _, c := range m {
		if !c.Deadline.IsZero() {
			n++
		}
	}
	return n
}

// checkDue checks Due(now, limit) against the model: the same copies, and
// earliest first. Copies with the same deadline may come in any order, so
// the limits used must not split them.
func checkDue(t *testing.T, db *DB, m dueModel, now time.Time, limit int) []broker.Copy {
	t.Helper()
	got, err := db.Due(context.Background(), now, broker.Copy{}, limit)
	if err != nil {
		t.Fatalf("Due: %v", err)
	}
	// Page by page, one copy at a time, the same copies in the same order.
	var paged []broker.Copy
	for after := (broker.Copy{}); len(paged) < len(got); {
		page, err := db.Due(context.Background(), now, after, 1)
		if err != nil || len(page) != 1 {
			t.Fatalf("Due after %+v: %v (%v), want one copy", after, page, err)
		}
		paged = append(paged, page[0])
		after = page[0]
	}
	if limit == 0 && len(got) > 0 {
		if rest, err := db.Due(context.Background(), now, got[len(got)-1], 0); err != nil || len(rest) != 0 {
			t.Errorf("Due after the last: %v (%v), want none", rest, err)
		}
	}
	if diff := cmp.Diff(got, paged); diff != "" {
		t.Errorf("Due page by page (-all at once +paged):\n%s", diff)
	}
	for i := 1; i < len(got); i++ {
		if got[i].Deadline.Before(got[i-1].Deadline) {
			t.Errorf("Due: deadline %v listed after %v", got[i].Deadline, got[i-1].Deadline)
		}
	}
	want := m.due(now, limit)
	if diff := cmp.Diff(want, got, cmpopts.EquateEmpty(), cmpopts.SortSlices(func(a, b broker.Copy) bool { return compareDue(a, b) < 0 })); diff != "" {
		t.Errorf("Due(%v, %d) (-want +got):\n%s", now.Sub(t0), limit, diff)
	}
	return got
}

func TestDB_Due(t *testing.T) {
	ctx := context.Background()
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	dir := t.TempDir()
	db := openTest(t, dir)

	// a: court (due in an hour), kreis (relayed, due in two), amt (no
	// deadline); b: court, due in two hours like a's kreis; c: kreis, due
	// in three.
	a := newFixture(t, db, t0, court, kreis, amt)
	a.copies[0].Deadline = at(time.Hour)
	a.relayed(t, kreis, kreisDomain, at(2*time.Hour))
	b := newFixture(t, db, t0, court)
	b.copies[0].Deadline = at(2 * time.Hour)
	c := newFixture(t, db, t0, kreis)
	c.copies[0].Deadline = at(3 * time.Hour)
	model := dueModel{}
	for _, f := range []fixture{a, b, c} {
		f.create(t, db)
		for _, cp := range f.copies {
			model.set(cp)
		}
	}

	listings := []struct {
		name  string
		now   time.Time
		limit int
		n     int // copies listed
	}{
		{"nothing due yet", at(59 * time.Minute), 0, 0},
		{"a nanosecond before the deadline", at(time.Hour - 1), 0, 0},
		{"deadline equal to now is due", at(time.Hour), 0, 1},
		{"equal deadlines", at(2 * time.Hour), 0, 3},
		{"all", at(24 * time.Hour), 0, 4},
		{"limit", at(24 * time.Hour), 1, 1},
		{"limit after equal deadlines", at(24 * time.Hour), 3, 3},
		{"limit above the maximum", at(24 * time.Hour), MaxQueuePage + 1, 4},
		{"long before", at(-24 * time.Hour), 0, 0},
	}
	checkListings := func(t *testing.T, db *DB) {
		for _, l := range listings {
			t.Run(l.name, func(t *testing.T) {
				if got := checkDue(t, db, model, l.now, l.limit); len(got) != l.n {
					t.Errorf("Due listed %d copies, want %d", len(got), l.n)
				}
			})
		}
	}
	checkListings(t, db)

	// Steps move, clear and set deadlines; each leaves exactly one
	// deadline entry per copy that has a deadline.
	moves := []struct {
		name     string
		copy     broker.Copy
		deadline time.Time
		stale    bool // the step is refused: nothing moves
	}{
		{"moved later", a.copies[0], at(4 * time.Hour), false},
		{"moved earlier", a.copies[1], at(10 * time.Minute), false},
		{"cleared", b.copies[0], time.Time{}, false},
		{"set where there was none", a.copies[2], at(5 * time.Hour), false},
		{"kept", c.copies[0], at(3 * time.Hour), false},
		{"refused step moves nothing", a.copies[0], at(6 * time.Hour), true},
	}
	for _, mv := range moves {
		t.Run(mv.name, func(t *testing.T) {
			key := [2]string{mv.copy.MessageID, mv.copy.Recipient}
			old := model[key]
			s := nextStep(t, old, "Retrieval", broker.StateRetrieved)
			s.Next.Deadline = mv.deadline
			if mv.stale {
				s.PrevHead = "stale"
				before := dump(t, db)
				if _, err := db.AppendEvidence(ctx, s); !errors.Is(err, broker.ErrConflict) {
					t.Fatalf("AppendEvidence: err %v, want ErrConflict", err)
				}
				checkUnchanged(t, db, before)
			} else {
				appendStep(t, db, s)
				model.set(s.Next)
				if !old.Deadline.IsZero() && !old.Deadline.Equal(mv.deadline) && hasKey(t, db, dueKey(old.Deadline, old.MessageID, old.Recipient)) {
					t.Errorf("the entry for the old deadline %v is still there", old.Deadline.Sub(t0))
				}
				if !mv.deadline.IsZero() && !hasKey(t, db, dueKey(mv.deadline, old.MessageID, old.Recipient)) {
					t.Errorf("no entry for the new deadline %v", mv.deadline.Sub(t0))
				}
			}
			if n := countKeys(t, db, duePrefix); n != model.withDeadline() {
				t.Errorf("%d deadline entries, want %d", n, model.withDeadline())
			}
			checkDue(t, db, model, at(24*time.Hour), 0)
			checkDue(t, db, model, at(2*time.Hour), 0)
			got, err := db.Copy(ctx, old.MessageID, old.Recipient)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(model[key], *got); diff != "" {
				t.Errorf("Copy (-want +got):\n%s", diff)
			}
		})
	}

	listings = []struct {
		name  string
		now   time.Time
		limit int
		n     int
	}{
		{"moved earlier is due", at(10 * time.Minute), 0, 1},
		{"the old deadline no longer lists the moved copy", at(time.Hour), 0, 1},
		{"cleared is never due", at(3 * time.Hour), 0, 2},
		{"all", at(24 * time.Hour), 0, 4},
	}
	checkListings(t, db)
	db = reopen(t, db, dir)
	t.Run("after reopen", func(t *testing.T) { checkListings(t, db) })
}

// relayFixture is a message from sender to two recipients at the court's
// domain and one at kreis's, all relayed, each relaying until expiry.
func relayFixture(t *testing.T, db *DB, expiry time.Time) fixture {
	t.Helper()
	const court2 = "poststelle@amtsgericht.example"
	f := newFixture(t, db, t0, court, court2, kreis)
	f.relayed(t, court, courtDomain, expiry)
	f.relayed(t, court2, courtDomain, expiry)
	f.relayed(t, kreis, kreisDomain, expiry)
	return f
}

func TestDB_Outbound(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	db := openTest(t, dir)
	const (
		kreisDE  = "kreis-soest.example.de" // kreisDomain is a prefix of it
		kreisDER = "post@kreis-soest.example.de"
	)
	expiry := t0.Add(24 * time.Hour)
	m1 := newFixture(t, db, t0, kreis)
	m1.relayed(t, kreis, kreisDomain, expiry)
	m2 := relayFixture(t, db, expiry)
	m3 := newFixture(t, db, t0, court)
	m3.relayed(t, court, courtDomain, expiry)
	m3.outbound[0].Attempts, m3.outbound[0].LastError = 2, "connection refused" // stored as given
	m4 := newFixture(t, db, t0, kreisDER)
	m4.relayed(t, kreisDER, kreisDE, expiry)
	m5 := newFixture(t, db, t0, amt) // local only
	queued := map[string][]broker.Outbound{}
	for _, f := range []fixture{m1, m2, m3, m4, m5} {
		f.create(t, db)
		for _, o := range f.outbound {
			queued[o.Domain] = append(queued[o.Domain], o)
		}
	}
	for _, q := range queued {
		slices.SortFunc(q, func(a, b broker.Outbound) int { return strings.Compare(a.MessageID, b.MessageID) })
	}

	check := func(t *testing.T, db *DB) {
		court := queued[courtDomain]
		tests := []struct {
			name   string
			domain string
			after  string
			limit  int
			want   []broker.Outbound
		}{
			{"court's queue in id order", courtDomain, "", 0, court},
			{"kreis's queue", kreisDomain, "", 0, queued[kreisDomain]},
			{"limit", courtDomain, "", 1, court[:1]},
			{"the next page", courtDomain, court[0].MessageID, 1, court[1:]},
			{"after the last", courtDomain, court[1].MessageID, 0, nil},
			{"after an id not queued", courtDomain, "0", 0, court},
			{"a domain that extends another", kreisDE, "", 0, queued[kreisDE]},
			{"no queue", senderDomain, "", 0, nil},
			{"no domain", "", "", 0, nil},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				got, err := db.Outbound(ctx, tt.domain, tt.after, tt.limit)
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(tt.want, got, cmpopts.EquateEmpty()); diff != "" {
					t.Errorf("Outbound(%q, %d) (-want +got):\n%s", tt.domain, tt.limit, diff)
				}
			})
		}
	}
	if len(queued[courtDomain]) != 2 || len(queued[kreisDomain]) != 2 || len(queued[kreisDE]) != 1 {
		t.Fatalf("fixtures queued %v", queued)
	}
	check(t, db)

	// The outbound queue does not change what the mailboxes hold.
	if page, _, err := db.Inbox(ctx, kreis, "", 0); err != nil || len(page) != 0 {
		t.Errorf("Inbox of a relayed recipient = %v, %v; want none", page, err)
	}

	t.Run("SetOutbound", func(t *testing.T) {
		tests := []struct {
			name string
			o    broker.Outbound
			want error
		}{
			{"update", broker.Outbound{Domain: kreisDomain, MessageID: m1.msg.ID(), Attempts: 1, NextTry: t0.Add(time.Minute), LastError: "dial: connection refused"}, nil},
			{"update again", broker.Outbound{Domain: kreisDomain, MessageID: m1.msg.ID(), Attempts: 2, NextTry: t0.Add(3 * time.Minute)}, nil},
			{"not queued for that domain", broker.Outbound{Domain: courtDomain, MessageID: m1.msg.ID(), Attempts: 1}, broker.ErrNotFound},
			{"unknown message", broker.Outbound{Domain: kreisDomain, MessageID: newID(t), Attempts: 1}, broker.ErrNotFound},
			{"no domain", broker.Outbound{MessageID: m1.msg.ID()}, broker.ErrInvalid},
			{"no message id", broker.Outbound{Domain: kreisDomain}, broker.ErrInvalid},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				before := dump(t, db)
				if err := db.SetOutbound(ctx, tt.o); !errors.Is(err, tt.want) {
					t.Fatalf("SetOutbound: err %v, want %v", err, tt.want)
				}
				if tt.want != nil {
					checkUnchanged(t, db, before)
					return
				}
				q := queued[tt.o.Domain]
				for i := range q {
					if q[i].MessageID == tt.o.MessageID {
						q[i] = tt.o
					}
				}
				got, err := db.Outbound(ctx, tt.o.Domain, "", 0)
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(q, got); diff != "" {
					t.Errorf("Outbound after SetOutbound (-want +got):\n%s", diff)
				}
			})
		}
	})

	t.Run("OutboundEntry", func(t *testing.T) {
		o := broker.Outbound{Domain: courtDomain, MessageID: m3.msg.ID(), Attempts: 3, NextTry: t0.Add(time.Hour), LastError: "connection reset", Uncertain: true}
		if err := db.SetOutbound(ctx, o); err != nil {
			t.Fatal(err)
		}
		got, err := db.OutboundEntry(ctx, courtDomain, m3.msg.ID())
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(o, got); diff != "" {
			t.Errorf("OutboundEntry (-want +got):\n%s", diff)
		}
		for i := range queued[courtDomain] {
			if queued[courtDomain][i].MessageID == o.MessageID {
				queued[courtDomain][i] = o
			}
		}
		for _, miss := range [][2]string{{kreisDomain, m3.msg.ID()}, {courtDomain, newID(t)}, {"", m3.msg.ID()}} {
			if _, err := db.OutboundEntry(ctx, miss[0], miss[1]); !errors.Is(err, broker.ErrNotFound) {
				t.Errorf("OutboundEntry(%q, %q): %v, want ErrNotFound", miss[0], miss[1], err)
			}
		}
	})

	db = reopen(t, db, dir)
	t.Run("after reopen", func(t *testing.T) { check(t, db) })
}

func TestDB_FinishRelay(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	db := openTest(t, dir)
	expiry := t0.Add(24 * time.Hour)
	f := relayFixture(t, db, expiry)
	created := f.create(t, db)
	other := newFixture(t, db, t0, amt)
	other.create(t, db)
	id := f.msg.ID()
	rcpt, rcpt2 := f.copies[0], f.copies[1] // at courtDomain
	origin := tlog.Origin(courtDomain)

	// The relay's outcome: the court's node accepted both copies
	// (RelayAcceptance, this node's evidence); for the first it also
	// returned its Delivery (that node's evidence), which ends what this
	// node waits for. The first copy moves twice in one FinishRelay.
	steps := func() []broker.Step {
		acc := nextStep(t, rcpt, "RelayAcceptance", broker.StateDelivered)
		acc.Next.Deadline = t0.Add(48 * time.Hour)
		del := nextStep(t, acc.Next, "Delivery", broker.StateDelivered)
		del.Evidence.Log, del.Evidence.LeafIndex = origin, 17
		del.Next.Deadline = time.Time{}
		acc2 := nextStep(t, rcpt2, "RelayAcceptance", broker.StateDelivered)
		acc2.Next.Deadline = time.Time{}
		return []broker.Step{acc, del, acc2}
	}

	refused := []struct {
		name   string
		domain string
		modify func(ss []broker.Step) []broker.Step
		want   error
	}{
		{"stale head in the second step", courtDomain, func(ss []broker.Step) []broker.Step { ss[1].PrevHead = ss[0].PrevHead; return ss }, broker.ErrConflict},
		{"stale head in the last step", courtDomain, func(ss []broker.Step) []broker.Step { ss[2].PrevHead = "stale"; return ss }, broker.ErrConflict},
		{"no such copy", courtDomain, func(ss []broker.Step) []broker.Step {
			s := nextStep(t, rcpt, "RelayAcceptance", broker.StateDelivered)
			s.Evidence.Recipient, s.Next.Recipient = amt, amt
			return append(ss, s)
		}, broker.ErrNotFound},
		{"step of another message", courtDomain, func(ss []broker.Step) []broker.Step {
			return append(ss, nextStep(t, other.copies[0], "Retrieval", broker.StateRetrieved))
		}, broker.ErrInvalid},
		{"push of another log's evidence", courtDomain, func(ss []broker.Step) []broker.Step { ss[1].Push = senderDomain; return ss }, broker.ErrInvalid},
		{"no domain", "", func(ss []broker.Step) []broker.Step { return ss }, broker.ErrInvalid},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			before := dump(t, db)
			if _, err := db.FinishRelay(ctx, tt.domain, id, tt.modify(steps()), true); !errors.Is(err, tt.want) {
				t.Fatalf("FinishRelay: err %v, want %v", err, tt.want)
			}
			// Neither the queue entry's removal nor any step's evidence,
			// copy or deadline was written.
			checkUnchanged(t, db, before)
			if q, err := db.Outbound(ctx, courtDomain, "", 0); err != nil || len(q) != 1 || q[0].MessageID != id {
				t.Errorf("Outbound after a refused FinishRelay = %v, %v; want the message", q, err)
			}
			if diff := cmp.Diff(created, evidenceOf(t, db, id)); diff != "" {
				t.Errorf("Evidence after a refused FinishRelay (-want +got):\n%s", diff)
			}
		})
	}

	ss := steps()
	size := logSizeOf(t, db)
	got, err := db.FinishRelay(ctx, courtDomain, id, ss, true)
	if err != nil {
		t.Fatalf("FinishRelay: %v", err)
	}
	want := []broker.Evidence{withLeaf(ss[0].Evidence, size), ss[1].Evidence, withLeaf(ss[2].Evidence, size+1)}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("FinishRelay (-want +got):\n%s", diff)
	}

	check := func(t *testing.T, db *DB) {
		if n := logSizeOf(t, db); n != size+2 {
			t.Errorf("LogSize %d, want %d: the two RelayAcceptances only", n, size+2)
		}
		if diff := cmp.Diff(append(created, want...), evidenceOf(t, db, id)); diff != "" {
			t.Errorf("Evidence (-want +got):\n%s", diff)
		}
		for _, c := range []broker.Copy{ss[1].Next, ss[2].Next, f.copies[2]} {
			got, err := db.Copy(ctx, id, c.Recipient)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(&c, got); diff != "" {
				t.Errorf("Copy(%s) (-want +got):\n%s", c.Recipient, diff)
			}
		}
		if q, err := db.Outbound(ctx, courtDomain, "", 0); err != nil || len(q) != 0 {
			t.Errorf("Outbound(court) after FinishRelay = %v, %v; want none", q, err)
		}
		if q, err := db.Outbound(ctx, kreisDomain, "", 0); err != nil || len(q) != 1 || q[0].MessageID != id {
			t.Errorf("Outbound(kreis) after FinishRelay = %v, %v; want the message, still", q, err)
		}
		// Only kreis's copy is still due at expiry; the first copy's
		// intermediate deadline is gone again.
		due, err := db.Due(ctx, t0.Add(100*time.Hour), broker.Copy{}, 0)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]broker.Copy{f.copies[2]}, due); diff != "" {
			t.Errorf("Due (-want +got):\n%s", diff)
		}
		if n := countKeys(t, db, duePrefix); n != 1 {
			t.Errorf("%d deadline entries, want 1", n)
		}
		if err := db.SetOutbound(ctx, broker.Outbound{Domain: courtDomain, MessageID: id, Attempts: 1}); !errors.Is(err, broker.ErrNotFound) {
			t.Errorf("SetOutbound after FinishRelay: err %v, want ErrNotFound", err)
		}
	}
	check(t, db)
	db = reopen(t, db, dir)
	t.Run("after reopen", func(t *testing.T) { check(t, db) })

	t.Run("without steps", func(t *testing.T) {
		// Giving up on a domain whose copies were ended elsewhere only
		// removes the entry.
		if _, err := db.FinishRelay(ctx, kreisDomain, id, nil, true); err != nil {
			t.Fatal(err)
		}
		if q, err := db.Outbound(ctx, kreisDomain, "", 0); err != nil || len(q) != 0 {
			t.Errorf("Outbound(kreis) = %v, %v; want none", q, err)
		}
		if diff := cmp.Diff(append(created, want...), evidenceOf(t, db, id)); diff != "" {
			t.Errorf("Evidence (-want +got):\n%s", diff)
		}
	})
}

func TestDB_Pushes(t *testing.T) {
	// This node holds the recipients' copies of messages relayed from other
	// nodes; what happens to them is pushed back to the sender's node.
	ctx := context.Background()
	dir := t.TempDir()
	db := openTest(t, dir)
	const otherDomain = "gemeinde.example"
	m := newFixture(t, db, t0, court)
	m.create(t, db)
	n := newFixture(t, db, t0, kreis)
	n.create(t, db)
	mc, nc := m.copies[0], n.copies[0]

	var pushed = map[string][]broker.Evidence{} // by domain
	var all []broker.Evidence                   // of m, as stored
	apply := func(t *testing.T, c *broker.Copy, typ string, push string) broker.Evidence {
		t.Helper()
		s := nextStep(t, *c, typ, broker.StateRetrieved)
		s.Push = push
		ev := appendStep(t, db, s)
		*c = s.Next
		if push != "" {
			pushed[push] = append(pushed[push], ev)
		}
		return ev
	}
	all = append(all, apply(t, &mc, "Retrieval", senderDomain))
	apply(t, &nc, "Retrieval", otherDomain)
	apply(t, &nc, "Reminder", "") // nothing to push
	if _, err := db.AddEvidence(ctx, broker.Evidence{MessageID: newID(t), Type: "SubmissionRejection", DER: randomBytes(t, 100)}); err != nil {
		t.Fatal(err)
	}
	all = append(all, apply(t, &mc, "Acknowledgement", senderDomain))
	apply(t, &nc, "Acknowledgement", otherDomain)

	checkPushes := func(t *testing.T, db *DB, domain string, from uint64, limit int, want []broker.Evidence) {
		t.Helper()
		got, err := db.Pushes(ctx, domain, from, limit)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("Pushes(%q, %d, %d) (-want +got):\n%s", domain, from, limit, diff)
		}
		for i := 1; i < len(got); i++ {
			if got[i].LeafIndex <= got[i-1].LeafIndex {
				t.Errorf("Pushes(%q): leaf %d after %d", domain, got[i].LeafIndex, got[i-1].LeafIndex)
			}
		}
	}
	listings := func(t *testing.T, db *DB) {
		sender := pushed[senderDomain]
		tests := []struct {
			name   string
			domain string
			from   uint64
			limit  int
			want   []broker.Evidence
		}{
			{"in leaf order", senderDomain, 0, 0, sender},
			{"another domain's", otherDomain, 0, 0, pushed[otherDomain]},
			{"limit", senderDomain, 0, 1, sender[:min(1, len(sender))]},
			{"no queue", courtDomain, 0, 0, nil},
			{"no domain", "", 0, 0, nil},
		}
		if n := len(sender); n > 0 {
			last := sender[n-1].LeafIndex
			tests = append(tests, []struct {
				name   string
				domain string
				from   uint64
				limit  int
				want   []broker.Evidence
			}{
				{"from after the first leaf", senderDomain, sender[0].LeafIndex + 1, 0, sender[1:]},
				{"from the last leaf", senderDomain, last, 0, sender[n-1:]},
				{"past the last", senderDomain, last + 1, 0, nil},
			}...)
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) { checkPushes(t, db, tt.domain, tt.from, tt.limit, tt.want) })
		}
	}
	if len(pushed[senderDomain]) != 2 || len(pushed[otherDomain]) != 2 {
		t.Fatalf("pushed %v", pushed)
	}
	listings(t, db)

	t.Run("refused", func(t *testing.T) {
		tests := []struct {
			name   string
			modify func(s *broker.Step)
			want   error
		}{
			{"evidence of another log", func(s *broker.Step) { s.Evidence.Log, s.Evidence.LeafIndex = tlog.Origin(courtDomain), 3 }, broker.ErrInvalid},
			{"stale head", func(s *broker.Step) { s.PrevHead = m.copies[0].Head }, broker.ErrConflict},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				s := nextStep(t, mc, "Retention", broker.StateAcknowledged)
				s.Push = senderDomain
				tt.modify(&s)
				before := dump(t, db)
				if _, err := db.AppendEvidence(ctx, s); !errors.Is(err, tt.want) {
					t.Fatalf("AppendEvidence: err %v, want %v", err, tt.want)
				}
				checkUnchanged(t, db, before)
			})
		}
		checkPushes(t, db, senderDomain, 0, 0, pushed[senderDomain])
	})

	t.Run("DeletePush", func(t *testing.T) {
		tests := []struct {
			name   string
			domain string
			index  uint64
			want   error
		}{
			{"the first", senderDomain, pushed[senderDomain][0].LeafIndex, nil},
			{"again", senderDomain, pushed[senderDomain][0].LeafIndex, nil},
			{"another domain's leaf", senderDomain, pushed[otherDomain][0].LeafIndex, nil},
			{"never queued", senderDomain, 1 << 40, nil},
			{"no domain", "", pushed[senderDomain][1].LeafIndex, broker.ErrInvalid},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				if err := db.DeletePush(ctx, tt.domain, tt.index); !errors.Is(err, tt.want) {
					t.Fatalf("DeletePush: err %v, want %v", err, tt.want)
				}
			})
		}
		pushed[senderDomain] = pushed[senderDomain][1:]
		listings(t, db)
		// The evidence itself stays.
		if diff := cmp.Diff(all, evidenceOf(t, db, m.msg.ID())[len(m.evs):]); diff != "" {
			t.Errorf("Evidence after DeletePush (-want +got):\n%s", diff)
		}
	})

	db = reopen(t, db, dir)
	t.Run("after reopen", func(t *testing.T) { listings(t, db) })

	t.Run("after reopen, pushed in leaf order", func(t *testing.T) {
		ev := apply(t, &mc, "Retention", senderDomain)
		if ev.LeafIndex <= pushed[senderDomain][0].LeafIndex {
			t.Errorf("leaf index %d", ev.LeafIndex)
		}
		checkPushes(t, db, senderDomain, 0, 0, pushed[senderDomain])
	})
}

// newID returns a fresh message id.
func newID(t *testing.T) string {
	t.Helper()
	id, err := envelope.NewID()
	if err != nil {
		t.Fatal(err)
	}
	return id
}
