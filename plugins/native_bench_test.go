package plugins_test

import (
	"context"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/plugins"
	"github.com/meridian-edge/meridian/plugins/abi"
)

// BenchmarkEngines is one on_request through Host.Begin/Request/Close on
// the go-sdk and on the native engine, in the same run so the ratio shows.
//
//	go test -run '^$' -bench Engines -benchmem ./plugins/
func BenchmarkEngines(b *testing.B) {
	for _, eng := range []struct {
		name string
		e    plugins.Engine
	}{{"sdk", engine}, {"native", nativeEngine(b)}} {
		for _, name := range []string{"wat/continue", "noop", "headers"} {
			b.Run(eng.name+"/"+name, func(b *testing.B) {
				h, _ := newHost(b, func(o *plugins.Options) { o.Engine = eng.e })
				deploy(b, h, "s", "p", name)
				chain := &plugins.Chain{Site: "s", Entries: []plugins.Entry{{Plugin: "p", Config: map[string]string{"request": "x-site: shop"}}}}
				r := req()
				var a abi.Actions
				b.ReportAllocs()
				for b.Loop() {
					x := h.Begin(chain, plugins.GeoInfo{})
					if err := x.Request(context.Background(), 0, r, &a); err != nil {
						b.Fatal(err)
					}
					x.Close()
				}
			})
		}
	}
}

// BenchmarkInstanceCall is one Instance.Call on a warm instance, without the
// Host (no pool, no metrics): the engine's own cost per call.
//
//	go test -run '^$' -bench InstanceCall -benchmem ./plugins/
func BenchmarkInstanceCall(b *testing.B) {
	ctx := context.Background()
	for _, eng := range []struct {
		name string
		e    plugins.Engine
	}{{"sdk", engine}, {"native", nativeEngine(b)}} {
		for _, name := range []string{"wat/continue", "noop", "headers"} {
			b.Run(eng.name+"/"+name, func(b *testing.B) {
				p, err := eng.e.Compile(ctx, wasm[name], plugins.Limits{Timeout: time.Second})
				if err != nil {
					b.Fatal(err)
				}
				defer p.Close(ctx)
				in, err := p.Instantiate(ctx)
				if err != nil {
					b.Fatal(err)
				}
				defer in.Close(ctx)
				input, _ := abi.AppendRequest(nil, req())
				env := &plugins.CallEnv{Site: "s", Config: map[string]string{"request": "x-site: shop"}}
				b.ReportAllocs()
				for b.Loop() {
					if _, err := in.Call(ctx, "on_request", input, env); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkNativeCompile compiles the Go header plugin (2.7 MB) on the
// native engine with a warm compilation cache: the metering rewrite plus a
// cache hit.
//
//	go test -run '^$' -bench NativeCompile -benchtime 5x ./plugins/
func BenchmarkNativeCompile(b *testing.B) {
	ctx := context.Background()
	p, err := nativeEngine(b).Compile(ctx, wasm["headers"], plugins.Limits{}) // fill the cache
	if err != nil {
		b.Fatal(err)
	}
	_ = p.Close(ctx)
	for b.Loop() {
		p, err := nativeEngine(b).Compile(ctx, wasm["headers"], plugins.Limits{})
		if err != nil {
			b.Fatal(err)
		}
		_ = p.Close(ctx)
	}
}
