// Command sandboxprobe is not an example to copy: the tests use it to show
// what a plugin can reach through WASI. It reports, in request headers,
// whether it could read a host file, list the root directory, what clock
// it sees and how many environment variables it has.
package main

import (
	"os"
	"strconv"
	"time"

	"github.com/meridian-edge/meridian/plugins/kit"
)

//go:wasmexport on_request
func onRequest() int32 {
	return kit.HandleRequest(func(req *kit.Request, act *kit.Actions) error {
		if b, err := os.ReadFile("/etc/hostname"); err != nil {
			act.SetRequestHeader("x-probe-file", "error")
		} else {
			act.SetRequestHeader("x-probe-file", "read "+strconv.Itoa(len(b))+" bytes")
		}
		if ents, err := os.ReadDir("/"); err != nil {
			act.SetRequestHeader("x-probe-dir", "error")
		} else {
			act.SetRequestHeader("x-probe-dir", strconv.Itoa(len(ents))+" entries")
		}
		act.SetRequestHeader("x-probe-clock", strconv.FormatInt(time.Now().Unix(), 10))
		act.SetRequestHeader("x-probe-env", strconv.Itoa(len(os.Environ())))
		return nil
	})
}

func main() {}
