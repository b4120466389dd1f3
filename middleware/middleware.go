// Package middleware holds the chi middleware every PoP request passes
// through that is not a site owner's plugin: request IDs, panic recovery,
// access logs and request metrics. The plugin adapter lives in
// middleware/plugin.
//
// Each middleware is a func(http.Handler) http.Handler with its dependencies
// passed in; none keeps package state.
package middleware

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"time"
)

// RequestIDHeader carries the request ID to the origin and back to the client.
const RequestIDHeader = "X-Request-Id"

type ctxKey int

const requestIDKey ctxKey = 0

// RequestID gives every request an ID: the client's X-Request-Id when it is
// short and printable (so a trace can span systems), else a new random one.
// The ID is set on the request (the origin sees it), on the response and in
// the context.
func RequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get(RequestIDHeader)
		if !validID(id) {
			id = NewRequestID("")
			r.Header.Set(RequestIDHeader, id)
		}
		w.Header().Set(RequestIDHeader, id)
		// One allocation, as the bare id in the context was: the state
		// also carries MarkGenerated's reason to the observers.
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), requestIDKey, &requestState{id: id})))
	})
}

// NewRequestID returns the ID RequestID gives a request whose client sent
// client in X-Request-Id: client itself when it is short and printable,
// else a new random one. For code that answers requests without RequestID
// (the cache's fast hit path).
func NewRequestID(client string) string {
	if validID(client) {
		return client
	}
	// 96 random bits from the runtime's per-thread ChaCha8 generator
	// (seeded from the OS): an ID must be unique, not secret, and every
	// request pays for it (crypto/rand: 64 ns, this: 35 ns, of which the
	// string is most; BenchmarkNewRequestID).
	var b [12]byte
	binary.LittleEndian.PutUint64(b[:8], rand.Uint64())
	binary.LittleEndian.PutUint32(b[8:], rand.Uint32())
	return hex.EncodeToString(b[:])
}

func validID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c < 0x21 || c > 0x7e {
			return false
		}
	}
	return true
}

// WithRequestID returns ctx carrying id as its request's ID, for code that
// answers requests without going through RequestID (the PoP's fast hit
// path) and still feeds observers that log the ID.
func WithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestIDKey, id)
}

// GetRequestID returns the request's ID, or "" outside RequestID.
func GetRequestID(ctx context.Context) string {
	switch v := ctx.Value(requestIDKey).(type) {
	case *requestState:
		return v.id
	case string: // WithRequestID
		return v
	}
	return ""
}

// requestState is what RequestID keeps in a request's context: its ID,
// when the PoP made the response itself, why, and when the response's body
// was cut, why.
type requestState struct {
	id        string
	generated atomic.Pointer[string]
	bodyError atomic.Pointer[string]
	// origin is the last origin attempt made to answer the request
	// (MarkOrigin); nil while none was.
	origin atomic.Pointer[OriginFetch]
	// cacheStatus is the response's last Cache-Status entry (ours), set
	// by Observe before it calls the observers, on the request's own
	// goroutine: no other goroutine reads it.
	cacheStatus string
}

// MarkGenerated records that the response to ctx's request is made by the
// PoP itself rather than passed on from the origin (an origin that refused
// or did not answer in time, a failed plugin), and why: reason is a short
// fixed word such as "origin-timeout", never request data, since it becomes
// a metric label (meridian_http_responses_generated_total). It reports
// whether ctx came through RequestID (outside it there is nothing to mark).
func MarkGenerated(ctx context.Context, reason string) bool {
	st, ok := ctx.Value(requestIDKey).(*requestState)
	if ok {
		st.generated.Store(&reason)
	}
	return ok
}

// Generated returns the reason MarkGenerated recorded for ctx's request, or
// "" when its response came from the origin (or was not marked).
func Generated(ctx context.Context) string {
	if st, ok := ctx.Value(requestIDKey).(*requestState); ok {
		if g := st.generated.Load(); g != nil {
			return *g
		}
	}
	return ""
}

// BodyTruncated is the BodyError Observe records for a response its handler
// aborted (panic(http.ErrAbortHandler)) after sending the header, while the
// client was still there: the status was sent, the body the client got is
// cut short. The cache and the proxy abort so when the origin's body ends
// early (the origin reset the connection, or timeouts.idle ended a stalled
// body: the origin pool counts these as outcome body_error) or a stored body
// fails to read.
const BodyTruncated = "truncated"

