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
}

// WriteHeader records the final status (1xx interim responses are passed on
// but not recorded).
func (r *Recorder) WriteHeader(code int) {
	if r.Status == 0 && code >= 200 {
		r.Status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

// Write records the bytes written.
func (r *Recorder) Write(p []byte) (int, error) {
	if r.Status == 0 {
		r.Status = http.StatusOK
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
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			rec := &Recorder{ResponseWriter: w}
			if _, ok := r.Context().Value(requestIDKey).(*requestState); !ok {
				// Without RequestID before Observe: a state of its own, for
				// MarkBodyError and MarkGenerated to record in.
				r = r.WithContext(context.WithValue(r.Context(), requestIDKey, &requestState{id: GetRequestID(r.Context())}))
			}
			finished := false
			defer func() {
				status := rec.Status
				switch {
				case finished:
				case status == 0:
					status = http.StatusInternalServerError
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
			BodyError: BodyError(ctx),
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
}

// LogAccess writes a's access log line, as AccessLog does, for a server that
// has no http.Request for it (the cache's fast path). A response whose body
// was cut (a.BodyError) carries body_error=<why> after
// its status and bytes; a whole one has no such field, so
// `grep body_error` finds exactly the cut ones.
func LogAccess(ctx context.Context, log *slog.Logger, a Access) {
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
		{},
	}
	n := len(attrs) - 1
	if a.BodyError != "" {
		attrs[n] = slog.String("body_error", a.BodyError)
		n++
	}
	log.LogAttrs(ctx, slog.LevelInfo, "request", attrs[:n]...)
}
