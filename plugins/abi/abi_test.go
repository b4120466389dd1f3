package abi

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func sampleRequest() *Request {
	return &Request{
		Method: "GET", Path: "/products/42", Query: "ref=home", Host: "shop.example.com",
		Headers: []Header{
			{"Authorization", "Bearer abcdefghijklmnopqrstuvwxyz0123456789"},
			{"Cookie", "ab=B; session=0123456789abcdef"},
			{"User-Agent", "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/128.0"},
		},
		ClientIP: "203.0.113.77", Country: "DE", Region: "BE", PoP: "fra1", PoPRegion: "eu-central",
		Time: time.UnixMilli(1764245000123),
	}
}

func TestRequestRoundTrip(t *testing.T) {
	in := sampleRequest()
	b, err := AppendRequest(nil, in)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeRequest(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.Path != in.Path || got.Query != in.Query || got.Host != in.Host || got.ClientIP != in.ClientIP ||
		got.Country != "DE" || got.Region != "BE" || got.PoP != "fra1" || got.PoPRegion != "eu-central" ||
		!got.Time.Equal(in.Time) || len(got.Headers) != 3 || got.Headers[0].Name != "authorization" ||
		got.Headers[0].Value != in.Headers[0].Value {
		t.Fatalf("round trip mismatch: %+v", got)
	}
}

// TestClientAddrEncodesLikeClientIP: a host passing the client address as
// a netip.Addr writes exactly the bytes of the same address as a string,
// for IPv4 and IPv6, and the string wins when both are set.
func TestClientAddrEncodesLikeClientIP(t *testing.T) {
	for _, ip := range []string{"203.0.113.77", "2001:db8::1", "::ffff:192.0.2.1"} {
		withString := sampleRequest()
		withString.ClientIP = ip
		withAddr := sampleRequest()
		withAddr.ClientIP, withAddr.ClientAddr = "", netip.MustParseAddr(ip)
		a, err := AppendRequest(nil, withString)
		if err != nil {
			t.Fatal(err)
		}
		b, err := AppendRequest(nil, withAddr)
		if err != nil {
			t.Fatal(err)
		}
		if string(a) != string(b) {
			t.Fatalf("%s: ClientAddr encodes as %x, ClientIP as %x", ip, b, a)
		}
		got, err := DecodeRequest(b)
		if err != nil || got.ClientIP != ip {
			t.Fatalf("%s: decoded client IP %q, %v", ip, got.ClientIP, err)
		}
	}
	both := sampleRequest()
	both.ClientAddr = netip.MustParseAddr("192.0.2.9")
	got, _ := AppendRequest(nil, both)
	if d, _ := DecodeRequest(got); d.ClientIP != both.ClientIP {
		t.Fatalf("ClientIP %q must win over ClientAddr, got %q", both.ClientIP, d.ClientIP)
	}
}

func TestAppendRequestRejectsHugeField(t *testing.T) {
	r := sampleRequest()
	r.Path = "/" + strings.Repeat("a", MaxField)
	if _, err := AppendRequest(nil, r); !errors.Is(err, ErrFieldTooLarge) {
		t.Fatalf("want ErrFieldTooLarge, got %v", err)
	}
}

// act builds one action record.
func act(tag byte, v []byte) []byte {
	b := []byte{tag, 0, 0}
	binary.LittleEndian.PutUint16(b[1:], uint16(len(v)))
	return append(b, v...)
}

func hdr(name, value string) []byte {
	return append(append([]byte{byte(len(name))}, name...), value...)
}

func TestDecodeActions(t *testing.T) {
	out := []byte{Version}
	out = append(out, act(ActSetRequestHeader, hdr("x-user", "alice"))...)
	out = append(out, act(ActRemoveRequestHeader, []byte("cookie"))...)
	out = append(out, act(ActSetPath, []byte("/v2/products"))...)
	out = append(out, act(ActSetQuery, []byte("a=1"))...)
	out = append(out, act(ActOrigin, []byte("eu-backup"))...)
	out = append(out, act(ActCacheKey, []byte("k1"))...)
	out = append(out, act(ActCacheTTL, []byte{60, 0, 0, 0})...)
	out = append(out, act(ActSetResponseHeader, hdr("x-ab", "B"))...)
	var a Actions
	if err := DecodeActions(PhaseRequest, out, &a); err != nil {
		t.Fatal(err)
	}
	if len(a.SetRequestHeaders) != 1 || a.SetRequestHeaders[0] != (Header{"x-user", "alice"}) ||
		a.RemoveRequestHeaders[0] != "cookie" || !a.RewritePath || a.Path != "/v2/products" ||
		a.Query != "a=1" || a.Origin != "eu-backup" || a.CacheKey != "k1" || a.TTL != time.Minute ||
		a.SetResponseHeaders[0].Value != "B" || a.Respond {
		t.Fatalf("decoded %+v", a)
	}

	respond := []byte{Version}
	respond = append(respond, act(ActRespondStatus, []byte{0x93, 0x01})...) // 403
	respond = append(respond, act(ActRespondHeader, hdr("content-type", "text/plain"))...)
	respond = append(respond, act(ActRespondBody, []byte("for"))...)
	respond = append(respond, act(ActRespondBody, []byte("bidden"))...)
	if err := DecodeActions(PhaseRequest, respond, &a); err != nil {
		t.Fatal(err)
	}
	if !a.Respond || a.Status != 403 || string(a.Body) != "forbidden" || len(a.RespondHeaders) != 1 {
		t.Fatalf("decoded %+v", a)
	}
}

func TestDecodeActionsRejectsBadOutput(t *testing.T) {
	cases := []struct {
		name  string
		phase Phase
		out   []byte
		want  string
	}{
		{"empty", PhaseRequest, nil, "empty output"},
		{"wrong version", PhaseRequest, []byte{7}, "version 7"},
		{"truncated header", PhaseRequest, []byte{1, 3, 5}, "truncated"},
		{"length past end", PhaseRequest, []byte{1, ActSetPath, 200, 0, '/'}, "claims 200 bytes"},
		{"unknown tag", PhaseRequest, append([]byte{1}, act(0x77, nil)...), "unknown action 0x77"},
		{"path without slash", PhaseRequest, append([]byte{1}, act(ActSetPath, []byte("x"))...), "must start with /"},
		{"header name with space", PhaseRequest, append([]byte{1}, act(ActSetRequestHeader, hdr("a b", "v"))...), "bad header name"},
		{"header value newline", PhaseRequest, append([]byte{1}, act(ActSetRequestHeader, hdr("a", "v\r\nx: y"))...), "control bytes"},
		{"name length past record", PhaseRequest, append([]byte{1}, act(ActSetRequestHeader, []byte{9, 'a'})...), "does not fit"},
		{"status out of range", PhaseRequest, append([]byte{1}, act(ActRespondStatus, []byte{5, 0})...), "out of range"},
		{"body without status", PhaseRequest, append([]byte{1}, act(ActRespondBody, []byte("x"))...), "without a respond status"},
		{"rewrite in on_response", PhaseResponse, append([]byte{1}, act(ActSetPath, []byte("/x"))...), "not allowed in on_response"},
		{"ttl wrong size", PhaseRequest, append([]byte{1}, act(ActCacheTTL, []byte{1})...), "needs 4 bytes"},
		{"garbage", PhaseRequest, []byte("{\"hello\": \"world\"}"), "version 123"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var a Actions
			err := DecodeActions(c.phase, c.out, &a)
			var de *DecodeError
			if !errors.As(err, &de) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("want DecodeError containing %q, got %v", c.want, err)
			}
		})
	}
}

