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

// requestState is what RequestID keeps in a request's context: its ID and,
// when the PoP made the response itself, why.
type requestState struct {
	id        string
	generated atomic.Pointer[string]
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

// Recover turns a panic in a handler into a 500 (when nothing was written
// yet) and a logged stack, so one bad request never takes the PoP down.
// http.ErrAbortHandler is re-raised: it is net/http's way to abort a response.
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
func Observe(observers ...Observer) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			rec := &Recorder{ResponseWriter: w}
			defer func() {
				status := rec.Status
				if status == 0 {
					status = http.StatusOK
				}
				elapsed := time.Since(start)
				for _, o := range observers {
					o(r, status, rec.Bytes, elapsed)
				}
			}()
			next.ServeHTTP(rec, r)
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
		})
	}
}

// Access is one access log line's fields.
type Access struct {
	RequestID, Remote, Method, Host, URI, Proto string
	Status                                      int
	Bytes                                       int64
	Elapsed                                     time.Duration
}

// LogAccess writes a's access log line, as AccessLog does, for a server that
// has no http.Request for it (the cache's fast path).
func LogAccess(ctx context.Context, log *slog.Logger, a Access) {
	log.LogAttrs(ctx, slog.LevelInfo, "request",
		slog.String("request_id", a.RequestID),
		slog.String("remote", a.Remote),
		slog.String("method", a.Method),
		slog.String("host", a.Host),
		slog.String("uri", a.URI),
		slog.String("proto", a.Proto),
		slog.Int("status", a.Status),
		slog.Int64("bytes", a.Bytes),
		slog.Duration("elapsed", a.Elapsed),
	)
}
