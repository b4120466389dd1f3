package plugins_test

import (
	"context"
	"testing"

	"github.com/meridian-edge/meridian/plugins"
	"github.com/meridian-edge/meridian/plugins/abi"
)

// BenchmarkCompile compiles the Go header-injection plugin (2.7 MB) without
// and with the shared compilation cache.
//
//	go test -run '^$' -bench Compile -benchtime 3x ./plugins/
func BenchmarkCompile(b *testing.B) {
	ctx := context.Background()
	b.Run("cold", func(b *testing.B) {
		for b.Loop() {
			e, err := plugins.NewSDKEngine(plugins.SDKOptions{})
			if err != nil {
				b.Fatal(err)
			}
			p, err := e.Compile(ctx, wasm["headers"], plugins.Limits{})
			if err != nil {
				b.Fatal(err)
			}
			_ = p.Close(ctx)
			_ = e.Close(ctx)
		}
	})
	b.Run("cached", func(b *testing.B) {
		p, err := engine.Compile(ctx, wasm["headers"], plugins.Limits{}) // fill
		if err != nil {
			b.Fatal(err)
		}
		_ = p.Close(ctx)
		for b.Loop() {
			p, err := engine.Compile(ctx, wasm["headers"], plugins.Limits{})
			if err != nil {
				b.Fatal(err)
			}
			_ = p.Close(ctx)
		}
	})
	b.Run("instantiate+first-call", func(b *testing.B) {
		// The first call of a fresh instance also runs the guest runtime's
		// init (Go's _initialize) under the call's deadline.
		p, err := engine.Compile(ctx, wasm["headers"], plugins.Limits{})
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close(ctx)
		in0, _ := abi.AppendRequest(nil, req())
		env := &plugins.CallEnv{Site: "s"}
		for b.Loop() {
			in, err := p.Instantiate(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := in.Call(ctx, "on_request", in0, env); err != nil {
				b.Fatal(err)
			}
			_ = in.Close(ctx)
		}
	})
	b.Run("instantiate", func(b *testing.B) {
		p, err := engine.Compile(ctx, wasm["headers"], plugins.Limits{})
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close(ctx)
		for b.Loop() {
			in, err := p.Instantiate(ctx)
			if err != nil {
				b.Fatal(err)
			}
			_ = in.Close(ctx)
		}
	})
}

// BenchmarkCall is one on_request through Host.Begin/Request/Close, without
// HTTP: the host's share of the per-request cost.
//
//	go test -run '^$' -bench Call -benchmem ./plugins/
func BenchmarkCall(b *testing.B) {
	for _, name := range []string{"wat/continue", "noop", "headers"} {
		b.Run(name, func(b *testing.B) {
			h, _ := newHost(b, nil)
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
