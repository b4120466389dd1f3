// Package plugins owns the host side of site owners' wasm plugins: the
// Engine that compiles and runs them (SDKEngine on github.com/extism/go-sdk),
// limits, the meridian_* host functions, warm instance pools per version,
// the local Store of versions (add with validation, activate, roll back, with
// an atomic swap that never drops an in-flight request), the chain Runner
// with per-site failure policy and per-plugin circuit breaker (whose counts
// Host.Health reports for listings), metrics and per-site plugin log lines.
//
// The wire contract lives in plugins/abi and is documented in
// plugins/README.md. This package must not speak HTTP (middleware/plugin
// adapts a chain to chi), must not fetch or publish blobs (the upload and
// rollout path calls Store), and must never let one plugin reach another
// site's KV, the filesystem or the network.
package plugins
