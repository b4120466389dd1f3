//go:build wasip1

package kit

import (
	"fmt"

	"github.com/extism/go-pdk"
)

// HandleRequest runs fn for on_request and returns the export's result:
// call it from your //go:wasmexport on_request function and return its value.
func HandleRequest(fn func(req *Request, act *Actions) error) int32 {
	req, err := DecodeRequest(pdk.Input())
	if err != nil {
		return fail(err)
	}
	act := NewActions()
	if err := fn(req, act); err != nil {
		return fail(err)
	}
	return output(act)
}

// HandleResponse runs fn for on_response (same instance as on_request, so
// package variables set in on_request are still there).
func HandleResponse(fn func(resp *Response, act *Actions) error) int32 {
	resp, err := DecodeResponse(pdk.Input())
	if err != nil {
		return fail(err)
	}
	act := NewActions()
	if err := fn(resp, act); err != nil {
		return fail(err)
	}
	return output(act)
}

func output(act *Actions) int32 {
	b, err := act.Bytes()
	if err != nil {
		return fail(err)
	}
	pdk.Output(b)
	return 0
}

func fail(err error) int32 {
	pdk.SetError(err)
	return 1
}

// Config returns the chain entry's config value for key.
func Config(key string) (string, bool) { return pdk.GetConfig(key) }

// LogInfo, LogWarn and LogError keep a line in the site's plugin log.
func LogInfo(msg string) { pdk.Log(pdk.LogInfo, msg) }

// LogWarn logs at warning level.
func LogWarn(msg string) { pdk.Log(pdk.LogWarn, msg) }

// LogError logs at error level.
func LogError(msg string) { pdk.Log(pdk.LogError, msg) }

//go:wasmimport extism:host/user meridian_kv_get
func hostKVGet(key uint64) uint64

//go:wasmimport extism:host/user meridian_kv_set
func hostKVSet(key, value uint64)

//go:wasmimport extism:host/user meridian_kv_delete
func hostKVDelete(key uint64)

//go:wasmimport extism:host/user meridian_kv_counter_add
func hostKVCounterAdd(key uint64, delta int64) int64

//go:wasmimport extism:host/user meridian_geo
func hostGeo() uint64

// KVGet reads key from the site's replicated KV.
func KVGet(key string) ([]byte, bool) {
	k := pdk.AllocateString(key)
	defer k.Free()
	off := hostKVGet(k.Offset())
	if off == 0 {
		return nil, false
	}
	m := pdk.FindMemory(off)
	defer m.Free()
	return m.ReadBytes(), true
}

// KVSet writes key (an empty value deletes it).
func KVSet(key string, value []byte) {
	k := pdk.AllocateString(key)
	defer k.Free()
	if len(value) == 0 {
		hostKVDelete(k.Offset())
		return
	}
	v := pdk.AllocateBytes(value)
	defer v.Free()
	hostKVSet(k.Offset(), v.Offset())
}

// KVDelete removes key.
func KVDelete(key string) {
	k := pdk.AllocateString(key)
	defer k.Free()
	hostKVDelete(k.Offset())
}

// CounterAdd adds delta to the replicated counter key and returns its value.
func CounterAdd(key string, delta int64) int64 {
	k := pdk.AllocateString(key)
	defer k.Free()
	return hostKVCounterAdd(k.Offset(), delta)
}

// ClientGeo returns the client's location, if the host knows it.
func ClientGeo() (Geo, bool) {
	off := hostGeo()
	if off == 0 {
		return Geo{}, false
	}
	m := pdk.FindMemory(off)
	defer m.Free()
	g, err := DecodeGeo(m.ReadBytes())
	if err != nil {
		LogWarn(fmt.Sprintf("kit: %v", err))
		return Geo{}, false
	}
	return g, true
}
