package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"kurier.dev/kurier/broker/daemon"
)

// TestRun_Outbox: the agency sends one message to the court and to itself;
// the court fetches and acknowledges it, the agency fetches and rejects
// it. kurier outbox --json --limit 1 lists that message with both states;
// the table shows them, the reason too; the court's outbox does not list
// it; a negative --limit is a usage error.
func TestRun_Outbox(t *testing.T) {
	doc := filepath.Join(t.TempDir(), "ladung.txt")
	if err := os.WriteFile(doc, []byte("Termin am 3.12."), 0o600); err != nil {
		t.Fatal(err)
	}
	var sent struct{ ID string }
	kurierJSON(t, &sent, append([]string{"send", "--to", daemon.DevCourt, "--to", daemon.DevAgency, "--subject", "Ladung",
		"--type", "Ladung", "--reference", "7 O 3/26", doc}, as("agency")...)...)
	id := sent.ID
	kurier(t, append([]string{"fetch", id, "-o", t.TempDir(), "--ack"}, as("court")...)...)
	kurier(t, append([]string{"fetch", id, "-o", t.TempDir()}, as("agency")...)...)
	kurier(t, append([]string{"reject", id, "--code", "not-competent", "--reason", "Zuständig ist das Landgericht"}, as("agency")...)...)

	var out []outboxJSON
	kurierJSON(t, &out, append([]string{"outbox", "--limit", "1"}, as("agency")...)...)
	if len(out) != 1 || out[0].ID != id {
		t.Fatalf("outbox --limit 1: %+v, want message %s", out, id)
	}
	m := out[0]
	if m.Subject != "Ladung" || m.Type != "Ladung" || m.Reference != "7 O 3/26" || m.Size <= 0 {
		t.Errorf("outbox entry %+v", m)
	}
	for _, ts := range []string{m.Created, m.Received} {
		if _, err := time.Parse(time.RFC3339, ts); err != nil {
			t.Errorf("time %q: %v", ts, err)
		}
	}
	var got [][3]string
	for _, r := range m.Recipients {
		got = append(got, [3]string{r.Address, r.State, r.Reason})
		if _, err := time.Parse(time.RFC3339, r.Time); err != nil {
			t.Errorf("%s: time %q: %v", r.Address, r.Time, err)
		}
	}
	want := [][3]string{
		{daemon.DevCourt, "acknowledged", ""},
		{daemon.DevAgency, "rejected", "not-competent: Zuständig ist das Landgericht"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("recipients (-want +got):\n%s", diff)
	}
	if m.Recipients[0].Evidence != "Acknowledgement" || m.Recipients[1].Evidence != "Rejection" {
		t.Errorf("evidence types %q, %q", m.Recipients[0].Evidence, m.Recipients[1].Evidence)
	}

	table := kurier(t, append([]string{"outbox", "--limit", "1"}, as("agency")...)...)
	for _, s := range []string{"RECIPIENT", id, "acknowledged", "rejected (not-competent: Zuständig ist das Landgericht)", daemon.DevCourt} {
		if !strings.Contains(table, s) {
			t.Errorf("outbox table lacks %q:\n%s", s, table)
		}
	}
	if n := strings.Count(table, id); n != 1 {
		t.Errorf("the table names the message %d times, want once (its first line):\n%s", n, table)
	}

	var court []outboxJSON
	kurierJSON(t, &court, append([]string{"outbox"}, as("court")...)...)
	for _, m := range court {
		if m.ID == id {
			t.Error("the court's outbox lists the agency's message")
		}
	}

	outJSON, err := try(t, append([]string{"outbox", "--limit", "-1", "--json"}, as("agency")...)...)
	var jerr jsonError
	if err == nil || json.Unmarshal([]byte(outJSON), &jerr) != nil || jerr.Code != "usage" || !strings.Contains(jerr.Error, "--limit") {
		t.Errorf("outbox --limit -1: %v, printed %q; want a usage error naming --limit", err, outJSON)
	}
}

func TestShorten(t *testing.T) {
	for in, want := range map[string]string{
		"":          "",
		"kurz":      "kurz",
		"zwölf":     "zwölf",
		"zuständig": "zustän…",
	} {
		if got := shorten(in, 7); got != want {
			t.Errorf("shorten(%q, 7) = %q, want %q", in, got, want)
		}
	}
}