func TestGeoRoundTrip(t *testing.T) {
	g, err := DecodeGeo(AppendGeo(nil, Geo{"FR", "IDF", 48.85, 2.35}))
	if err != nil || g.Country != "FR" || g.Region != "IDF" || g.Lat != 48.85 || g.Lon != 2.35 {
		t.Fatalf("got %+v %v", g, err)
	}
}

// jsonRequest is the JSON shape the binary layout was measured against.
type jsonRequest struct {
	Method    string            `json:"method"`
	Path      string            `json:"path"`
	Query     string            `json:"query,omitempty"`
	Host      string            `json:"host"`
	Headers   map[string]string `json:"headers,omitempty"`
	ClientIP  string            `json:"client_ip"`
	Country   string            `json:"country,omitempty"`
	Region    string            `json:"region,omitempty"`
	PoP       string            `json:"pop"`
	PoPRegion string            `json:"pop_region"`
	TimeMs    int64             `json:"time_ms"`
}

// BenchmarkEncodeRequest compares the chosen layout with JSON for the same
// request; the bytes/op metric is what crosses the wasm boundary.
func BenchmarkEncodeRequest(b *testing.B) {
	r := sampleRequest()
	b.Run("binary", func(b *testing.B) {
		b.ReportAllocs()
		buf := make([]byte, 0, 512)
		var n int
		for b.Loop() {
			out, _ := AppendRequest(buf[:0], r)
			n = len(out)
		}
		b.ReportMetric(float64(n), "wire-bytes")
	})
	b.Run("json", func(b *testing.B) {
		b.ReportAllocs()
		var n int
		for b.Loop() {
			j := jsonRequest{Method: r.Method, Path: r.Path, Query: r.Query, Host: r.Host,
				Headers: make(map[string]string, len(r.Headers)), ClientIP: r.ClientIP, Country: r.Country,
				Region: r.Region, PoP: r.PoP, PoPRegion: r.PoPRegion, TimeMs: r.Time.UnixMilli()}
			for _, h := range r.Headers {
				j.Headers[strings.ToLower(h.Name)] = h.Value
			}
			out, _ := json.Marshal(j)
			n = len(out)
		}
		b.ReportMetric(float64(n), "wire-bytes")
	})
}

