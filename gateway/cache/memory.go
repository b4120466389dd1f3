package cache

// MemorySettings returns the Go collector settings a PoP process should
// apply at start (with debug.SetGCPercent and debug.SetMemoryLimit, unless
// the operator set GOGC or GOMEMLIMIT) for a cache whose L1 budget is
// l1Bytes and whose L1 is preallocated (Options.L1Preallocate).
//
// Why: the preallocated BigCache queues count as live heap from the start,
// so with the default GOGC=100 the collector would let garbage grow to the
// size of the whole reservation before collecting. A GC percentage that
// gives a fixed headroom of about 32 MiB over the cache keeps the process
// near its cached bytes (measured: 7.2 KB per cached 1 KiB object at
// GOGC=100, 2.1 KB at GOGC=10, in a 1 GiB L1 holding 100k objects). The
// heap the collector must scan stays small (the queues and bodies hold no
// pointers), so the extra collections cost little CPU. The memory limit
// returned is a suggestion for a process that holds little beside the cache
// (the budget plus an eighth plus 256 MiB); PoP processes apply only the
// percentage, because a large L2 index and many plugin instances can need
// more than that, and a process over its soft limit spends up to half its
// CPU collecting.
func MemorySettings(l1Bytes int64) (gcPercent int, memoryLimit int64) {
	if l1Bytes <= 0 {
		l1Bytes = 512 << 20
	}
	const headroom = 32 << 20
	gcPercent = int(min(max(100*headroom/l1Bytes, 2), 100))
	return gcPercent, l1Bytes + l1Bytes/8 + 256<<20
}
