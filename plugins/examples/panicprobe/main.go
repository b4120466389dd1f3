// Command panicprobe is not an example to copy: the tests use it to show
// what a site owner learns when a Go plugin fails. Config "do" picks the
// failure: "panic" assigns to a nil map (a Go panic, whose reason the Go
// runtime prints to stderr), "oom" allocates 100 MiB at once, "grow" keeps
// allocating 1 MiB blocks until the memory cap stops it, "flood" writes
// 64 KiB to stdout and then panics, "count" writes the numbered lines
// "line 00001" to "line 01000" (11 KB, more than the host keeps) and then
// panics, "oomlog" logs a line about something else being out of memory
// and then panics (a trap, not a memory overrun), "print" writes a line
// and succeeds.
// Built without -buildmode=c-shared it is the command-mode module the host
// refuses at upload.
package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/meridian-edge/meridian/plugins/kit"
)

// kept holds what "grow" allocates so the collector cannot free it.
var kept [][]byte

//go:wasmexport on_request
func onRequest() int32 {
	return kit.HandleRequest(func(req *kit.Request, act *kit.Actions) error {
		do, _ := kit.Config("do")
		switch do {
		case "panic":
			var m map[string]int
			m[req.Path]++
		case "oom":
			b := make([]byte, 100<<20)
			b[len(b)-1] = byte(len(req.Path))
			kept = append(kept, b)
		case "grow":
			for {
				b := make([]byte, 1<<20)
				b[len(b)-1] = byte(len(req.Path))
				kept = append(kept, b)
			}
		case "flood":
			fmt.Fprint(os.Stdout, strings.Repeat("noise ", 64<<10/6))
			var m map[string]int
			m[req.Path]++
		case "count":
			for i := 1; i <= 1000; i++ {
				fmt.Fprintf(os.Stdout, "line %05d\n", i)
			}
			var m map[string]int
			m[req.Path]++
		case "oomlog":
			fmt.Fprintln(os.Stderr, "upstream cache: out of memory, serving without it")
			var m map[string]int
			m[req.Path]++
		case "print":
			fmt.Fprintln(os.Stdout, "hello from panicprobe")
		}
		return nil
	})
}

func main() {}
