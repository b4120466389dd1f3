package plugins_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/plugins"
	"github.com/meridian-edge/meridian/plugins/abi"
	"github.com/meridian-edge/meridian/plugins/plugintest"
)

var (
	asOnce sync.Once
	asWasm []byte
	asErr  error
)

// assemblyScript builds the AssemblyScript example once per test binary.
func assemblyScript(t testing.TB) []byte {
	t.Helper()
	asOnce.Do(func() {
		dir, err := tempDir()
		if err != nil {
			asErr = err
			return
		}
		defer os.RemoveAll(dir)
		asWasm, asErr = plugintest.AssemblyScript(context.Background(), dir)
	})
	if asErr != nil {
		t.Fatal(asErr)
	}
	return asWasm
}

// diffChains are the chains the differential test runs: every example
// plugin (Go and AssemblyScript) alone with a config that exercises it,
// and one chain of several.
func diffChains() map[string]*plugins.Chain {
	one := func(plugin string, cfg map[string]string, hdrs ...string) *plugins.Chain {
		return &plugins.Chain{Site: "s", Entries: []plugins.Entry{{Plugin: plugin, Config: cfg, RequestHeaders: hdrs, ResponseHeaders: []string{"content-type"}}}}
	}
	return map[string]*plugins.Chain{
		"noop":       one("noop", nil),
		"headers":    one("headers", map[string]string{"request": "x-site: shop\nx-b: 2", "response": "x-frame-options: DENY"}),
		"bearerauth": one("bearerauth", map[string]string{"tokens": "s3cret, other"}, "authorization"),
		"geoblock":   one("geoblock", map[string]string{"countries": "KP,IR", "regions": "US-CA", "annotate": "true"}),
		"absplit":    one("absplit", map[string]string{"percent_b": "30", "origin_a": "a", "origin_b": "b"}, "cookie"),
		"ratelimit":  one("ratelimit", map[string]string{"limit": "3", "window_seconds": "10"}),
		"probe":      one("sandboxprobe", nil),
		"as-headers": one("as-headers", map[string]string{"request": "x-as: 1", "response": "x-as-resp: 2",
			"rewrite_prefix": "/legacy/", "rewrite_to": "/v2/", "cache_ttl": "120", "no_store": "false"}),
		"chain": {Site: "s", Entries: []plugins.Entry{
			{Plugin: "bearerauth", Config: map[string]string{"tokens": "t"}, RequestHeaders: []string{"authorization"}},
			{Plugin: "absplit", Config: map[string]string{"percent_b": "70"}, RequestHeaders: []string{"cookie"}},
			{Plugin: "as-headers", Config: map[string]string{"request": "x-c: 3", "rewrite_prefix": "/old", "rewrite_to": "/new"}},
			{Plugin: "headers", Config: map[string]string{"response": "x-last: 1"}},
		}},
	}
}