// MarkBodyError records that the body of ctx's response was cut short, and
// why: reason is a short fixed word such as "origin-idle-timeout", never
// request data. The access log line then carries body_error=reason beside
// the status that was sent and the bytes that were. The first mark stands:
// code that knows the cause marks before Observe's generic BodyTruncated.
// It reports whether ctx came through RequestID or Observe (outside them
// there is nothing to mark).
func MarkBodyError(ctx context.Context, reason string) bool {
	st, ok := ctx.Value(requestIDKey).(*requestState)
	if ok {
		st.bodyError.CompareAndSwap(nil, &reason)
	}
	return ok
}

// BodyError returns the reason MarkBodyError recorded for ctx's request, or
// "" when its body was sent whole (or not marked).
func BodyError(ctx context.Context) string {
	if st, ok := ctx.Value(requestIDKey).(*requestState); ok {
		if e := st.bodyError.Load(); e != nil {
			return *e
		}
	}
	return ""
}

// OriginFetch is what the access log says of the origin exchange made to
// answer a request, as nginx's $upstream_addr, $upstream_status and
// $upstream_response_time do: the last attempt's server, its answer or why
// it failed, and how long it took; the origin pool records it
// (MarkOrigin) and the log reads it (Origin). A request that did not
// contact the origin (a hit, the PoP's own answer, a request that waited
// for another one's fetch) has none.
type OriginFetch struct {
	// Server is the origin server the last attempt went to, as the site's
	// configuration names it (host or host:port).
	Server string
	// Status is the status of the response header the origin sent; 0 when
	// the attempt failed (Error says why). It may differ from the status
	// the client got: a 304 that revalidated a stored 200, a 503 that
	// stale-if-error answered from a stored copy.
	Status int
	// Error is why the last attempt failed, in the words of the error
	// pages' Cache-Status detail ("origin-unreachable", "origin-timeout",
	// "origin-tls", "origin-error"), or "client-closed" when the client
	// went away before the origin answered; "" when the origin answered.
	Error string
	// Time is from sending the request (connecting included, as nginx
	// counts it) until the response header arrived, or the attempt failed.
	Time time.Duration
	// Attempts is how many origin attempts answering the request made:
	// more than 1 when a failed server's request went to another one.
	Attempts int
}

// MarkOrigin records an origin attempt made to answer ctx's request: the
// last one stands, and o.Attempts is set to how many were recorded (safe
// from any goroutine, as the other marks are). Only
// exchanges the client's answer depends on belong here: a fetch the client
// does not wait for (a stale-while-revalidate refresh) runs under Detach.
// It reports whether ctx came through RequestID or Observe (outside them
// there is nothing to record in).
func MarkOrigin(ctx context.Context, o OriginFetch) bool {
	st, ok := ctx.Value(requestIDKey).(*requestState)
	if !ok {
		return false
	}
	for {
		prev := st.origin.Load()
		o.Attempts = 1
		if prev != nil {
			o.Attempts = prev.Attempts + 1
		}
		if st.origin.CompareAndSwap(prev, &o) {
			return true
		}
	}
}

// Origin returns the last origin attempt MarkOrigin recorded for ctx's
// request, or the zero OriginFetch (Attempts 0) when it contacted none.
func Origin(ctx context.Context) OriginFetch {
	if st, ok := ctx.Value(requestIDKey).(*requestState); ok {
		if o := st.origin.Load(); o != nil {
			return *o
		}
	}
	return OriginFetch{}
}

// Detach returns ctx for work done on its request's behalf whose outcome
// is not the request's answer (a stale-while-revalidate refresh that
// outlives it): the request's ID stays (GetRequestID, for logs), its
// record does not, so MarkOrigin, MarkGenerated and MarkBodyError under
// the returned context leave the request's access log line alone.
func Detach(ctx context.Context) context.Context {
	if _, ok := ctx.Value(requestIDKey).(*requestState); !ok {
		return ctx
	}
	return WithRequestID(ctx, GetRequestID(ctx))
}

// CacheStatus returns the last Cache-Status entry (the PoP's own) of the
// response to ctx's request, as Observe saw it go out; "" before the
// observers run, or when the response had none.
func CacheStatus(ctx context.Context) string {
	if st, ok := ctx.Value(requestIDKey).(*requestState); ok {
		return st.cacheStatus
	}
	return ""
}

