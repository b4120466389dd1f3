package cache_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/gateway/cache"
)

// TestSiteDefaultTTL: a site's default TTL keeps a response that states no
// freshness of its own fresh for that long (even without a validator,
// which the RFC's heuristic needs), while everything the origin says still
// wins: its own max-age, Expires, no-cache, and the rules that keep
// private, no-store and cookie-setting responses out of a shared cache.
func TestSiteDefaultTTL(t *testing.T) {
	const ttl = 10 * time.Minute
	for _, c := range []struct {
		name   string
		ttl    time.Duration
		header []string // response header pairs
		status int
		// fetches: origin requests after the first GET, a second GET at
		// once, and a third after the clock moved by advance.
		advance time.Duration
		fetches [3]int64
	}{
		{"no headers: fresh for the default", ttl, nil, 200, 9 * time.Minute, [3]int64{1, 1, 1}},
		{"no headers: refetched after the default", ttl, nil, 200, 11 * time.Minute, [3]int64{1, 1, 2}},
		{"no headers, no default: not stored", 0, nil, 200, 0, [3]int64{1, 2, 3}},
		{"a 404 without headers gets the default too", ttl, nil, 404, 9 * time.Minute, [3]int64{1, 1, 1}},
		{"a 500 is not heuristically cacheable", ttl, nil, 500, 0, [3]int64{1, 2, 3}},
		{"the origin's max-age wins", ttl, []string{"Cache-Control", "max-age=60"}, 200, 2 * time.Minute, [3]int64{1, 1, 2}},
		{"the origin's Expires wins", ttl, []string{"Expires", "Thu, 01 Jan 1970 00:00:00 GMT", "ETag", `"v"`}, 200, 0, [3]int64{1, 2, 3}},
		{"no-cache still revalidates every use", ttl, []string{"Cache-Control", "no-cache", "ETag", `"v"`}, 200, 0, [3]int64{1, 2, 3}},
		{"private is not shared", ttl, []string{"Cache-Control", "private"}, 200, 0, [3]int64{1, 2, 3}},
		{"no-store is not stored", ttl, []string{"Cache-Control", "no-store"}, 200, 0, [3]int64{1, 2, 3}},
		{"Set-Cookie is someone's session", ttl, []string{"Set-Cookie", "s=1"}, 200, 0, [3]int64{1, 2, 3}},
		{"public without max-age gets the default", ttl, []string{"Cache-Control", "public"}, 200, 9 * time.Minute, [3]int64{1, 1, 1}},
		{"the default replaces the Last-Modified heuristic", ttl, []string{"Last-Modified", "Mon, 01 Jan 2001 00:00:00 GMT"}, 200, 11 * time.Minute, [3]int64{1, 1, 2}},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
				for i := 0; i+1 < len(c.header); i += 2 {
					w.Header().Add(c.header[i], c.header[i+1])
				}
				w.WriteHeader(c.status)
				fmt.Fprint(w, "body")
			}, envOpt{site: cache.SitePolicy{SiteID: "site1", DefaultTTL: c.ttl}})
			var got [3]int64
			for i := range 3 {
				if i == 2 {
					e.clock.Advance(c.advance)
				}
				if r := e.get("/obj"); r.status != c.status || r.body != "body" {
					t.Fatalf("GET %d: %d %q", i+1, r.status, r.body)
				}
				got[i] = e.count.Load()
			}
			if got != c.fetches {
				t.Fatalf("origin requests after each GET: %v, want %v", got, c.fetches)
			}
		})
	}
}

// TestSiteDefaultTTLEndsWithThe304sMaxAge: a copy fresh by the site's
// default is revalidated once stale; a 304 that now states max-age=30 ends
// the default (the TTL is decided again, as for a new response), so the
// copy is stale 30 s later, not ten minutes later.
func TestSiteDefaultTTLEndsWithThe304sMaxAge(t *testing.T) {
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", `"v1"`)
		if r.Header.Get("If-None-Match") == `"v1"` {
			w.Header().Set("Cache-Control", "max-age=30")
			w.WriteHeader(http.StatusNotModified)
			return
		}
		fmt.Fprint(w, "body")
	}, envOpt{site: cache.SitePolicy{SiteID: "site1", DefaultTTL: 10 * time.Minute}})
	e.get("/obj")
	e.clock.Advance(11 * time.Minute)
	if r := e.get("/obj"); r.body != "body" || e.count.Load() != 2 {
		t.Fatalf("stale after the default: %q, %d origin requests, want the 304 revalidation (2)", r.body, e.count.Load())
	}
	e.clock.Advance(time.Minute)
	r := e.get("/obj")
	if r.body != "body" || e.count.Load() != 3 {
		t.Fatalf("a minute after a 304 with max-age=30: %d origin requests, want 3 (the 304's max-age governs)", e.count.Load())
	}
	if !strings.Contains(r.cs(), "fwd=stale") {
		t.Fatalf("Cache-Status %q, want a stale revalidation", r.cs())
	}
}

// TestSiteDefaultTTLRefused: a negative default TTL is refused by name.
func TestSiteDefaultTTLRefused(t *testing.T) {
	err := cache.SitePolicy{SiteID: "s", DefaultTTL: -time.Second}.Validate()
	if err == nil || !strings.Contains(err.Error(), "DefaultTTL -1s must not be negative") {
		t.Fatalf("got %v", err)
	}
}

// TestPluginTTLWinsOverSiteDefault: a plugin's TTL (cache.WithTTL) decides
// over the site's default TTL.
func TestPluginTTLWinsOverSiteDefault(t *testing.T) {
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "body") },
		envOpt{site: cache.SitePolicy{SiteID: "site1", DefaultTTL: time.Hour}, wrapFront: func(h http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				h.ServeHTTP(w, r.WithContext(cache.WithTTL(r.Context(), time.Minute)))
			})
		}})
	e.get("/obj")
	e.clock.Advance(2 * time.Minute)
	e.get("/obj")
	if n := e.count.Load(); n != 2 {
		t.Fatalf("%d origin requests two minutes after a plugin's 1-minute TTL, want 2 (the site's hour does not apply)", n)
	}
}

// TestNotStoredSaysWhy: a response the cache does not store says why in
// its Cache-Status detail (RFC 9211), so an operator sees why a URL is
// never a hit without reading the origin's headers.
func TestNotStoredSaysWhy(t *testing.T) {
	for _, c := range []struct {
		header []string
		want   string
	}{
		{[]string{"Cache-Control", "no-store"}, "detail=not-stored-no-store"},
		{[]string{"Cache-Control", "private"}, "detail=not-stored-private"},
		{[]string{"Cache-Control", "max-age=60", "Set-Cookie", "s=1"}, "detail=not-stored-set-cookie"},
		{[]string{"Cache-Control", "max-age=60", "Vary", "*"}, "detail=not-stored-vary-star"},
	} {
		e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
			for i := 0; i+1 < len(c.header); i += 2 {
				w.Header().Add(c.header[i], c.header[i+1])
			}
			fmt.Fprint(w, "body")
		}, envOpt{site: cache.SitePolicy{SiteID: "site1"}})
		if r := e.get("/x"); !strings.HasSuffix(r.cs(), c.want) {
			t.Errorf("%v: Cache-Status %q, want it to end in %s", c.header, r.cs(), c.want)
		}
	}
}
