// Command absplit splits traffic between origins "origin_a" and "origin_b"
// (config), sending config "percent_b" percent (default 50) of new clients
// to B. The variant sticks through the cookie named by config "cookie"
// (default "mrd_ab"), set in on_response, which runs on the same instance
// as on_request. The variant is part of the cache key, so the variants never
// share cached objects. The entry must ask for the cookie request header.
package main

import (
	"hash/fnv"
	"strconv"
	"strings"

	"github.com/meridian-edge/meridian/plugins/kit"
)

// assigned is the variant chosen for a new client by on_request; the host
// guarantees on_response of the same request runs on this instance.
var assigned string

//go:wasmexport on_request
func onRequest() int32 {
	return kit.HandleRequest(func(req *kit.Request, act *kit.Actions) error {
		assigned = ""
		name := config("cookie", "mrd_ab")
		variant := cookie(req, name)
		if variant != "a" && variant != "b" {
			pct, err := strconv.Atoi(config("percent_b", "50"))
			if err != nil {
				pct = 50
			}
			h := fnv.New32a()
			h.Write([]byte(req.ClientIP))
			h.Write([]byte(strconv.FormatInt(req.TimeUnixMs, 10)))
			variant = "a"
			if int(h.Sum32()%100) < pct {
				variant = "b"
			}
			assigned = variant
		}
		act.Origin(config("origin_"+variant, variant))
		act.SetRequestHeader("x-ab-variant", variant)
		key := req.Host + req.Path
		if req.Query != "" {
			key += "?" + req.Query
		}
		act.CacheKey(key + "#ab=" + variant)
		return nil
	})
}

//go:wasmexport on_response
func onResponse() int32 {
	return kit.HandleResponse(func(resp *kit.Response, act *kit.Actions) error {
		if assigned != "" {
			act.SetResponseHeader("set-cookie", config("cookie", "mrd_ab")+"="+assigned+"; Path=/; Max-Age=2592000; SameSite=Lax")
		}
		act.SetResponseHeader("vary", "Cookie")
		return nil
	})
}

func config(key, def string) string {
	if v, ok := kit.Config(key); ok && v != "" {
		return v
	}
	return def
}

func cookie(req *kit.Request, name string) string {
	for _, h := range req.Headers {
		if h.Name != "cookie" {
			continue
		}
		for part := range strings.SplitSeq(h.Value, ";") {
			k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
			if ok && k == name {
				return v
			}
		}
	}
	return ""
}

func main() {}
