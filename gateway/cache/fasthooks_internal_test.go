package cache

import (
	"slices"
	"testing"
)

// TestFastHeaderEdits: response hooks on the fast path read and change the
// answer's header block as they would an http.Header: names in any case,
// Set replacing every field of a name, Add appending (Set-Cookie), Del
// removing, line breaks in values neutralised; the framing fields stay the
// server's.
func TestFastHeaderEdits(t *testing.T) {
	h := FastHeader{b: []byte("Cache-Control: max-age=60\r\nContent-Length: 5\r\nSet-Cookie: a=1\r\nVia: 1.1 meridian\r\nSet-Cookie: b=2\r\n")}
	if got := h.Values("set-cookie"); !slices.Equal(got, []string{"a=1", "b=2"}) {
		t.Fatalf("Values(set-cookie) = %q", got)
	}
	h.Set("cache-control", "no-store")
	h.Add("Set-Cookie", "c=3")
	h.Del("VIA")
	h.Set("x-evil", "a\r\nInjected: yes")
	h.Set("Content-Length", "1")
	h.Del("content-length")
	h.Add("Transfer-Encoding", "chunked")
	h.Add("bad name", "x")
	want := "Content-Length: 5\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nCache-Control: no-store\r\nSet-Cookie: c=3\r\nX-Evil: a  Injected: yes\r\n"
	if string(h.b) != want {
		t.Errorf("header block:\n%q\nwant\n%q", h.b, want)
	}
	var names []string
	h.Each(func(k, _ string) { names = append(names, k) })
	if !slices.Equal(names, []string{"Content-Length", "Set-Cookie", "Set-Cookie", "Cache-Control", "Set-Cookie", "X-Evil"}) {
		t.Errorf("Each names %q", names)
	}
}

// TestHookedRequestSimple: a hook that removes what made a request one the
// fast path hands on (Authorization, as a bearer-token check does) makes it
// one the fast path answers; one that sets a request directive, or touches
// the validators the fast path reads, leaves it to the server.
func TestHookedRequestSimple(t *testing.T) {
	parse := func(head string) *fastRequest {
		req := new(fastRequest)
		if !parseFastRequest([]byte(head), "", req) {
			t.Fatalf("parse %q", head)
		}
		return req
	}
	auth := "GET / HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer t\r\n\r\n"
	for _, tc := range []struct {
		head          string
		changes       []HeaderChange
		plain, simple bool
	}{
		{auth, nil, true, false},
		{auth, []HeaderChange{{Name: "Authorization", Remove: true}}, true, true},
		{auth, []HeaderChange{{Name: "Authorization", Remove: true}, {Name: "X-User", Value: "u"}}, true, true},
		{"GET / HTTP/1.1\r\nHost: a\r\nAuthorization: x\r\nRange: bytes=0-1\r\n\r\n", []HeaderChange{{Name: "Authorization", Remove: true}}, true, false},
		{"GET / HTTP/1.1\r\nHost: a\r\n\r\n", []HeaderChange{{Name: "Cache-Control", Value: "no-cache"}}, false, true},
		{"GET / HTTP/1.1\r\nHost: a\r\n\r\n", []HeaderChange{{Name: "If-None-Match", Remove: true}}, false, true},
		{"GET / HTTP/1.1\r\nHost: a\r\nIf-None-Match: \"x\"\r\nIf-None-Match: \"y\"\r\nPragma: no-cache\r\n\r\n", []HeaderChange{{Name: "Pragma", Remove: true}}, true, false},
	} {
		req := parse(tc.head)
		call := &testCall{changes: tc.changes, plain: true}
		if plain := hookedPlain(req, call); plain != tc.plain || (plain && req.simple != tc.simple) {
			t.Errorf("%q with %v: plain %v simple %v, want %v %v", tc.head, tc.changes, plain, req.simple, tc.plain, tc.simple)
		}
	}
}

type testCall struct {
	changes []HeaderChange
	plain   bool
}

func (c *testCall) Plain() bool                          { return c.plain }
func (c *testCall) CacheKey() string                     { return "" }
func (c *testCall) RequestHeaderChanges() []HeaderChange { return c.changes }
func (c *testCall) Response(int, *FastHeader) bool       { return true }
func (c *testCall) FailBody(string) string               { return "" }
func (c *testCall) Close()                               {}

// BenchmarkFastHeaderSet: a response hook setting one new field on a
// typical hit's header block.
//
//	go test -run '^$' -bench FastHeaderSet -benchmem ./gateway/cache/
func BenchmarkFastHeaderSet(b *testing.B) {
	block := []byte("Accept-Ranges: bytes\r\nCache-Control: public, max-age=3600\r\nContent-Type: text/plain\r\n" +
		"Date: Fri, 27 Nov 2026 22:00:00 GMT\r\nEtag: \"5f2a-1\"\r\nLast-Modified: Fri, 27 Nov 2026 21:00:00 GMT\r\n" +
		"Via: 1.1 fra1 (meridian)\r\nContent-Length: 44\r\nAge: 12\r\nCache-Status: meridian; hit; ttl=3588; detail=l1\r\n" +
		"X-Request-Id: 0123456789abcdef01234567\r\n")
	buf := make([]byte, 0, 1024)
	var h FastHeader
	for b.Loop() {
		h.b = append(buf[:0], block...)
		h.Set("X-Frame-Options", "DENY")
	}
}