// BenchmarkDecodeActions compares decoding a typical header-injection answer.
func BenchmarkDecodeActions(b *testing.B) {
	out := []byte{Version}
	out = append(out, act(ActSetRequestHeader, hdr("x-meridian-pop", "fra1"))...)
	out = append(out, act(ActSetResponseHeader, hdr("x-frame-options", "DENY"))...)
	js := []byte(`{"set_request_headers":{"x-meridian-pop":"fra1"},"set_response_headers":{"x-frame-options":"DENY"}}`)
	b.Run("binary", func(b *testing.B) {
		b.ReportAllocs()
		var a Actions
		for b.Loop() {
			_ = DecodeActions(PhaseRequest, out, &a)
		}
		b.ReportMetric(float64(len(out)), "wire-bytes")
	})
	b.Run("json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var v struct {
				SetRequestHeaders  map[string]string `json:"set_request_headers"`
				SetResponseHeaders map[string]string `json:"set_response_headers"`
			}
			_ = json.Unmarshal(js, &v)
		}
		b.ReportMetric(float64(len(js)), "wire-bytes")
	})
}

// FuzzDecodeActions: no output, however hostile, panics the decoder, and
// what it accepts is well-formed.
func FuzzDecodeActions(f *testing.F) {
	f.Add([]byte{Version})
	f.Add(append([]byte{Version}, act(ActSetRequestHeader, hdr("x-a", "b"))...))
	f.Add(append([]byte{Version}, act(ActRespondStatus, []byte{200, 0})...))
	f.Add([]byte{Version, ActSetPath, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, out []byte) {
		var a Actions
		for _, ph := range []Phase{PhaseRequest, PhaseResponse} {
			if err := DecodeActions(ph, out, &a); err != nil {
				continue
			}
			if a.RewritePath && (a.Path == "" || a.Path[0] != '/') {
				t.Fatalf("accepted path %q", a.Path)
			}
			for _, h := range a.SetRequestHeaders {
				if !validToken([]byte(h.Name)) || strings.ContainsAny(h.Value, "\r\n") {
					t.Fatalf("accepted header %q: %q", h.Name, h.Value)
				}
			}
			if a.Respond && (a.Status < 100 || a.Status > 999) {
				t.Fatalf("accepted status %d", a.Status)
			}
		}
	})
}

