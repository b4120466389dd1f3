// Command kitprobe is a Go plugin on the kit that reports what it sees, for
// the plugins package tests (TestKitProbe):
//
//   - x-time-ms: the request time it was given;
//   - with config "echo" = NAME: the response header x-echo carries the
//     request header NAME as it saw it (the entry must ask for NAME);
//   - with config "keys" = N and "size" = S: it first asks the kit for N
//     config keys that do not exist, each about S bytes long and made from
//     the request's path (so every request asks new ones), then for the
//     keys present-0 to present-9 twice; x-config-wrong counts answers
//     that were wrong.
package main

import (
	"strconv"
	"strings"

	"github.com/meridian-edge/meridian/plugins/kit"
)

//go:wasmexport on_request
func onRequest() int32 {
	return kit.HandleRequest(func(req *kit.Request, act *kit.Actions) error {
		act.SetRequestHeader("x-time-ms", strconv.FormatInt(req.TimeUnixMs, 10))
		if name, ok := kit.Config("echo"); ok {
			v, _ := req.Header(name)
			act.SetResponseHeader("x-echo", v)
		}
		v, _ := kit.Config("keys")
		n, _ := strconv.Atoi(v)
		if n == 0 {
			return nil
		}
		wrong := 0
		size, _ := kit.Config("size")
		k, _ := strconv.Atoi(size)
		pad := strings.Repeat("k", k)
		for i := range n {
			if _, ok := kit.Config(req.Path + "/" + strconv.Itoa(i) + "/" + pad); ok {
				wrong++
			}
		}
		for range 2 {
			for i := range 10 {
				if v, ok := kit.Config("present-" + strconv.Itoa(i)); !ok || v != "value-"+strconv.Itoa(i) {
					wrong++
				}
			}
		}
		act.SetRequestHeader("x-config-wrong", strconv.Itoa(wrong))
		return nil
	})
}

func main() {}
