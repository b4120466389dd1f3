package cache

import (
	"bufio"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// A connection the fast path handed to net/http would stay there for the
// rest of its life: on a keep-alive connection that sees a miss now and
// then (a browser, a load balancer in front of the PoP) every later hit
// would pay net/http's cost. So after net/http answers a request on such a
// connection, the connection is taken back (hijacked) when the exchange
// left it in a state the fast path can continue from: an HTTP/1.1 GET or
// HEAD without a body or Connection: close, answered with a final status
// and a complete Content-Length-delimited body. Anything else (a chunked
// response, an upgrade, a panic) stays with net/http, which knows how to
// finish it. A connection that comes back and hands its very next request
// on again stays with net/http for twice as many responses each time (up
// to 64; see reclaimAfter): a client whose every request goes to net/http
// would otherwise pay a hand-off, a new goroutine and a hijack per request.

// reclaimable reports whether r's connection may return to the fast path
// after its response.
func reclaimable(r *http.Request) bool {
	return r.ProtoMajor == 1 && r.ProtoMinor == 1 && !r.Close && r.ContentLength == 0 &&
		(r.Method == http.MethodGet || r.Method == http.MethodHead)
}

// reclaimWriter watches a response to tell whether it ended complete.
type reclaimWriter struct {
	http.ResponseWriter
	status  int
	written int64
}

func (w *reclaimWriter) WriteHeader(code int) {
	if w.status == 0 && (code >= 200 || code == http.StatusSwitchingProtocols) {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *reclaimWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.written += int64(n)
	return n, err
}

// ReadFrom keeps net/http's sendfile for bodies copied from files.
func (w *reclaimWriter) ReadFrom(r io.Reader) (int64, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	var n int64
	var err error
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(r)
	} else {
		n, err = io.Copy(w.ResponseWriter, r)
	}
	w.written += n
	return n, err
}

// Flush keeps streaming responses streaming.
func (w *reclaimWriter) Flush() { _ = http.NewResponseController(w.ResponseWriter).Flush() }

// Unwrap lets http.ResponseController reach net/http's writer.
func (w *reclaimWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// complete: the response ended with its whole Content-Length sent and left
// the connection open.
func (w *reclaimWriter) complete(r *http.Request) bool {
	if w.status < 200 || w.status == http.StatusSwitchingProtocols {
		return false
	}
	h := w.Header()
	for _, v := range h["Connection"] {
		if strings.Contains(strings.ToLower(v), "close") {
			return false
		}
	}
	if r.Method == http.MethodHead || w.status == http.StatusNoContent || w.status == http.StatusNotModified {
		return w.written == 0 && (h.Get("Content-Length") != "" || w.status != http.StatusOK)
	}
	cl, err := strconv.ParseInt(h.Get("Content-Length"), 10, 64)
	return err == nil && cl == w.written
}

// reclaim takes w's connection back from net/http and serves it on the fast
// path, with whatever net/http had read ahead of it and its bounce streak.
func (l *FastListener) reclaim(w http.ResponseWriter, streak int) {
	rc := http.NewResponseController(w)
	// Hijack does not push out what the handler's writer buffers.
	if err := rc.Flush(); err != nil {
		return
	}
	conn, brw, err := rc.Hijack()
	if err != nil {
		return
	}
	initial := buffered(brw.Reader)
	if cc, ok := conn.(*coalescingConn); ok {
		conn = cc.Conn
		if pc, ok := conn.(*prefixConn); ok {
			// What net/http had not read yet of the bytes handed to it
			// comes after what it buffered.
			initial = append(initial, pc.pre...)
			conn = pc.Conn
		}
	}
	l.c.metrics.fastReclaimed.Inc()
	l.start(conn, initial, streak, false)
}

func buffered(br *bufio.Reader) []byte {
	n := br.Buffered()
	if n == 0 {
		return nil
	}
	b, _ := br.Peek(n)
	return append([]byte(nil), b...)
}
