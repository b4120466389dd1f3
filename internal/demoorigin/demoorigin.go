// Package demoorigin is the origin server `meridian dev` starts so that the
// stack has something to proxy and cache out of the box. It shows cache
// behaviour on purpose: a cacheable page, an uncacheable API, a slow
// endpoint, sized bodies, a stylesheet sent uncompressed (for the edge's
// compression) and chosen status codes.
package demoorigin

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Origin is the demo origin's handler; it counts the requests it serves so
// that tests and the curious can see what the cache saved.
type Origin struct {
	requests atomic.Int64
	mux      *http.ServeMux
}

// New builds the demo origin.
func New() *Origin {
	o := &Origin{mux: http.NewServeMux()}
	o.mux.HandleFunc("GET /{$}", o.home)
	o.mux.HandleFunc("GET /api/time", o.apiTime)
	o.mux.HandleFunc("GET /slow", o.slow)
	o.mux.HandleFunc("GET /bytes/{n}", o.bytes)
	o.mux.HandleFunc("GET /assets/app.css", o.stylesheet)
	o.mux.HandleFunc("GET /status/{code}", o.status)
	o.mux.HandleFunc("/echo", o.echo)
	return o
}

// Requests is how many requests the origin has served.
func (o *Origin) Requests() int64 { return o.requests.Load() }

// ServeHTTP implements http.Handler.
func (o *Origin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	o.requests.Add(1)
	w.Header().Set("Server", "meridian-demo-origin")
	o.mux.ServeHTTP(w, r)
}

func (o *Origin) home(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "public, max-age=60")
	w.Header().Set("Surrogate-Key", "home")
	fmt.Fprintf(w, `<!doctype html>
<title>Meridian demo origin</title>
<h1>Hello from the Meridian demo origin</h1>
<p>Host %s, generated at %s (request #%d at the origin). Cacheable for 60 s.</p>
<p>Try /api/time (no-store), /slow?ms=500, /bytes/1048576, /assets/app.css, /status/503, /echo.</p>
`, r.Host, time.Now().UTC().Format(time.RFC3339Nano), o.requests.Load())
}

func (o *Origin) apiTime(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	fmt.Fprintf(w, `{"time":%q}`+"\n", time.Now().UTC().Format(time.RFC3339Nano))
}

func (o *Origin) slow(w http.ResponseWriter, r *http.Request) {
	ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
	ms = min(max(ms, 0), 60_000)
	select {
	case <-time.After(time.Duration(ms) * time.Millisecond):
	case <-r.Context().Done():
		return
	}
	w.Header().Set("Cache-Control", "public, max-age=30")
	fmt.Fprintf(w, "slept %d ms\n", ms)
}

func (o *Origin) bytes(w http.ResponseWriter, r *http.Request) {
	n, err := strconv.ParseInt(r.PathValue("n"), 10, 64)
	if err != nil || n < 0 || n > 1<<30 {
		http.Error(w, "bytes: want a size in [0, 1GiB]", http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
	w.Header().Set("Cache-Control", "public, max-age=300")
	w.Header().Set("ETag", fmt.Sprintf(`"bytes-%d"`, n))
	_, _ = io.CopyN(w, pattern{}, n)
}

// Stylesheet is the body of /assets/app.css: text the origin sends without
// compression, as an S3 bucket does, so that the edge's gzip shows.
func Stylesheet() string {
	var b strings.Builder
	for i := range 64 {
		fmt.Fprintf(&b, ".card-%d { margin: %dpx; padding: 4px 8px; border: 1px solid #ccd; color: #223; }\n", i, i%16)
	}
	return b.String()
}

func (o *Origin) stylesheet(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/css; charset=utf-8")
	w.Header().Set("Cache-Control", "public, max-age=300")
	w.Header().Set("ETag", `"app-css-1"`)
	io.WriteString(w, Stylesheet())
}

func (o *Origin) status(w http.ResponseWriter, r *http.Request) {
	code, err := strconv.Atoi(r.PathValue("code"))
	if err != nil || code < 200 || code > 599 {
		http.Error(w, "status: want a code in [200, 599]", http.StatusBadRequest)
		return
	}
	w.WriteHeader(code)
	fmt.Fprintf(w, "status %d\n", code)
}

func (o *Origin) echo(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	fmt.Fprintf(w, "%s %s %s\n", r.Method, r.URL.RequestURI(), r.Proto)
	_ = r.Header.Write(w)
	fmt.Fprintln(w)
	_, _ = io.Copy(w, r.Body)
}

// pattern is an endless reader of printable bytes.
type pattern struct{}

func (pattern) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'a' + byte(i%26)
	}
	return len(p), nil
}
