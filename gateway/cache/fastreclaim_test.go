package cache_test

import (
	"fmt"
	"strings"
	"testing"
)

// TestReclaimBacksOffForRequestsTheFastPathHandsOn: a keep-alive client
// whose every request the fast path hands to net/http (here a Range on a
// stored object) must not have its connection taken back after each
// response, only to be handed on again: that bounce cost a PoP 61.7 µs of
// CPU per request. The connection still comes back to the fast path once
// its requests turn into plain hits.
func TestReclaimBacksOffForRequestsTheFastPathHandsOn(t *testing.T) {
	e := newEnv(t, fastOrigin, envOpt{})
	e.get("/obj")
	settle(t, e)
	e.client.CloseIdleConnections()

	const ranges = 40
	for i := range ranges {
		r := e.get("/obj", "Range", "bytes=0-3")
		if r.status != 206 || r.body != "body" || !strings.Contains(r.cs(), "hit") {
			t.Fatalf("range %d: %d %q %q", i, r.status, r.body, r.cs())
		}
	}
	// Doubling waits (1, 2, 4, 8, 16, 32 responses) allow 5 reclaims in 40
	// requests; a reclaim per response would be 40.
	if n := fastCount(e, "reclaimed"); n < 1 || n > 6 {
		t.Fatalf("the connection was taken back %d times in %d handed-off requests; want a few (backing off), not one per request", n, ranges)
	}
	if n := fastCount(e, "served"); n != 0 {
		t.Fatalf("the fast path answered %d of the Range requests", n)
	}

	// Plain hits on the same connection: it returns to the fast path within
	// the longest wait (64 responses).
	for i := range 70 {
		if r := e.get("/obj"); r.body != "body of /obj" || !strings.Contains(r.cs(), "hit") {
			t.Fatalf("hit %d: %q %q", i, r.body, r.cs())
		}
	}
	if n := fastCount(e, "served"); n == 0 {
		t.Fatal("the connection never came back to the fast path after its requests turned into plain hits")
	}
}

// TestReclaimAfterMissesAtOnce: misses are handed to net/http for the
// cache's state, not for what the client asked, so a run of them does not
// keep the connection away from the fast path: the first hit after them
// on the same connection is answered there.
func TestReclaimAfterMissesAtOnce(t *testing.T) {
	e := newEnv(t, fastOrigin, envOpt{})
	for i := range 20 {
		if r := e.get(fmt.Sprintf("/m%d", i)); !strings.Contains(r.cs(), "fwd=uri-miss") {
			t.Fatalf("miss %d: %q", i, r.cs())
		}
	}
	settle(t, e)
	if r := e.get("/m3"); r.body != "body of /m3" || !strings.Contains(r.cs(), "hit") {
		t.Fatalf("hit: %q %q", r.body, r.cs())
	}
	if n := fastCount(e, "served"); n != 1 {
		t.Fatalf("the first hit after 20 misses on one connection was answered by the fast path %d times, want 1", n)
	}
}
