package policy

import (
	"net/http"
	"testing"
	"time"
)

func TestParseDirectives(t *testing.T) {
	d := ParseDirectives([]string{`max-age=60, Private="Set-Cookie, X", no-cache`, `S-MAXAGE="30"`, ` ,, `, `max-age=5`})
	if v, ok := d.Seconds("max-age"); !ok || v != time.Minute {
		t.Errorf("max-age %v %v (first occurrence wins)", v, ok)
	}
	if d["private"] != "Set-Cookie, X" || !d.Has("no-cache") {
		t.Errorf("quoted list: %q", d)
	}
	if v, ok := d.Seconds("s-maxage"); !ok || v != 30*time.Second {
		t.Errorf("s-maxage %v", v)
	}
	if _, ok := ParseDirectives([]string{"max-age=-1"}).Seconds("max-age"); ok {
		t.Error("negative max-age accepted")
	}
}

func TestCurrentAge(t *testing.T) {
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	h := func(kv ...string) http.Header {
		x := http.Header{}
		for i := 0; i < len(kv); i += 2 {
			x.Set(kv[i], kv[i+1])
		}
		return x
	}
	tests := []struct {
		name           string
		h              http.Header
		req, resp, now time.Time
		want           time.Duration
	}{
		{"resident only", h("Date", base.Format(http.TimeFormat)), base, base, base.Add(10 * time.Second), 10 * time.Second},
		{"received Age plus delay", h("Date", base.Format(http.TimeFormat), "Age", "30"), base, base.Add(2 * time.Second), base.Add(2 * time.Second), 32 * time.Second},
		{"apparent age from old Date", h("Date", base.Add(-time.Minute).Format(http.TimeFormat)), base, base, base, time.Minute},
		{"Date in the future is not negative", h("Date", base.Add(time.Hour).Format(http.TimeFormat)), base, base, base, 0},
		{"bad Age ignored", h("Age", "abc"), base, base, base.Add(time.Second), time.Second},
	}
	for _, tc := range tests {
		if got := CurrentAge(tc.h, tc.req, tc.resp, tc.now); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestDecide(t *testing.T) {
	fresh := Freshness{Age: 10 * time.Second, Lifetime: time.Minute}
	stale := Freshness{Age: 2 * time.Minute, Lifetime: time.Minute, StaleWhileRevalidate: 2 * time.Minute}
	tests := []struct {
		name string
		f    Freshness
		req  Directives
		want Use
	}{
		{"fresh", fresh, nil, UseFresh},
		{"unknown request directive", fresh, Directives{"x-foo": ""}, UseFresh},
		{"request no-cache", fresh, Directives{"no-cache": ""}, Revalidate},
		{"stale within swr", stale, nil, UseStaleRevalidate},
		{"stale within swr but must-revalidate", Freshness{Age: 2 * time.Minute, Lifetime: time.Minute, MustRevalidate: true, StaleWhileRevalidate: time.Hour}, nil, Revalidate},
		{"response no-cache", Freshness{Age: 0, Lifetime: time.Hour, NoCache: true}, nil, Revalidate},
		{"max-stale without value", Freshness{Age: time.Hour, Lifetime: time.Minute}, Directives{"max-stale": ""}, UseFresh},
	}
	for _, tc := range tests {
		if got := Decide(tc.f, tc.req); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestSecondaryKeyNormalises(t *testing.T) {
	f := []string{"accept-encoding", "accept-language"}
	a := SecondaryKey(f, http.Header{"Accept-Encoding": {"gzip,  br"}, "Accept-Language": {"en"}})
	b := SecondaryKey(f, http.Header{"Accept-Encoding": {"gzip", "br"}, "Accept-Language": {"en"}})
	c := SecondaryKey(f, http.Header{"Accept-Encoding": {"gzip, br"}})
	d := SecondaryKey(f, http.Header{"Accept-Encoding": {"gzip, br"}, "Accept-Language": {""}})
	if a != b {
		t.Errorf("%q != %q", a, b)
	}
	if a == c || c == d {
		t.Errorf("absent and empty fields must differ from present ones: %q %q %q", a, c, d)
	}
}

func TestNormalizeAcceptEncoding(t *testing.T) {
	for _, c := range []struct {
		in   []string
		want string
	}{
		{[]string{"gzip, deflate, br, zstd"}, "br, gzip, zstd"},
		{[]string{"gzip, deflate, br"}, "br, gzip"},
		{[]string{"br, gzip"}, "br, gzip"},
		{[]string{"gzip", "br"}, "br, gzip"},
		{[]string{"GZIP"}, "gzip"},
		{[]string{"deflate, gzip"}, "gzip"},
		{[]string{"gzip;q=0.8, br;q=1.0"}, "br, gzip"},
		{[]string{"gzip;q=0, br"}, "br"},
		{[]string{"gzip; q=0.000"}, "identity"},
		{[]string{"br;q=1.0, gzip;q=0.8, *;q=0.1"}, "br, gzip, zstd"},
		{[]string{"*"}, "br, gzip, zstd"},
		{[]string{"*, br;q=0"}, "gzip, zstd"},
		{[]string{"*;q=0, gzip"}, "gzip"},
		{[]string{"identity"}, "identity"},
		{[]string{"deflate"}, "identity"},
		{[]string{""}, "identity"},
		{[]string{"gzip;q=abc"}, "gzip"},
		{[]string{",,gzip ,"}, "gzip"},
	} {
		if got := NormalizeAcceptEncoding(c.in); got != c.want {
			t.Errorf("%q: %q, want %q", c.in, got, c.want)
		}
	}
}

// TestSecondaryKeyAcceptEncoding: Accept-Encoding spellings that accept
// the same codings share a variant; ones that differ in what they accept,
// and an absent field, do not.
func TestSecondaryKeyAcceptEncoding(t *testing.T) {
	f := []string{"accept-encoding"}
	key := func(v ...string) string {
		if len(v) == 0 {
			return SecondaryKey(f, http.Header{})
		}
		return SecondaryKey(f, http.Header{"Accept-Encoding": v})
	}
	if a, b := key("gzip, deflate, br"), key("br;q=1.0, gzip;q=0.9, deflate;q=0.5"); a != b {
		t.Errorf("same codings, other spelling: %q != %q", a, b)
	}
	if a, b := key("gzip, br"), key("gzip"); a == b {
		t.Errorf("br accepted or not must differ: %q", a)
	}
	if a, b := key("identity"), key(); a == b {
		t.Errorf("absent and identity must differ: %q", a)
	}
}
