// Command bearerauth lets a request through only with an
// "Authorization: Bearer <token>" header whose token is one of the
// comma-separated config "tokens"; otherwise it answers 401. The chain entry
// must ask for the authorization header. The token is removed before the
// request goes on, so it never reaches the cache key or the origin.
package main

import (
	"strings"

	"github.com/meridian-edge/meridian/plugins/kit"
)

//go:wasmexport on_request
func onRequest() int32 {
	return kit.HandleRequest(func(req *kit.Request, act *kit.Actions) error {
		tokens, _ := kit.Config("tokens")
		auth, _ := req.Header("authorization")
		token, ok := strings.CutPrefix(auth, "Bearer ")
		if ok && token != "" {
			for t := range strings.SplitSeq(tokens, ",") {
				if strings.TrimSpace(t) == token {
					act.RemoveRequestHeader("authorization")
					act.SetRequestHeader("x-authenticated", "bearer")
					return nil
				}
			}
		}
		kit.LogWarn("bearerauth: refused " + req.Method + " " + req.Path + " from " + req.ClientIP)
		act.Respond(401)
		act.RespondHeader("www-authenticate", `Bearer realm="`+req.Host+`"`)
		act.RespondHeader("content-type", "text/plain; charset=utf-8")
		act.RespondBody("a valid bearer token is required\n")
		return nil
	})
}

func main() {}