// TestDecodedActionsDoNotAliasOutput: the native engine reuses its output
// buffer for the next call, so decoded strings must be copies.
func TestDecodedActionsDoNotAliasOutput(t *testing.T) {
	out := []byte{Version}
	out = append(out, act(ActSetRequestHeader, hdr("x-a", "one"))...)
	out = append(out, act(ActSetPath, []byte("/p"))...)
	var a Actions
	if err := DecodeActions(PhaseRequest, out, &a); err != nil {
		t.Fatal(err)
	}
	for i := range out {
		out[i] = 'z'
	}
	if len(a.SetRequestHeaders) != 1 || a.SetRequestHeaders[0] != (Header{"x-a", "one"}) || a.Path != "/p" {
		t.Fatalf("decoded actions changed with the output buffer: %+v", a)
	}
}

// TestTokenChars checks the bit sets behind validToken against RFC 9110's
// definition of a token, byte by byte.
func TestTokenChars(t *testing.T) {
	for c := 0; c < 256; c++ {
		want := c > ' ' && c < 0x7f && !strings.ContainsRune("\"(),/:;<=>?@[\\]{}", rune(c))
		if got := validToken([]byte{byte(c)}); got != want {
			t.Errorf("byte 0x%02x: token %v, want %v", c, got, want)
		}
	}
}

// TestDecodeActionsMemo: the same small answer again decodes to the same
// actions without allocating (a copy of the remembered decoding); another
// answer is decoded from its own bytes and remembered instead; an answer
// that failed to decode fails again, every time.
func TestDecodeActionsMemo(t *testing.T) {
	shop := append([]byte{Version}, act(ActSetRequestHeader, hdr("x-site", "shop"))...)
	shop = append(shop, act(ActSetPath, []byte("/v2"))...)
	shop = append(shop, act(ActCacheTTL, []byte{60, 0, 0, 0})...)
	blog := append([]byte{Version}, act(ActSetResponseHeader, hdr("x-site", "blog"))...)
	bad := append([]byte{Version}, act(ActSetRequestHeader, hdr("x site", "shop"))...)
	var m ActionsMemo
	var a Actions
	if err := DecodeActionsMemo(PhaseRequest, shop, &m, &a); err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(100, func() {
		if err := DecodeActionsMemo(PhaseRequest, shop, &m, &a); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 || len(a.SetRequestHeaders) != 1 || a.SetRequestHeaders[0] != (Header{"x-site", "shop"}) ||
		!a.RewritePath || a.Path != "/v2" || !a.HasTTL || a.TTL != time.Minute || len(a.SetResponseHeaders) != 0 {
		t.Fatalf("%v allocations, actions %+v", allocs, a)
	}
	for range 2 {
		if err := DecodeActionsMemo(PhaseRequest, blog, &m, &a); err != nil {
			t.Fatal(err)
		}
		if len(a.SetRequestHeaders) != 0 || a.RewritePath || a.Path != "" || a.HasTTL ||
			len(a.SetResponseHeaders) != 1 || a.SetResponseHeaders[0] != (Header{"x-site", "blog"}) {
			t.Fatalf("another answer: %+v", a)
		}
	}
	for range 2 {
		if err := DecodeActionsMemo(PhaseRequest, bad, &m, &a); err == nil {
			t.Fatal("a bad answer must fail every time")
		}
	}
	if err := DecodeActionsMemo(PhaseResponse, shop, &m, &a); err == nil {
		t.Fatal("a request-phase answer must fail in on_response, memo or not")
	}
	// The caller changing the decoded actions does not change the memo.
	if err := DecodeActionsMemo(PhaseRequest, shop, &m, &a); err != nil {
		t.Fatal(err)
	}
	a.SetRequestHeaders[0].Value = "changed"
	if err := DecodeActionsMemo(PhaseRequest, shop, &m, &a); err != nil || a.SetRequestHeaders[0].Value != "shop" {
		t.Fatalf("after a change by the caller: %+v %v", a.SetRequestHeaders, err)
	}
}
