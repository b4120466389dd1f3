package headers

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestBuildRefuses(t *testing.T) {
	for _, c := range []struct {
		set    map[string]string
		remove []string
		req    bool
		want   string
	}{
		{map[string]string{"Content-Length": "1"}, nil, false, "Content-Length is written by the PoP"},
		{nil, []string{"cache-status"}, false, "Cache-Status is written by the PoP"},
		{map[string]string{"Host": "x"}, nil, true, "Host is written by the PoP"},
		{map[string]string{"accept-encoding": "br"}, nil, true, "Accept-Encoding is written by the PoP"},
		{nil, []string{"If-None-Match"}, true, "If-None-Match is written by the PoP"},
		{map[string]string{"Bad Name": "x"}, nil, false, `"Bad Name" is not a header field name`},
		{map[string]string{"X-A": "a\r\nInjected: 1"}, nil, false, "is not a header field value"},
		{map[string]string{"X-A": " padded"}, nil, false, "is not a header field value"},
		{map[string]string{"X-A": "1"}, []string{"x-a"}, false, "X-A is both set and removed"},
		{map[string]string{"X-A": "1", "x-a": "2"}, nil, false, "X-A is set twice"},
	} {
		build := ForResponses
		if c.req {
			build = ForRequests
		}
		if _, err := build(c.set, c.remove); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v %v: %v, want %q", c.set, c.remove, err, c.want)
		}
	}
	if p, err := ForResponses(nil, nil); p != nil || err != nil {
		t.Errorf("no changes: %v %v, want a nil policy", p, err)
	}
}

// TestApplyAndWrap: the changes replace, add and remove fields; Applied
// leaves its argument alone; a wrapped writer applies them once, to the
// final status only, also when the handler writes without WriteHeader.
func TestApplyAndWrap(t *testing.T) {
	p, err := ForResponses(map[string]string{"x-frame-options": "DENY", "X-New": "1"}, []string{"Server"})
	if err != nil {
		t.Fatal(err)
	}
	stored := http.Header{"X-Frame-Options": {"SAMEORIGIN", "DENY"}, "Server": {"nginx"}, "Etag": {`"v"`}}
	got := p.Applied(stored)
	if strings.Join(got["X-Frame-Options"], ",") != "DENY" || got.Get("X-New") != "1" || got.Get("Server") != "" || got.Get("Etag") != `"v"` {
		t.Errorf("Applied: %v", got)
	}
	if stored.Get("Server") != "nginx" || len(stored["X-Frame-Options"]) != 2 {
		t.Errorf("Applied changed its argument: %v", stored)
	}
	var nilPolicy *Policy
	if h := nilPolicy.Applied(stored); h.Get("Server") != "nginx" {
		t.Errorf("a nil policy changed %v", h)
	}

	rec := httptest.NewRecorder()
	w := p.Wrap(rec)
	w.Header().Set("Server", "origin")
	w.Header().Set("Link", "</a.css>; rel=preload")
	w.WriteHeader(http.StatusEarlyHints)
	if rec.Header().Get("Server") != "origin" {
		t.Errorf("a 103 was changed: %v", rec.Header())
	}
	w.Write([]byte("body"))
	if rec.Header().Get("Server") != "" || rec.Header().Get("X-Frame-Options") != "DENY" || rec.Body.String() != "body" {
		t.Errorf("after a Write: %d %v", rec.Code, rec.Header())
	}
	if nilPolicy.Wrap(rec) != rec {
		t.Error("a nil policy wrapped the writer")
	}
}

// TestMerge: a path's changes override the site's for the fields they
// name and keep the others.
func TestMerge(t *testing.T) {
	site, _ := ForResponses(map[string]string{"X-Frame-Options": "DENY", "Cache-Control": "no-cache"}, []string{"Server", "X-Debug"})
	path, _ := ForResponses(map[string]string{"Cache-Control": "public, max-age=31536000, immutable", "Server": "edge"}, []string{"X-Frame-Options"})
	h := http.Header{"Server": {"nginx"}, "X-Debug": {"1"}, "X-Frame-Options": {"SAMEORIGIN"}, "Cache-Control": {"max-age=60"}}
	Merge(site, path).Apply(h)
	want := http.Header{"Server": {"edge"}, "Cache-Control": {"public, max-age=31536000, immutable"}}
	if len(h) != len(want) || h.Get("Server") != "edge" || h.Get("Cache-Control") != want.Get("Cache-Control") {
		t.Errorf("merged: %v, want %v", h, want)
	}
	if Merge(site, nil) != site || Merge(nil, path) != path || Merge(nil, nil) != nil {
		t.Error("Merge with a nil side should return the other")
	}
}
