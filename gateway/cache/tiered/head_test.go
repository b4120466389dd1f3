package tiered_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/meridian-edge/meridian/gateway/cache/tier"
	"github.com/meridian-edge/meridian/gateway/cache/tiered"
	"github.com/meridian-edge/meridian/internal/testutil"
)

// lookUp looks key up as a HEAD does: the object's metadata is used, its
// body closed unread. It reports the tier that answered.
func lookUp(t *testing.T, s *stack, key string) string {
	t.Helper()
	o, from, err := s.all.GetFrom(context.Background(), key)
	if err != nil {
		t.Fatalf("look up %s: %v", key, err)
	}
	if err := o.Body.Close(); err != nil {
		t.Fatalf("close %s unread: %v", key, err)
	}
	return from
}

// TestUnreadLookupPromotesInTheBackground: a popular object looked up without
// reading its body (a HEAD, a 304) is copied whole into every tier above the
// one that answered, as a read would have, so the next lookup is a fast-tier
// hit with the whole body.
func TestUnreadLookupPromotesInTheBackground(t *testing.T) {
	srv := testutil.StartS3(t)
	s := newStack(t, srv.Endpoint, nil, nil)
	want := body("h", 50_000)
	for _, c := range []struct {
		name, key string
		into      tier.Tier // the only tier holding the object at first
		from      string
	}{
		{"from l3", "h3", s.l3, "l3"},
		{"from l2", "h2", s.l2, "l2"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if err := put(t, c.into, c.key, want); err != nil {
				t.Fatal(err)
			}
			// The first lookup is not popular enough (PromoteAfter 2).
			if from := lookUp(t, s, c.key); from != c.from {
				t.Fatalf("first lookup from %s, want %s", from, c.from)
			}
			flush(t, s)
			if has(s.l1, c.key) {
				t.Fatal("a one-off lookup was promoted into L1")
			}
			if from := lookUp(t, s, c.key); from != c.from {
				t.Fatalf("second lookup from %s, want %s", from, c.from)
			}
			flush(t, s)
			b, from, err := read(t, s, c.key)
			if err != nil || from != "l1" || !bytes.Equal(b, want) {
				t.Fatalf("after the promotion: from %s, %d bytes, %v; want the whole body from l1", from, len(b), err)
			}
			if !has(s.l2, c.key) {
				t.Fatal("l2 does not hold the object after the promotion")
			}
		})
	}
	if c := s.all.Counters(); c.Promotions["l1"] != 2 || c.Promotions["l2"] != 1 || c.Errors["l1"]+c.Errors["l2"]+c.Errors["l3"] != 0 {
		t.Fatalf("counters = %+v; want l1 promoted twice, l2 once, no error", c)
	}
}

// TestDeleteAfterUnreadLookupWins: a delete right after a HEAD is not undone
// by the HEAD's background promotion, whichever runs first.
func TestDeleteAfterUnreadLookupWins(t *testing.T) {
	srv := testutil.StartS3(t)
	s := newStack(t, srv.Endpoint, func(o *tiered.Options) { o.PromoteAfter = 1 }, nil)
	if err := put(t, s.l3, "d", body("d", 20_000)); err != nil {
		t.Fatal(err)
	}
	if from := lookUp(t, s, "d"); from != "l3" {
		t.Fatalf("lookup from %s, want l3", from)
	}
	if err := s.all.Delete(context.Background(), "d"); err != nil {
		t.Fatal(err)
	}
	flush(t, s)
	for _, tr := range []tier.Tier{s.l1, s.l2, s.l3} {
		if has(tr, "d") {
			t.Errorf("%s holds the deleted object", tr.Name())
		}
	}
}
