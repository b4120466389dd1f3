// Command allocprobe is not an example to copy: the tests use it to show
// that a Go plugin's garbage collector keeps working across many requests,
// and that the kit's error path hands the host the exact message. Each
// on_request allocates config "kib" KiB (default 64) of short-lived
// garbage and keeps none of it; when config "fail" is set, it then fails
// with that message.
package main

import (
	"errors"
	"strconv"

	"github.com/meridian-edge/meridian/plugins/kit"
)

// sink makes every buffer escape to the heap: a buffer the compiler can
// prove short-lived would live on the stack and never reach the collector.
var sink []byte

//go:wasmexport on_request
func onRequest() int32 {
	return kit.HandleRequest(func(req *kit.Request, act *kit.Actions) error {
		kib := 64
		if v, ok := kit.Config("kib"); ok {
			if n, err := strconv.Atoi(v); err == nil && n > 0 {
				kib = n
			}
		}
		for range kib {
			sink = make([]byte, 1024)
			sink[len(sink)-1] = byte(len(req.Path))
		}
		sink = nil
		if msg, ok := kit.Config("fail"); ok {
			return errors.New(msg)
		}
		return nil
	})
}

func main() {}
