// Command headers injects headers: the request headers listed in config
// "request" go to the cache and origin, those in config "response" go to
// the client. Each config value holds "name: value" lines. The header
// x-meridian-pop always carries the PoP that served the request.
package main

import (
	"strings"

	"github.com/meridian-edge/meridian/plugins/kit"
)

//go:wasmexport on_request
func onRequest() int32 {
	return kit.HandleRequest(func(req *kit.Request, act *kit.Actions) error {
		act.SetRequestHeader("x-meridian-pop", req.PoP)
		each("request", act.SetRequestHeader)
		each("response", act.SetResponseHeader)
		return nil
	})
}

func each(key string, set func(name, value string)) {
	cfg, _ := kit.Config(key)
	for line := range strings.SplitSeq(cfg, "\n") {
		name, value, ok := strings.Cut(line, ":")
		if ok && strings.TrimSpace(name) != "" {
			set(strings.TrimSpace(name), strings.TrimSpace(value))
		}
	}
}

func main() {}
