// Command noop is the smallest Meridian plugin: it lets every request
// continue unchanged. The benchmarks use it to measure the host's overhead.
package main

import "github.com/meridian-edge/meridian/plugins/kit"

//go:wasmexport on_request
func onRequest() int32 {
	return kit.HandleRequest(func(*kit.Request, *kit.Actions) error { return nil })
}

func main() {}