// Cache results of the access log's cache field: what the cache did for
// the request, as meridian_cache_requests_total counts it, with the tier
// for the answers a tier gave.
const (
	CacheHitL1     = "hit-l1"      // a fresh stored response, from the memory tier
	CacheHitL2     = "hit-l2"      // ... from the disk tier
	CacheHitL3     = "hit-l3"      // ... from the shared tier
	CacheHit       = "hit"         // ... from another tier
	CacheStale     = "stale"       // a stale stored response (stale-while-revalidate, stale-if-error, max-stale)
	CacheRevalid   = "revalidated" // validated with the origin (304) and served from a tier
	CacheMiss      = "miss"        // fetched from the origin (stored, or not cacheable)
	CacheCollapsed = "collapsed"   // answered by another request's origin fetch
	CachePass      = "pass"        // not for the cache (method, bypass, upgrade, a GET with a body)
	CacheError     = "error"       // the origin failed (or only-if-cached missed): the PoP's error page
	CacheNone      = "none"        // the cache was not asked (the PoP's or a plugin's own answer, a redirect)
)

// CacheResult turns the PoP's Cache-Status entry (CacheStatus) into the
// access log's cache field (the Cache* constants), without allocating: the
// entry says what the cache did ("meridian; hit; ttl=60; detail=l1",
// "meridian; fwd=uri-miss; fwd-status=200; stored", "meridian;
// fwd=bypass", "...; detail=origin-timeout").
func CacheResult(entry string) string {
	if entry == "" {
		return CacheNone
	}
	param := func(name string) (string, bool) {
		for part := range strings.SplitSeq(entry, ";") {
			k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
			if k == name {
				return v, true
			}
		}
		return "", false
	}
	detail, _ := param("detail")
	if _, ok := param("hit"); ok {
		tier, how, _ := strings.Cut(detail, "-")
		if strings.HasPrefix(how, "stale") {
			return CacheStale
		}
		if ttl, _ := param("ttl"); strings.HasPrefix(ttl, "-") {
			return CacheStale // served past its lifetime (max-stale)
		}
		switch tier {
		case "l1":
			return CacheHitL1
		case "l2":
			return CacheHitL2
		case "l3":
			return CacheHitL3
		}
		return CacheHit
	}
	fwd, ok := param("fwd")
	if !ok {
		return CacheNone
	}
	switch {
	case fwd == "bypass" || fwd == "method":
		if strings.HasPrefix(detail, "origin-") {
			return CacheError
		}
		return CachePass
	case detail == "collapsed":
		return CacheCollapsed
	case strings.HasPrefix(detail, "not-stored-"): // the cache said why it kept none
		return CachePass
	case strings.HasPrefix(detail, "origin-") || detail == "only-if-cached":
		return CacheError
	}
	if s, _ := param("fwd-status"); s == "304" && detail != "" { // a tier's copy, validated

		return CacheRevalid
	}
	return CacheMiss
}

// Recover turns a panic in a handler into a 500 (when nothing was written
// yet) and a logged stack, so one bad request never takes the PoP down.
// http.ErrAbortHandler is re-raised: it is net/http's way to abort a response.
// A panic after the header went out (Observe, inside Recover, marked the
// body cut) is logged and then aborts the response too: a 500 page
// appended to a started body would make the cut look like a whole answer.
func Recover(log *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			defer func() {
				v := recover()
				if v == nil {
					return
				}
				if v == http.ErrAbortHandler {
					panic(v)
				}
				log.Error("panic serving request", "request_id", GetRequestID(r.Context()), "host", r.Host, "path", r.URL.Path, "panic", v, "stack", string(debug.Stack()))
				if BodyError(r.Context()) != "" {
					panic(http.ErrAbortHandler)
				}
				http.Error(w, "meridian: internal error while serving this request; it has been logged", http.StatusInternalServerError)
			}()
			next.ServeHTTP(w, r)
		})
	}
}

// Recorder wraps a ResponseWriter to see the status and bytes written, and
// passes Flush, Hijack and the rest through via Unwrap.
type Recorder struct {
	http.ResponseWriter
	Status int
	Bytes  int64
	// WriteFailed is set once a Write failed: the client went away.
	WriteFailed bool
	// CacheStatus is the last Cache-Status entry of the final header as
	// it went out (the one nearest the client: ours), "" when none.
	CacheStatus string

	stamp HeaderStamp
	req   *http.Request
}

// HeaderStamp completes the final header of every response just before it
// goes out (ObserveStamp): h is the response's header, status its status
// (200 and up). It runs once per response, on the request's goroutine.
type HeaderStamp func(h http.Header, r *http.Request, status int)

// WriteHeader records the final status (1xx interim responses are passed on
// but not recorded).
func (r *Recorder) WriteHeader(code int) {
	if r.Status == 0 && code >= 200 {
		r.Status = code
		r.final(code)
	}
	r.ResponseWriter.WriteHeader(code)
}

