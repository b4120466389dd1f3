// Package native is Meridian's own host for the Extism plugin ABI, written on
// wazero from the public ABI (the extism:host/env imports) instead of going
// through github.com/extism/go-sdk. It implements plugins.Engine, so the
// plugin Host, pools, chains and policy above it stay the same, and the
// go-sdk (plugins.SDKEngine) stays the reference it is tested against.
//
// What it owns: the Extism kernel kept in Go (a per-instance allocator over a
// byte slice, reset between calls without reinstantiating), the env host
// functions (memory, input, output, error, config, vars, logs), the
// meridian_* host functions from plugins.HostFunctions, and call deadlines:
// each plugin is rewritten once at compile time to meter its own work and
// call the host when its budget runs out (meter.go), which replaces wazero's
// WithCloseOnContextDone and its exit to Go at every loop iteration.
//
// What it must not do: offer anything the contract in plugins/README.md does
// not (no http_request, no filesystem, no network, no real clock), let a
// plugin reach memory outside its own instance, or run a plugin that is not
// metered (a wasm loop cannot be preempted by the Go scheduler).
package native
