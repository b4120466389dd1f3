// Command headers injects headers: the request headers listed in config
// "request" go to the cache and origin, those in config "response" go to
// the client. Each config value holds "name: value" lines. The header
// x-meridian-pop always carries the PoP that served the request, and
// x-plugin-build the build's name when one was set at link time:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -ldflags '-X main.build=v2' -o headers-v2.wasm .
//
// which makes a second version to push as a canary, told apart in its
// responses.
package main

import (
	"strings"

	"github.com/meridian-edge/meridian/plugins/kit"
)

// header is one "name: value" line of the config.
type header struct{ name, value string }

// An instance's config never changes, so it is parsed on the first request
// and kept in package variables, which live as long as the instance: a
// request then costs only the header copies.
var (
	parsed               bool
	reqHeaders, respHdrs []header
)

// build names this build (set with -ldflags '-X main.build=NAME').
var build string

//go:wasmexport on_request
func onRequest() int32 {
	return kit.HandleRequest(func(req *kit.Request, act *kit.Actions) error {
		if !parsed {
			reqHeaders, respHdrs, parsed = parse("request"), parse("response"), true
		}
		act.SetRequestHeader("x-meridian-pop", req.PoP)
		for _, h := range reqHeaders {
			act.SetRequestHeader(h.name, h.value)
		}
		for _, h := range respHdrs {
			act.SetResponseHeader(h.name, h.value)
		}
		if build != "" {
			act.SetResponseHeader("x-plugin-build", build)
		}
		return nil
	})
}

// parse reads the "name: value" lines of config key; lines without a colon
// or with an empty name are skipped.
func parse(key string) []header {
	cfg, _ := kit.Config(key)
	var hs []header
	for line := range strings.SplitSeq(cfg, "\n") {
		name, value, ok := strings.Cut(line, ":")
		if ok && strings.TrimSpace(name) != "" {
			hs = append(hs, header{strings.TrimSpace(name), strings.TrimSpace(value)})
		}
	}
	return hs
}

func main() {}
