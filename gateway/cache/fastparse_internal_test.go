package cache

import (
	"bufio"
	"bytes"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// FuzzFastParserAgreesWithNetHTTP: whatever request head the fast path's
// parser accepts, net/http reads the same way (same method, target, Host, no
// body), and the cache key the fast path computes is the one the handler
// computes from net/http's parse. So a request can never mean one thing to
// the fast path and another to the server behind it. The seeds run in every
// `go test`; `go test -fuzz FuzzFastParser ./gateway/cache/` explores.
func FuzzFastParserAgreesWithNetHTTP(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"HEAD /x?y=1&z HTTP/1.1\r\nHost: A.example:80\r\nAccept: */*\r\n\r\n",
		"GET /p(a)th:@!$&'*+,;=/%41%2f~ HTTP/1.1\r\nhost: x\r\nConnection: keep-alive, close\r\n\r\n",
		"GET /a HTTP/1.1\r\nHost: x\r\nX-Request-Id: abc\r\nIf-None-Match: \"e\"\r\n\r\n",
		"GET /a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
		"GET /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
		"GET /a HTTP/1.1\r\nHost: x\r\n Host: y\r\n\r\n",
		"GET /a HTTP/1.1\r\nHost: x\nHost: y\r\n\r\n",
		"GET /a HTTP/1.1\r\nHost: x\r\nHost: x\r\n\r\n",
		"GET /%zz HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /a HTTP/1.0\r\nHost: x\r\n\r\n",
		"GET /a HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n",
		"GET /a HTTP/1.1\r\nHost: x\r\nX: \t v \t\r\n\r\n",
		"GET /q?b=2&utm_source=x&a=1 HTTP/1.1\r\nHost: x\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	site := SitePolicy{SiteID: "s", SortQuery: true, IgnoreQuery: []string{"utm_source"}}
	f.Fuzz(func(t *testing.T, head []byte) {
		n := bytes.Index(head, []byte("\r\n\r\n"))
		if n < 0 {
			return
		}
		head = head[:n+4]
		var fr fastRequest
		if !parseFastRequest(head, "x-request-id", &fr) {
			return // net/http's to judge
		}
		r, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(head)))
		if err != nil {
			t.Fatalf("the fast path accepts %q, net/http refuses it: %v", head, err)
		}
		wantMethod := http.MethodGet
		if fr.head {
			wantMethod = http.MethodHead
		}
		switch {
		case r.Method != wantMethod:
			t.Fatalf("%q: method %q here, %q for net/http", head, wantMethod, r.Method)
		case r.RequestURI != string(fr.target):
			t.Fatalf("%q: target %q here, %q for net/http", head, fr.target, r.RequestURI)
		case r.Host != string(fr.host):
			t.Fatalf("%q: host %q here, %q for net/http", head, fr.host, r.Host)
		case r.ContentLength != 0 || len(r.TransferEncoding) > 0:
			t.Fatalf("%q: the fast path saw no body, net/http sees one", head)
		case r.Close != fr.close:
			t.Fatalf("%q: close %v here, %v for net/http", head, fr.close, r.Close)
		}
		if got, want := string(appendFastURL(nil, &fr, &site)), requestURL(r, &site); got != want {
			t.Fatalf("%q: cache URL %q here, %q from net/http's parse", head, got, want)
		}
		// The handler parses the same URL: no cleaning or redirect differs.
		if u, err := url.ParseRequestURI(string(fr.target)); err != nil || u.EscapedPath() != string(fr.path) {
			t.Fatalf("%q: path %q does not survive net/url (%v)", head, fr.path, err)
		}
		if got := fr.header(); len(got) != len(r.Header) {
			t.Fatalf("%q: %d header fields here, %d for net/http", head, len(got), len(r.Header))
		}
		for k, vs := range fr.header() {
			if strings.Join(r.Header[k], "\x00") != strings.Join(vs, "\x00") {
				t.Fatalf("%q: header %s = %q here, %q for net/http", head, k, vs, r.Header[k])
			}
		}
	})
}
