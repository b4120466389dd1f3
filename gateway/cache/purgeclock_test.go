package cache_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/meridian-edge/meridian/gateway/cache"
	"github.com/meridian-edge/meridian/internal/testutil"
)

// TestUnrelatedPurgeDuringFill: a purge of another site, or a write to
// another URL, while a fill is in flight neither stops the fill from being
// stored nor a later request from joining it. The cache is shared by the
// PoP's sites: one site's writes must not cost another its collapsing.
func TestUnrelatedPurgeDuringFill(t *testing.T) {
	for _, how := range []string{"other-site-purged", "other-url-written"} {
		t.Run(how, func(t *testing.T) {
			half := make(chan struct{})
			var halfOnce sync.Once
			var gets atomic.Int64
			e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
				if r.Method != http.MethodGet {
					return
				}
				gets.Add(1)
				w.Header().Set("Cache-Control", "max-age=600")
				io.WriteString(w, "begins")
				w.(http.Flusher).Flush()
				select {
				case <-half:
				case <-r.Context().Done():
					return
				}
				io.WriteString(w, ", ends")
			}, envOpt{})
			t.Cleanup(func() { halfOnce.Do(func() { close(half) }) })
			first, err := e.client.Get(e.front.URL + "/doc")
			if err != nil {
				t.Fatal(err)
			}
			defer first.Body.Close()
			part := make([]byte, len("begins"))
			if _, err := io.ReadFull(first.Body, part); err != nil {
				t.Fatal(err)
			}
			if how == "other-site-purged" {
				if _, err := e.c.Purge(context.Background(), cache.Selector{Site: "site2", Kind: cache.BySite}); err != nil {
					t.Fatal(err)
				}
			} else if r := e.do(http.MethodPost, "/form", nil, []byte("x")); r.status != 200 {
				t.Fatalf("POST: %d", r.status)
			}
			second := make(chan reply, 1)
			go func() { second <- e.get("/doc") }()
			testutil.WaitFor(t, "the second request to join the fill", func() bool {
				return strings.Contains(metricText(t, e), `meridian_cache_collapsed_total{pop="test-pop",site="site1"} 1`)
			})
			halfOnce.Do(func() { close(half) })
			rest, err := io.ReadAll(first.Body)
			if err != nil || string(part)+string(rest) != "begins, ends" {
				t.Fatalf("first: %q %v", string(part)+string(rest), err)
			}
			if r := <-second; r.body != "begins, ends" {
				t.Fatalf("second: %d %q", r.status, r.body)
			}
			if r := e.get("/doc"); r.body != "begins, ends" || !strings.Contains(r.cs(), "hit") {
				t.Fatalf("later: %q (Cache-Status %q), want the fill's object stored", r.body, r.cs())
			}
			if n := gets.Load(); n != 1 {
				t.Fatalf("origin GETs %d, want 1", n)
			}
		})
	}
}

// TestSoftPurgeDuringRevalidation: a soft purge that lands while a stale
// object's revalidation is at the origin stays in force when the origin
// answers 304: that answer was to a question asked before the purge, so
// the next request revalidates again instead of taking the object as
// fresh.
func TestSoftPurgeDuringRevalidation(t *testing.T) {
	held := make(chan struct{})
	release := make(chan struct{})
	var releaseOnce sync.Once
	var revalidations atomic.Int64
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("ETag", `"v1"`)
		if r.Header.Get("If-None-Match") == `"v1"` {
			if revalidations.Add(1) == 1 {
				close(held)
				select {
				case <-release:
				case <-r.Context().Done():
					return
				}
			}
			w.WriteHeader(http.StatusNotModified)
			return
		}
		io.WriteString(w, "v1")
	}, envOpt{})
	t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) })
	if r := e.get("/doc"); r.body != "v1" {
		t.Fatalf("fill: %q", r.body)
	}
	e.clock.Advance(2 * 60e9) // stale
	got := make(chan reply, 1)
	go func() { got <- e.get("/doc") }()
	<-held
	if _, err := e.c.Purge(context.Background(), cache.Selector{Site: "site1", Kind: cache.ByURL, Value: e.front.URL + "/doc", Soft: true}); err != nil {
		t.Fatal(err)
	}
	releaseOnce.Do(func() { close(release) })
	if r := <-got; r.status != 200 || r.body != "v1" {
		t.Fatalf("revalidated: %d %q", r.status, r.body)
	}
	if r := e.get("/doc"); r.body != "v1" || strings.Contains(r.cs(), "hit") {
		t.Fatalf("after the purge: %q (Cache-Status %q), want a revalidation, not a hit", r.body, r.cs())
	}
	if n := revalidations.Load(); n != 2 {
		t.Fatalf("revalidations %d, want 2 (the purge's own)", n)
	}
}