// final runs, once, as the final header is about to go out: the stamp,
// then a look at the Cache-Status it leaves.
func (r *Recorder) final(code int) {
	h := r.ResponseWriter.Header()
	if r.stamp != nil {
		r.stamp(h, r.req, code)
	}
	if v := h["Cache-Status"]; len(v) > 0 {
		r.CacheStatus = lastEntry(v[len(v)-1])
	}
}

// lastEntry is the last comma-separated entry of a Cache-Status field
// value (RFC 9211 lists the cache nearest the client last).
func lastEntry(v string) string {
	for i := len(v) - 1; i >= 0; i-- {
		if v[i] == ',' {
			v = v[i+1:]
			break
		}
	}
	for len(v) > 0 && (v[0] == ' ' || v[0] == '\t') {
		v = v[1:]
	}
	return v
}

// Write records the bytes written.
func (r *Recorder) Write(p []byte) (int, error) {
	if r.Status == 0 {
		r.Status = http.StatusOK
		r.final(http.StatusOK)
	}
	n, err := r.ResponseWriter.Write(p)
	r.Bytes += int64(n)
	if err != nil {
		r.WriteFailed = true
	}
	return n, err
}

// Flush passes a flush on, so streamed responses stay streamed.
func (r *Recorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (r *Recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// Observer receives one call per finished request.
type Observer func(r *http.Request, status int, bytes int64, elapsed time.Duration)

// Observe wraps next so that each finished request is passed to every
// observer (access log, metrics, the PoP's load tracker).
//
// A handler that panics has not finished its response. Before any header,
// the request is observed as a 500, which Recover (outside Observe) answers
// (an abort this early leaves the client no answer at all, which is no
// success either). After the header, the status stands, since it was sent,
// but the body the client got is cut: unless the client had gone already
// (a failed write, the request's context ended), the request is marked
// with MarkBodyError(BodyTruncated), as nginx and Envoy record an upstream
// that broke mid-body, so an access log line never shows a cut response as
// a plain success; what the handler wrote is flushed first, so the client
// gets the status and the bytes logged (net/http would drop a buffered
// header and body on the abort: the client got no answer at all). The
// panic itself goes on unchanged (it is not recovered here, so Recover
// logs its original stack).
func Observe(observers ...Observer) func(http.Handler) http.Handler {
	return ObserveStamp(nil, observers...)
}

// StatusClientClosed is the status an access log line and the request
// metrics give a request whose client went away before any answer was
// sent: nginx's 499, which log tools already know.
const StatusClientClosed = 499

// ObserveStamp is Observe with stamp (nil: none) completing the final
// header of every response the handler sends, whoever in the chain writes
// it (the cache, a plugin's own answer, a page of the PoP's): the PoP adds
// its Via and, to the answers it made itself (MarkGenerated), its
// Cache-Status entry there. A handler that writes nothing is stamped as
// the 200 net/http then sends; one that panics before any header, as the
// 500 Recover sends (marked generated, reason "internal-error").
func ObserveStamp(stamp HeaderStamp, observers ...Observer) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			st, ok := r.Context().Value(requestIDKey).(*requestState)
			if !ok {
				// Without RequestID before Observe: a state of its own, for
				// MarkBodyError and MarkGenerated to record in.
				st = &requestState{id: GetRequestID(r.Context())}
				r = r.WithContext(context.WithValue(r.Context(), requestIDKey, st))
			}
			rec := &Recorder{ResponseWriter: w, stamp: stamp, req: r}
			finished := false
			defer func() {
				status := rec.Status
				switch {
				case finished && status == 0 && r.Context().Err() != nil:
					// The client went away before any answer: nothing was
					// sent, so the log and the metrics say 499, as nginx's.
					status = StatusClientClosed
				case finished:
					if status == 0 { // net/http sends a 200 with the header as it is
						rec.final(http.StatusOK)
					}
				case status == 0:
					status = http.StatusInternalServerError
					MarkGenerated(r.Context(), "internal-error")
					rec.final(status) // the header Recover's 500 goes out with
				case !rec.WriteFailed && r.Context().Err() == nil:
					MarkBodyError(r.Context(), BodyTruncated)
					// What the handler wrote may still sit in the server's
					// buffers, the header too (net/http drops them on an
					// abort): send it, so the client learns the status and
					// gets the bytes logged as sent before the cut.
					rec.Flush()
				}
				if status == 0 {
					status = http.StatusOK
				}
				elapsed := time.Since(start)
				st.cacheStatus = rec.CacheStatus
				for _, o := range observers {
					o(r, status, rec.Bytes, elapsed)
				}
			}()
			next.ServeHTTP(rec, r)
			finished = true
		})
	}
}

