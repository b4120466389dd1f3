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
//     that were wrong;
//   - with config "kv" set: the path is a KV command, /set/KEY/VALUE,
//     /ttl/KEY/VALUE/MS (kit.KVSetTTL) or /get/KEY, where VALUE "-" is the
//     empty value (which deletes); x-kv then carries KEY's value as the kit
//     reads it after the command, or "(missing)".
package main

import (
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/meridian-edge/meridian/plugins/kit"
)

//go:wasmexport on_request
func onRequest() int32 {
	return kit.HandleRequest(func(req *kit.Request, act *kit.Actions) error {
		act.SetRequestHeader("x-time-ms", strconv.FormatInt(req.TimeUnixMs, 10))
		if _, ok := kit.Config("kv"); ok {
			return kvCommand(req.Path, act)
		}
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

// kvCommand runs the KV command in path (see the package comment).
func kvCommand(path string, act *kit.Actions) error {
	f := strings.Split(strings.TrimPrefix(path, "/"), "/")
	value := func(s string) []byte {
		if s == "-" {
			return nil
		}
		return []byte(s)
	}
	switch {
	case len(f) == 3 && f[0] == "set":
		kit.KVSet(f[1], value(f[2]))
	case len(f) == 4 && f[0] == "ttl":
		ms, err := strconv.Atoi(f[3])
		if err != nil {
			return err
		}
		kit.KVSetTTL(f[1], value(f[2]), time.Duration(ms)*time.Millisecond)
	case len(f) == 2 && f[0] == "get":
	default:
		return errors.New("kitprobe: unknown KV command " + path)
	}
	v, ok := kit.KVGet(f[1])
	if !ok {
		act.SetRequestHeader("x-kv", "(missing)")
		return nil
	}
	act.SetRequestHeader("x-kv", string(v))
	return nil
}

func main() {}
