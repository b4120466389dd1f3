// Command ratelimit allows each client address at most config "limit"
// requests (default 100) per window of config "window_seconds" (default 60)
// and answers 429 beyond it. The count lives in the site's replicated KV
// counter, so it is shared by every PoP. The window comes from the request
// time the host grants: plugins have no clock of their own.
package main

import (
	"strconv"

	"github.com/meridian-edge/meridian/plugins/kit"
)

//go:wasmexport on_request
func onRequest() int32 {
	return kit.HandleRequest(func(req *kit.Request, act *kit.Actions) error {
		limit := number("limit", 100)
		window := number("window_seconds", 60)
		slot := req.TimeUnixMs / 1000 / window
		n := kit.CounterAdd("rl:"+req.ClientIP+":"+strconv.FormatInt(slot, 10), 1)
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

func number(key string, def int64) int64 {
	if v, ok := kit.Config(key); ok {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil && n > 0 {
			return n
		}
	}
	return def
}

func main() {}