// AccessLog is an Observer writing one structured line per request.
func AccessLog(log *slog.Logger) Observer {
	return func(r *http.Request, status int, bytes int64, elapsed time.Duration) {
		ctx := r.Context()
		if !log.Enabled(ctx, slog.LevelInfo) {
			return
		}
		LogAccess(ctx, log, Access{
			RequestID: GetRequestID(ctx), Remote: r.RemoteAddr, Method: r.Method, Host: r.Host,
			URI: r.RequestURI, Proto: r.Proto, Status: status, Bytes: bytes, Elapsed: elapsed,
			BodyError: BodyError(ctx), Cache: CacheResult(CacheStatus(ctx)),
			UserAgent: r.Header.Get("User-Agent"), Referer: r.Header.Get("Referer"),
			Origin: Origin(ctx),
		})
	}
}

// Access is one access log line's fields.
type Access struct {
	RequestID, Remote, Method, Host, URI, Proto string
	Status                                      int
	// Bytes are the body bytes sent.
	Bytes   int64
	Elapsed time.Duration
	// BodyError is why the body was cut short ("" when it was sent whole,
	// see MarkBodyError). Callers fill it (AccessLog from the request's
	// context): LogAccess does not look it up again.
	BodyError string
	// Site is the site the request was routed to ("" outside a PoP,
	// UnknownSite for a host no site serves).
	Site string
	// Cache is what the cache did (a Cache* constant, CacheResult);
	// "" is logged as CacheNone.
	Cache string
	// UserAgent and Referer are the request's fields as sent (the log's
	// handler quotes and escapes them; LogAccess cuts them at
	// MaxLoggedField bytes).
	UserAgent, Referer string
	// Origin is the origin exchange made to answer the request (see
	// OriginFetch; Attempts 0: none). Callers fill it (AccessLog from the
	// request's context, Origin).
	Origin OriginFetch
}

// MaxLoggedField bounds the request fields an access log line copies
// (user agent, referer): a client must not make the PoP write kilobytes
// of log per request.
const MaxLoggedField = 512

func clip(s string) string {
	if len(s) > MaxLoggedField {
		return s[:MaxLoggedField]
	}
	return s
}

// LogAccess writes a's access log line, as AccessLog does, for a server that
// has no http.Request for it (the cache's fast path): request_id remote
// method host uri proto status bytes elapsed site cache ua referer. A
// request that contacted the origin (a.Origin) then has origin (the
// server), origin_status or, when the attempt failed, origin_error (the
// error page's detail), origin_time, and origin_attempts when it took
// more than one attempt; one that did not has none of them, so `grep
// origin_time` finds exactly the origin fetches. A response whose body was
// cut (a.BodyError) carries body_error=<why> last; a whole one has no such
// field, so `grep body_error` finds exactly the cut ones.
func LogAccess(ctx context.Context, log *slog.Logger, a Access) {
	if a.Cache == "" {
		a.Cache = CacheNone
	}
	attrs := [...]slog.Attr{
		slog.String("request_id", a.RequestID),
		slog.String("remote", a.Remote),
		slog.String("method", a.Method),
		slog.String("host", a.Host),
		slog.String("uri", a.URI),
		slog.String("proto", a.Proto),
		slog.Int("status", a.Status),
		slog.Int64("bytes", a.Bytes),
		slog.Duration("elapsed", a.Elapsed),
		slog.String("site", a.Site),
		slog.String("cache", a.Cache),
		slog.String("ua", clip(a.UserAgent)),
		slog.String("referer", clip(a.Referer)),
		{}, {}, {}, {}, // origin, origin_status or origin_error, origin_time, origin_attempts
		{}, // body_error
	}
	n := len(attrs) - 5
	if o := &a.Origin; o.Attempts > 0 {
		attrs[n] = slog.String("origin", o.Server)
		if o.Error != "" {
			attrs[n+1] = slog.String("origin_error", o.Error)
		} else {
			attrs[n+1] = slog.Int("origin_status", o.Status)
		}
		attrs[n+2] = slog.Duration("origin_time", o.Time)
		n += 3
		if o.Attempts > 1 {
			attrs[n] = slog.Int("origin_attempts", o.Attempts)
			n++
		}
	}
	if a.BodyError != "" {
		attrs[n] = slog.String("body_error", a.BodyError)
		n++
	}
	log.LogAttrs(ctx, slog.LevelInfo, "request", attrs[:n]...)
}
