package cache_test

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/gateway/cache"
)

// TestRangeOnAMiss: a GET with one byte range that misses is answered with
// that range (206, Content-Range, only those bytes) while the whole object
// fills and is stored, as Varnish, nginx and the CDNs do; what a single
// range cannot answer that way (several ranges, If-Range, an unknown
// length) gets the whole object, and a range past the end 416.
func TestRangeOnAMiss(t *testing.T) {
	const size = 100_000
	body := make([]byte, size)
	for i := range body {
		body[i] = byte('a' + i%26)
	}
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=600")
		w.Header().Set("Content-Type", "application/octet-stream")
		if !strings.HasPrefix(r.URL.Path, "/chunked") {
			w.Header().Set("Content-Length", strconv.Itoa(size))
		}
		w.Write(body)
	}, envOpt{site: cache.SitePolicy{SiteID: "site1"}, timeout: 5 * time.Second})
	for i, c := range []struct {
		path, rng, ifRange string
		status             int
		from, to           int // the bytes expected, [from, to)
		contentRange       string
	}{
		{"/a", "bytes=10-19", "", 206, 10, 20, "bytes 10-19/100000"},
		{"/b", "bytes=-5", "", 206, size - 5, size, "bytes 99995-99999/100000"},
		{"/c", "bytes=99990-", "", 206, 99990, size, "bytes 99990-99999/100000"},
		{"/d", "bytes=0-0", "", 206, 0, 1, "bytes 0-0/100000"},
		{"/e", "bytes=50000-999999", "", 206, 50000, size, "bytes 50000-99999/100000"},
		{"/f", "bytes=200000-", "", 416, 0, 0, "bytes */100000"},
		{"/g", "bytes=0-1,5-6", "", 200, 0, size, ""},
		{"/h", "bytes=0-9", `"v1"`, 200, 0, size, ""},
		{"/chunked", "bytes=0-9", "", 200, 0, size, ""},
	} {
		kv := []string{"Range", c.rng}
		if c.ifRange != "" {
			kv = append(kv, "If-Range", c.ifRange)
		}
		before := e.count.Load()
		r := e.get(c.path, kv...)
		if e.count.Load() != before+1 {
			t.Fatalf("%d %s %s: not a miss (Cache-Status %q)", i, c.path, c.rng, r.cs())
		}
		if r.status != c.status || r.header.Get("Content-Range") != c.contentRange {
			t.Fatalf("%d %s %s: %d, Content-Range %q; want %d, %q", i, c.path, c.rng, r.status, r.header.Get("Content-Range"), c.status, c.contentRange)
		}
		if c.status != 416 && r.body != string(body[c.from:c.to]) {
			t.Fatalf("%d %s %s: %d bytes, want bytes [%d,%d)", i, c.path, c.rng, len(r.body), c.from, c.to)
		}
		if c.status == 206 && r.header.Get("Content-Length") != fmt.Sprint(c.to-c.from) {
			t.Fatalf("%d %s: Content-Length %q", i, c.path, r.header.Get("Content-Length"))
		}
		// The whole object was stored: later GETs get all of it, from the
		// fill still running (collapsed) or, once it ends, from a hit,
		// without asking the origin again.
		if c.status != 416 {
			fetched := e.count.Load()
			for deadline := time.Now().Add(10 * time.Second); ; {
				r := e.get(c.path)
				if r.body != string(body) || e.count.Load() != fetched {
					t.Fatalf("%d %s: after the range, %q with %d bytes, %d more origin requests; want the whole object from the fill", i, c.path, r.cs(), len(r.body), e.count.Load()-fetched)
				}
				if strings.Contains(r.cs(), "hit") {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%d %s: never a hit after the range's fill: %q", i, c.path, r.cs())
				}
			}
		}
	}
}
