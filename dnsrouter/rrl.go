package dnsrouter

import (
	"hash/maphash"
	"net/netip"
	"sync"
	"time"
)

// rrlAction is what response rate limiting decided for one response.
type rrlAction uint8

const (
	rrlSend rrlAction = iota
	rrlDrop
	rrlSlip // send a truncated answer instead (TC=1, no records)
)

// rrl is a fixed table of token buckets keyed by client prefix, as BIND and
// Knot do it: a table of fixed size so that a spoofed flood from many
// prefixes cannot grow memory; colliding prefixes share a bucket.
type rrl struct {
	rate, burst float64
	slip        int
	v4, v6      int
	seed        maphash.Seed
	shards      []rrlShard
}

type rrlShard struct {
	mu      sync.Mutex
	buckets []rrlBucket
}

type rrlBucket struct {
	key    netip.Prefix
	tokens float64
	last   time.Time
	slips  uint32
}

const rrlShards = 64

func newRRL(o RRLOptions) *rrl {
	if o.ResponsesPerSecond <= 0 {
		return nil
	}
	r := &rrl{rate: o.ResponsesPerSecond, burst: o.Burst, slip: o.Slip, v4: o.IPv4PrefixLen, v6: o.IPv6PrefixLen, seed: maphash.MakeSeed()}
	per := max(1, o.Buckets/rrlShards)
	r.shards = make([]rrlShard, rrlShards)
	for i := range r.shards {
		r.shards[i].buckets = make([]rrlBucket, per)
	}
	return r
}

// check charges one response to the client's prefix.
func (r *rrl) check(client netip.Addr, now time.Time) rrlAction {
	client = client.Unmap()
	bits := r.v6
	if client.Is4() {
		bits = r.v4
	}
	p, err := client.Prefix(bits)
	if err != nil {
		return rrlSend
	}
	a := p.Addr().As16()
	h := maphash.Bytes(r.seed, a[:])
	sh := &r.shards[h%rrlShards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	b := &sh.buckets[(h/rrlShards)%uint64(len(sh.buckets))]
	if b.key != p {
		*b = rrlBucket{key: p, tokens: r.burst, last: now}
	} else {
		b.tokens = min(r.burst, b.tokens+now.Sub(b.last).Seconds()*r.rate)
		b.last = now
	}
	if b.tokens >= 1 {
		b.tokens--
		return rrlSend
	}
	b.slips++
	if r.slip > 0 && b.slips%uint32(r.slip) == 0 {
		return rrlSlip
	}
	return rrlDrop
}
