//go:build wasip1

package kit

import (
	"fmt"
	"time"

	"github.com/extism/go-pdk"
)

// HandleRequest runs fn for on_request and returns the export's result:
// call it from your //go:wasmexport on_request function and return its value.
//
// req and act are the same two values on every call (allocating them per
// request was a third of a small plugin's time, with the collections it
// caused): fn must not keep the pointers beyond the next on_request. The
// strings in req are never overwritten, so keeping those (or a copy of
// *req) is safe.
func HandleRequest(fn func(req *Request, act *Actions) error) int32 {
	st := &reqState
	st.req = Request{}
	if err := decodeRequestInto(&st.req, input()); err != nil {
		return fail(err)
	}
	st.act.init()
	if err := fn(&st.req, &st.act); err != nil {
		return fail(err)
	}
	if st.act.err != nil {
		return fail(st.act.err)
	}
	setOutput(st.act.buf)
	return 0
}

// HandleResponse runs fn for on_response (same instance as on_request, so
// package variables set in on_request are still there). As with
// HandleRequest, resp and act are reused by the next on_response.
func HandleResponse(fn func(resp *Response, act *Actions) error) int32 {
	st := &respState
	st.resp = Response{}
	if err := decodeResponseInto(&st.resp, input()); err != nil {
		return fail(err)
	}
	st.act.init()
	if err := fn(&st.resp, &st.act); err != nil {
		return fail(err)
	}
	if st.act.err != nil {
		return fail(st.act.err)
	}
	setOutput(st.act.buf)
	return 0
}

// reqState and respState are what HandleRequest and HandleResponse hand
// to the plugin's function, reused by every call (a package variable lives
// as long as the instance, which serves one call at a time).
var (
	reqState struct {
		req Request
		act Actions
	}
	respState struct {
		resp Response
		act  Actions
	}
)

func fail(err error) int32 {
	setError(err.Error())
	return 1
}

// Config returns the chain entry's config value for key.
//
// An instance's config never changes (the host binds each instance to one
// chain entry's config, as Extism fixes a plugin's config when it is made),
// so each key is asked of the host once per instance and then answered
// from memory: a config_get round trip is a dozen host calls.
func Config(key string) (string, bool) {
	if c, ok := configs[key]; ok {
		return c.value, c.ok
	}
	v, ok := configGet(key)
	if configs == nil {
		configs = make(map[string]configValue)
	}
	if len(configs) < maxConfigKeys {
		configs[key] = configValue{v, ok}
	}
	return v, ok
}

// configs caches Config answers for the life of the instance (a package
// variable lives exactly as long as the plugin instance).
var configs map[string]configValue

// maxConfigKeys bounds the cache: a plugin asking for keys made from
// requests gets correct answers, just not cached ones.
const maxConfigKeys = 64

type configValue struct {
	value string
	ok    bool
}

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

//go:wasmimport extism:host/user meridian_kv_set_ttl
func hostKVSetTTL(key, value uint64, ttlMs int64)

//go:wasmimport extism:host/user meridian_kv_counter_add_ttl
func hostKVCounterAddTTL(key uint64, delta, ttlMs int64) int64

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
func KVSet(key string, value []byte) { kvWrite(key, value, hostKVSet) }

// kvWrite is KVSet and KVSetTTL: it hands key and value to set, or deletes
// key when value is empty.
func kvWrite(key string, value []byte, set func(key, value uint64)) {
	k := pdk.AllocateString(key)
	defer k.Free()
	if len(value) == 0 {
		hostKVDelete(k.Offset())
		return
	}
	v := pdk.AllocateBytes(value)
	defer v.Free()
	set(k.Offset(), v.Offset())
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

// ttlMillis converts a TTL for the host: whole milliseconds, a positive
// TTL below one millisecond rounding up to one. A TTL of 0 or less, or
// over 30 days, is passed on for the host to refuse (it fails the call).
func ttlMillis(ttl time.Duration) int64 {
	ms := ttl.Milliseconds()
	if ms == 0 && ttl > 0 {
		ms = 1
	}
	return ms
}

// KVSetTTL writes key for ttl (at most 30 days): after that it reads as
// missing on every PoP and leaves the replicated state. An empty value
// deletes the key. Needs a PoP with expiry (contract version 1, host
// function meridian_kv_set_ttl).
func KVSetTTL(key string, value []byte, ttl time.Duration) {
	kvWrite(key, value, func(k, v uint64) { hostKVSetTTL(k, v, ttlMillis(ttl)) })
}

// CounterAddTTL adds delta to the replicated counter key and returns its
// value. The counter lives until ttl (at most 30 days) after the latest add
// with a TTL on any PoP, then reads 0 and leaves the replicated state; an
// add after that starts it over. Put the window in the key and give it a
// TTL of about two windows: old windows then vanish by themselves.
func CounterAddTTL(key string, delta int64, ttl time.Duration) int64 {
	k := pdk.AllocateString(key)
	defer k.Free()
	return hostKVCounterAddTTL(k.Offset(), delta, ttlMillis(ttl))
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
