package cache

// This file is the reference for operators and for wiring the cache into
// the PoP; the package comment is in cache.go.
//
// # Wiring
//
//	if os.Getenv("GOGC") == "" && os.Getenv("GOMEMLIMIT") == "" { // process start, once
//		debug.SetGCPercent(cache.GCPercent(512 << 20))
//	}
//	c, err := cache.New(cache.Options{L1Bytes: 512 << 20, L1Preallocate: true, Logger: log, Registerer: reg, PoPID: "us-east-1"})
//	defer c.Close()
//	h := c.Handler(cache.SitePolicy{SiteID: "shop", SortQuery: true}, pool) // pool: origin.Pool
//	router.Handle("/*", h)  // after site lookup, middleware and plugins
//	srv := &http.Server{Handler: router}
//	fl := c.Fast(srv, ln, cache.FastOptions{Route: hostToCacheHandler}) // ln: the plain-text listener
//	go srv.Serve(fl) // (or srv.Serve(cache.Coalesce(srv, ln)) without the fast path)
//	// at shutdown: srv.Shutdown(ctx); fl.Drain(ctx)
//	n, err := c.Purge(ctx, cache.Selector{Site: "shop", Kind: cache.ByPrefix, Value: "https://shop.example/img/"})
//
// # Hit path costs
//
// A hit must cost no more CPU than Varnish's. What that took, measured with
// BenchmarkL1Hit, pprof and the peer benchmark (bench/cacheproxy):
//   - Cache.Fast answers fresh hits on plain HTTP/1.1 without net/http
//     (fast.go says why and how it stays safe): per 1 KiB hit 6.7 µs of
//     CPU instead of 14.2 µs, under nginx's 8.5 µs in the same run; the
//     rest of the profile is read and writev. Only requests it fully
//     understands are answered; the others reach the http.Server unchanged.
//   - On a TCP connection the fast path reads the socket itself, inside one
//     RawConn.Read, and after a read that emptied it waits for the poller
//     instead of calling read(2) first, as nginx does: one read per
//     keep-alive hit instead of 1.77 (the extra 0.77 failing with EAGAIN;
//     strace -c under wrk). With two allocations fewer per hit (writev's
//     buffers kept per connection, L2's metadata shared as L1's is), a
//     pinned 16 KiB L2 hit went from 8.13 to 7.62 µs of CPU (medians of 5
//     interleaved pairs, bench/l2proxy/compare.sh).
//   - Those reads and the hit's writev are raw system calls (vecWriter):
//     the socket is non-blocking and the bytes are in memory (L2's just
//     verified in their mapping), so the calls never wait, and the
//     runtime's monitor never takes the processor away from one that a
//     busy core stretched. With two processors on a 2-core box shared with
//     the load generator that hand-off was most of Go's extra cost: an
//     unpinned 16 KiB L2 hit went from 9.20-9.61 to 7.71-7.98 µs of CPU
//     (nginx 7.79-8.07 µs in the same run), a PoP's L1 hit under
//     BenchmarkPoPHitWrk from 7.9-8.5 to 5.6-6.5 µs. Pinned to one core
//     it changed little (7.39-7.81 against 7.52-8.06 µs).
//   - L1 keeps bodies of 8 KiB and more outside BigCache, shared by hits
//     without a copy, and keeps the most requested objects decoded (package
//     l1); a hit allocates nothing in proportion to its size.
//   - Behind the fast path (requests it hands to net/http) and without it,
//     Coalesce sends a stored response's header and body (2 to 32 KiB) in
//     one writev on HTTP/1.x instead of two writes: worth little on loopback
//     (about 3% at 16 KiB, within noise); larger bodies measured slower
//     coalesced, so they keep two writes. The fast path always sends head
//     and body in one writev.
//   - The stored header is decoded into one string; Cache-Status is built
//     in one allocation.
//
// Memory per cached object is BigCache's record (package tier's compact
// encoding, about 180 bytes of metadata for a typical response) plus GC
// headroom; L1Preallocate with GCPercent keeps the headroom a fixed
// amount instead of a multiple of the cache.
//
// A plugin (or any middleware before the handler) may set the cache key with
// WithKey and a freshness lifetime with WithTTL on the request context.
// Issue 6's tiers plug in through Options.Store (any tier.Tier; a
// composition that implements tier.Scanner and tier.MetaUpdater gets purge and
// 304 updates in every tier).
//
// # Cache-Status (RFC 9211)
//
// Every response carries one "meridian" entry, appended after any the origin
// sent:
//
//	meridian; hit; ttl=57; detail=l1                     fresh stored response (ttl = seconds of freshness left)
//	meridian; hit; ttl=-3; detail=l1                     stale response the request allowed (max-stale)
//	meridian; hit; ttl=-3; detail=l1-stale-while-revalidate
//	meridian; hit; ttl=-90; detail=l1-stale-if-error      origin failed, stale copy served
//	meridian; fwd=uri-miss; fwd-status=200; stored        nothing stored; fetched and stored
//	meridian; fwd=vary-miss; fwd-status=200; stored       stored variants did not match the request's Vary'd headers
//	meridian; fwd=stale; fwd-status=304; detail=l1        stale copy revalidated, served from the tier
//	meridian; fwd=request; fwd-status=200                 the request's no-cache / max-age / min-fresh forced a fetch
//	meridian; fwd=uri-miss; fwd-status=200; detail=collapsed  answered by another request's origin fetch
//	meridian; fwd=method                                  unsafe method: forwarded, URL invalidated on success
//	meridian; fwd=bypass[; detail=request-body]           upgrade, site bypass, or a GET with a body
//	meridian; fwd=miss; detail=only-if-cached             504, the request said only-if-cached
//	meridian; fwd=uri-miss; detail=origin-timeout         504 made here: the origin did not answer in time
//	meridian; fwd=uri-miss; detail=origin-unreachable     502 made here: connection refused, no route, no server
//	meridian; fwd=uri-miss; detail=origin-error           502 made here: connection reset or malformed response
//	meridian; fwd=method; detail=origin-unreachable       the same pages for a request passed on (fwd=method, bypass)
//
// The 502 and 504 the PoP makes itself (and the 504 of only-if-cached) are
// one page whatever path the request took (proxy.WritePage): they carry no
// fwd-status (the origin sent none), keep the request's X-Request-Id, carry
// our Via and no-store, and their body names the PoP and the request id;
// the WARN "origin failed" line has the request id and, when the error
// names it, the origin server. They are marked with middleware.MarkGenerated, so the request metrics count
// them in meridian_http_responses_generated_total.
//
// # Metrics
//
// The pop label is the PoP's id (Options.PoPID, e.g. "ap-northeast-1"), as
// in the DNS server's metrics, /admin/info and the logs, so dashboards can
// join them; Via names the PoP "meridian-<id>" (ViaName). A cache without a
// PoPID has no pop label. Served bytes are body bytes actually sent: a HEAD,
// a 304 or a 416 adds none, a Range request what its 206 carries.
//
//	meridian_cache_requests_total{pop,site,tier,result}   result: hit, stale, revalidated, miss, collapsed, pass, error
//	meridian_cache_served_bytes_total{pop,site,tier}      body bytes sent (none for HEAD), by the tier they came from (origin included)
//	meridian_cache_origin_seconds{pop,site,outcome}       time to the origin's response headers
//	meridian_cache_collapsed_total{pop,site}              requests that waited for another request's fetch
//	meridian_cache_stores_total{pop,site,tier,outcome}    stored, not_admitted, too_large, error, purged
//	meridian_cache_purged_total{pop,site,mode}            hard, soft, invalidate
//	meridian_cache_store_objects{pop,store}, meridian_cache_store_bytes{pop,store}
//	meridian_cache_l1_pool_threshold_bytes{pop}, meridian_cache_l1_pool_bytes{pop}, meridian_cache_l1_pool_budget_bytes{pop}   L1's adaptive large-body split
//	meridian_cache_fast_requests_total{pop,outcome}       the fast path: served, or handed to net/http (unparsed, route, miss, request, stale, hooks); reclaimed connections
//
// # What is stored
//
// GET responses (HEAD is answered from them and a HEAD miss fills with a GET)
// that RFC 9111 lets a shared cache store: not no-store or private, not
// for a request with Authorization unless public, s-maxage or
// must-revalidate, no Vary: *, no Set-Cookie unless explicitly public, and
// with explicit freshness, a heuristically cacheable status with
// Last-Modified, or a validator. CDN-Cache-Control, then Surrogate-Control,
// take precedence over Cache-Control. Surrogate-Control, Surrogate-Key and
// Cache-Tag are the CDN's: they stay in the stored metadata (purge by
// surrogate key selects on them) and never reach clients, on any path. A
// stored 200 is answered with Accept-Ranges: bytes (Range is served from
// it). Responses larger than the site's MaxL1Object skip the memory tier
// of a composition (gateway/cache/tiered) and are stored below it;
// responses larger than the site's MaxObject, or than every tier takes,
// stream through unstored (stores_total outcome too_large).
//
// # Cache keys
//
// A key is the site and the request's URL normalised (requestURL): scheme
// and host lower-cased, no port (sites are chosen by host alone), no
// trailing dot, percent-encoding normalised as RFC 3986 6.2.2 says (escaped
// unreserved characters decoded, other escapes in upper-case hex, so %2F
// stays distinct from '/'), no fragment (one a client sent is stripped
// before the key is made and before the request is forwarded). Dot and
// empty path segments are kept: an origin may serve /a/./b or /a//b
// differently from /a/b. Purge by URL and prefix normalise their value the
// same way (Selector.Normalize).