// genRequest makes a varied request description: methods, escaped and long
// paths, queries, headers the plugins look at (good and bad tokens, cookies)
// and ones they do not, client addresses, geo known or not, times across
// rate-limit windows.
func genRequest(r *rand.Rand) (*abi.Request, plugins.GeoInfo) {
	pick := func(s ...string) string { return s[r.IntN(len(s))] }
	text := func(n int) string {
		const chars = "abcdefghijklmnopqrstuvwxyz0123456789-._~%é日"
		var b strings.Builder
		for range r.IntN(n + 1) {
			b.WriteString(string([]rune(chars)[r.IntN(len([]rune(chars)))]))
		}
		return b.String()
	}
	req := &abi.Request{
		Method:    pick("GET", "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"),
		Path:      pick("/", "/legacy/a", "/old/x/y", "/a%20b", "/p/"+text(40), "/"+strings.Repeat("x", r.IntN(3000))),
		Query:     pick("", "a=1", "q="+text(20), "x=1&y=2&z="+text(200)),
		Host:      pick("shop.example", "www.shop.example", "a.b.c.example"),
		ClientIP:  pick("192.0.2.1", "198.51.100.7", "203.0.113.9", fmt.Sprintf("10.%d.%d.%d", r.IntN(256), r.IntN(256), r.IntN(256)), "2001:db8::1"),
		Country:   pick("", "DE", "US", "KP", "IR", "FR"),
		Region:    pick("", "BE", "CA", "NY", "01"),
		PoP:       pick("fra1", "iad1"),
		PoPRegion: pick("eu-central", "us-east"),
		Time:      time.UnixMilli(1_700_000_000_000 + r.Int64N(60_000)),
	}
	switch r.IntN(5) {
	case 0:
		req.Headers = append(req.Headers, abi.Header{Name: "authorization", Value: "Bearer " + pick("s3cret", "other", "t", "wrong", "")})
	case 1:
		req.Headers = append(req.Headers, abi.Header{Name: "authorization", Value: "Basic " + text(30)})
	}
	if r.IntN(2) == 0 {
		req.Headers = append(req.Headers, abi.Header{Name: "cookie", Value: pick("mrd_ab=a", "mrd_ab=b", "x=1; mrd_ab=zz", "mrd_ab=b; y="+text(50))})
	}
	for range r.IntN(4) {
		req.Headers = append(req.Headers, abi.Header{Name: "x-" + pick("a", "trace", "long"), Value: text(300)})
	}
	geo := plugins.GeoInfo{}
	if req.Country != "" && r.IntN(3) > 0 {
		geo = plugins.GeoInfo{Country: req.Country, Region: req.Region, Lat: r.Float64()*180 - 90, Lon: r.Float64()*360 - 180, Known: true}
	}
	return req, geo
}

// step is what one plugin call did: its actions, or the kind of its error.
type step struct {
	Entry   int
	Phase   string
	Kind    plugins.ErrorKind
	Actions abi.Actions
}

// runChain runs chain for req as the middleware does: on_request in order
// (each sees the request as changed by the ones before; a direct answer
// stops), then on_response in reverse order.
func runChain(t *testing.T, h *plugins.Host, chain *plugins.Chain, req abi.Request, geo plugins.GeoInfo, status int) []step {
	t.Helper()
	ctx := context.Background()
	x := h.Begin(chain, geo)
	defer x.Close()
	var steps []step
	ran := 0
	for i := range chain.Entries {
		ran = i + 1
		var a abi.Actions
		err := x.Request(ctx, i, &req, &a)
		steps = append(steps, step{Entry: i, Phase: "request", Kind: kindOrEmpty(err), Actions: a})
		if err != nil {
			continue
		}
		applyRequest(&req, &a)
		if a.Respond {
			status = a.Status
			break
		}
	}
	resp := &abi.Response{Status: status, Headers: []abi.Header{{Name: "content-type", Value: "text/plain"}}, Time: req.Time}
	for i := ran - 1; i >= 0; i-- {
		var a abi.Actions
		ok, err := x.Response(ctx, i, resp, &a)
		if ok {
			steps = append(steps, step{Entry: i, Phase: "response", Kind: kindOrEmpty(err), Actions: a})
		}
	}
	return steps
}

func kindOrEmpty(err error) plugins.ErrorKind {
	if err == nil {
		return ""
	}
	return plugins.KindOf(err)
}

func applyRequest(r *abi.Request, a *abi.Actions) {
	hs := append([]abi.Header(nil), r.Headers...)
	for _, name := range a.RemoveRequestHeaders {
		hs = slicesDeleteHeader(hs, name)
	}
	for _, h := range a.SetRequestHeaders {
		hs = append(slicesDeleteHeader(hs, h.Name), abi.Header{Name: strings.ToLower(h.Name), Value: h.Value})
	}
	r.Headers = hs
	if a.RewritePath {
		r.Path = a.Path
	}
	if a.RewriteQuery {
		r.Query = a.Query
	}
}

