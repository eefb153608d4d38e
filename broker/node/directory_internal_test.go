package node

import (
	"fmt"
	"testing"
	"time"
)

// TestRemoteDirectory_Full fills the cache with positive answers and
// negative ones: made-up addresses never push out an answer that a
// mailbox exists, and a new positive answer pushes out a negative one
// first.
func TestRemoteDirectory_Full(t *testing.T) {
	var d remoteDirectory
	t0 := time.Now()
	for i := range maxRemoteEntries - 1 {
		d.put(fmt.Sprintf("a%d@x.example", i), remoteEntry{found: true, fetched: t0.Add(time.Duration(i))})
	}
	d.put("nobody@x.example", remoteEntry{found: false, fetched: t0.Add(time.Hour)})
	d.put("made-up@x.example", remoteEntry{found: false, fetched: t0.Add(2 * time.Hour)})
	if _, ok := d.get("made-up@x.example"); ok {
		t.Fatal("a negative answer was cached in a full cache")
	}
	if _, ok := d.get("a0@x.example"); !ok {
		t.Fatal("a negative answer pushed out a positive one")
	}
	d.put("new@x.example", remoteEntry{found: true, fetched: t0.Add(3 * time.Hour)})
	if _, ok := d.get("nobody@x.example"); ok {
		t.Fatal("the negative answer stayed while a positive one came in")
	}
	d.put("newer@x.example", remoteEntry{found: true, fetched: t0.Add(4 * time.Hour)})
	if _, ok := d.get("a0@x.example"); ok {
		t.Fatal("the oldest positive answer stayed in a full cache of positives")
	}
	if _, ok := d.get("new@x.example"); !ok || len(d.entries) != maxRemoteEntries {
		t.Fatalf("cache holds %d entries, want %d with the new ones", len(d.entries), maxRemoteEntries)
	}
}
