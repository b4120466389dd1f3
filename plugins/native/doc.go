// Package native is Meridian's own host for the Extism plugin ABI, written on
// wazero from the public ABI (the extism:host/env imports) instead of going
// through github.com/extism/go-sdk. It implements plugins.Engine, so the
// plugin Host, pools, chains and policy above it stay the same, and the
// go-sdk (plugins.SDKEngine) stays the reference it is tested against.
//
// What it owns: the Extism kernel (kernel.go, kernel.wat): per instance, a
// small wasm module whose memory holds the call's input and the blocks, and
// whose functions serve the imports a plugin calls per word (input, load,
// store, alloc, output, error) without leaving wasm, while Go owns the
// memory's layout, the block table and the rest of the env functions
// (free, length, config, vars, logs); it is reset between calls without
// reinstantiating. Also the meridian_* host functions from
// plugins.HostFunctions, and call deadlines:
// each plugin is rewritten once at compile time to meter its own work and
// call the host when its budget runs out (meter.go), which replaces wazero's
// WithCloseOnContextDone and its exit to Go at every loop iteration; the
// same rewrite routes memory.grow through the host, which notes a refusal
// at the memory cap to classify the failure that follows.
//
// What it must not do: offer anything the contract in plugins/README.md does
// not (no http_request, no filesystem, no network, no real clock), let a
// plugin reach memory outside its own instance, or run a plugin that is not
// metered (a wasm loop cannot be preempted by the Go scheduler).
package native
