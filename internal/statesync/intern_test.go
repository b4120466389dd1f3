package statesync

import (
	"fmt"
	"testing"

	"github.com/meridian-edge/meridian/internal/crdt"
)

// A receiver decodes with an id table and a reused register map: the result
// must be what plain decode gives, message after message, and a rejected
// message must neither poison the table nor leave registers behind.
func TestDecodeWithInterningAndReusedMap(t *testing.T) {
	ids := newIDTable()
	regs := map[string]crdt.Register{}
	good, err := encode(sampleDelta())
	if err != nil {
		t.Fatal(err)
	}
	bad := sampleDelta()
	bad.From = "bad id!"
	badData, err := encode(bad)
	if err != nil {
		t.Fatal(err)
	}
	for round := range 3 {
		want, err := decode(good)
		if err != nil {
			t.Fatal(err)
		}
		got, err := decodeIDs(good, ids, regs)
		if err != nil || !equalEnvelope(got, want) {
			t.Fatalf("round %d: decodeIDs gave %+v, %v; decode gives %+v", round, got, err, want)
		}
		clear(regs)
		if _, err := decodeIDs(badData, ids, regs); rejectReason(err) != "invalid" {
			t.Fatalf("round %d: bad sender id: %v, want invalid", round, err)
		}
		clear(regs)
	}
	if _, ok := ids.lookup([]byte("bad id!")); ok {
		t.Fatal("an invalid id was interned")
	}
	if _, ok := ids.lookup([]byte("ams-1")); !ok {
		t.Fatal("the sender id was not interned")
	}
	// The table stays bounded whatever senders claim to be.
	for i := range maxInternedIDs + 100 {
		ids.add(fmt.Sprintf("n%d", i))
	}
	if len(ids.ids) > maxInternedIDs {
		t.Fatalf("id table grew to %d, bound %d", len(ids.ids), maxInternedIDs)
	}
}
