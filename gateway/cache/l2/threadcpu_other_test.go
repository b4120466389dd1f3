//go:build !linux

package l2

// threadCPUMeasured: per-thread CPU time (RUSAGE_THREAD) is Linux-only, so
// BenchmarkHitToSocket reports ns/op alone here.
const threadCPUMeasured = false

// threadCPU is not measured here.
func threadCPU() int64 { return 0 }

// processCPUMeasured: BenchmarkHit reports ns/op alone here (its CPU
// figures are taken on Linux, where this is measured).
const processCPUMeasured = false

// processCPU is not measured here.
func processCPU() int64 { return 0 }