func slicesDeleteHeader(hs []abi.Header, name string) []abi.Header {
	out := hs[:0]
	for _, h := range hs {
		if !strings.EqualFold(h.Name, name) {
			out = append(out, h)
		}
	}
	return out
}

// TestDifferentialEngines runs every example plugin (Go and AssemblyScript)
// and a chain of several over a corpus of generated requests through the
// go-sdk and the native engine, and requires identical actions, errors and
// plugin log lines.
func TestDifferentialEngines(t *testing.T) {
	wasm["as-headers"] = assemblyScript(t)
	hosts := map[string]*plugins.Host{}
	for _, eng := range []struct {
		name string
		e    plugins.Engine
	}{{"sdk", engine}, {"native", nativeEngine(t)}} {
		h, _ := newHost(t, func(o *plugins.Options) {
			o.Engine = eng.e
			o.KV = plugins.NewMemoryKV() // one per host: both see the same counter sequence
			o.BreakerThreshold = 1 << 20
		})
		for _, p := range []string{"noop", "headers", "bearerauth", "geoblock", "absplit", "ratelimit", "sandboxprobe", "as-headers"} {
			deploy(t, h, "s", p, p)
		}
		hosts[eng.name] = h
	}
	n := 150
	if testing.Short() {
		n = 30
	}
	chains := diffChains()
	for _, name := range []string{"noop", "headers", "bearerauth", "geoblock", "absplit", "ratelimit", "probe", "as-headers", "chain"} {
		chain := chains[name]
		t.Run(name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(7, uint64(len(name))))
			calls := 0
			for i := range n {
				req, geo := genRequest(r)
				status := []int{200, 304, 404, 500}[r.IntN(4)]
				want := runChain(t, hosts["sdk"], chain, *req, geo, status)
				got := runChain(t, hosts["native"], chain, *req, geo, status)
				if !reflect.DeepEqual(normalize(want), normalize(got)) {
					t.Fatalf("request %d %+v:\n sdk:    %+v\n native: %+v", i, req, want, got)
				}
				for _, s := range want {
					if s.Kind != "" {
						t.Fatalf("request %d: a well-behaved example failed on both engines: %+v", i, s)
					}
				}
				calls += len(want)
			}
			if calls < n {
				t.Fatalf("only %d calls for %d requests", calls, n)
			}
		})
	}
	if a, b := pluginLines(hosts["sdk"].Logs("s")), pluginLines(hosts["native"].Logs("s")); !reflect.DeepEqual(a, b) || len(a) == 0 {
		t.Fatalf("plugin log lines differ or are missing:\n sdk:    %q\n native: %q", a, b)
	}
}

// normalize makes nil and empty slices compare equal.
func normalize(steps []step) []step {
	out := make([]step, len(steps))
	for i, s := range steps {
		a := s.Actions
		if len(a.SetRequestHeaders) == 0 {
			a.SetRequestHeaders = nil
		}
		if len(a.RemoveRequestHeaders) == 0 {
			a.RemoveRequestHeaders = nil
		}
		if len(a.RespondHeaders) == 0 {
			a.RespondHeaders = nil
		}
		if len(a.Body) == 0 {
			a.Body = nil
		}
		if len(a.SetResponseHeaders) == 0 {
			a.SetResponseHeaders = nil
		}
		if len(a.RemoveResponseHeaders) == 0 {
			a.RemoveResponseHeaders = nil
		}
		s.Actions = a
		out[i] = s
	}
	return out
}

// pluginLines are the log lines the plugins wrote (not the host's own).
func pluginLines(ls []plugins.LogLine) []string {
	var out []string
	for _, l := range ls {
		if !strings.HasPrefix(l.Msg, "host: ") {
			out = append(out, l.Level.String()+" "+l.Msg)
		}
	}
	return out
}
