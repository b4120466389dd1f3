package cache

// GCPercent returns the Go collector percentage a PoP process should set at
// start (debug.SetGCPercent, unless the operator set GOGC or GOMEMLIMIT) for
// a cache whose L1 budget is l1Bytes and whose L1 is preallocated
// (Options.L1Preallocate).
//
// Why: the preallocated BigCache queues count as live heap from the start,
// so with the default GOGC=100 the collector would let garbage grow to the
// size of the whole reservation before collecting. A percentage that gives a
// fixed headroom of about 32 MiB over the cache keeps the process near its
// cached bytes (measured: 7.2 KB per cached 1 KiB object at GOGC=100, 1.6 KB
// with this setting, in a 1 GiB L1 holding 100k objects). The heap the
// collector must scan stays small (the queues and bodies hold no pointers),
// so the extra collections cost little CPU. There is deliberately no memory
// limit to go with it: a PoP with a large L2 index and many plugin
// instances can need much more than the cache beside it, and a process over
// its soft limit spends up to half its CPU collecting.
func GCPercent(l1Bytes int64) int {
	if l1Bytes <= 0 {
		l1Bytes = 512 << 20
	}
	const headroom = 32 << 20
	return int(min(max(100*headroom/l1Bytes, 2), 100))
}
