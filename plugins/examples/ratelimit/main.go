// Command ratelimit allows each client address at most config "limit"
// requests (default 100) per window of config "window_seconds" (default 60)
// and answers 429 beyond it. The count lives in the site's replicated KV
// counter, so it is shared by every PoP. The window comes from the request
// time the host grants: plugins have no clock of their own.
//
// Each window has its own counter ("rl:<client>:<window number>") with a
// TTL of two windows, so the counters of past windows expire and leave
// every PoP's replicated state instead of piling up per client and window.
package main

import (
	"strconv"
	"time"

	"github.com/meridian-edge/meridian/plugins/kit"
)

//go:wasmexport on_request
func onRequest() int32 {
	return kit.HandleRequest(func(req *kit.Request, act *kit.Actions) error {
		limit := number("limit", 100)
		window := number("window_seconds", 60)
		slot := req.TimeUnixMs / 1000 / window
		// Two windows, within the host's 30-day limit on TTLs.
		ttl := time.Duration(min(window, maxTTLSeconds/2)*2) * time.Second
		n := kit.CounterAddTTL("rl:"+req.ClientIP+":"+strconv.FormatInt(slot, 10), 1, ttl)
		if n > limit {
			retry := (slot+1)*window - req.TimeUnixMs/1000
			act.Respond(429)
			act.RespondHeader("retry-after", strconv.FormatInt(retry, 10))
			act.RespondHeader("content-type", "text/plain; charset=utf-8")
			act.RespondBody("rate limit exceeded\n")
			return nil
		}
		act.SetResponseHeader("x-ratelimit-remaining", strconv.FormatInt(limit-n, 10))
		return nil
	})
}

// maxTTLSeconds is the longest TTL the host accepts (30 days).
const maxTTLSeconds = 30 * 24 * 3600

func number(key string, def int64) int64 {
	if v, ok := kit.Config(key); ok {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil && n > 0 {
			return n
		}
	}
	return def
}

func main() {}
