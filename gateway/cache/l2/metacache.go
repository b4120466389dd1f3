package l2

import (
	"bytes"
	"sync/atomic"

	"github.com/meridian-edge/meridian/gateway/cache/tier"
)

// metaSlots is the number of decoded metadata records kept (direct-mapped
// by key hash). A hit of a small object otherwise spends about as much CPU
// decoding its header fields as reading and verifying its body.
const metaSlots = 8192

// metaCache keeps recently decoded metadata. An entry is used only when the
// file's metadata bytes, which the caller has just read and verified, are
// byte-for-byte those the entry was decoded from, so it never needs
// invalidating: a replaced or rewritten file simply does not match.
type metaCache struct {
	slots [metaSlots]atomic.Pointer[metaEntry]
}

type metaEntry struct {
	hash uint64
	raw  []byte // the encoded metadata, a private copy
	meta *tier.Meta
}

// decode returns the metadata encoded in raw (verified bytes of the file
// of hash h). The result is shared with the cache and with every other
// reader of the object, as L1's is: callers must not change it (they clone
// it first, tier.Meta.Clone, as for any tier's metadata). Sharing saves a
// copy per hit, and keeps the Header map the same for the cache's memos.
func (c *metaCache) decode(h uint64, raw []byte) (*tier.Meta, error) {
	slot := &c.slots[h%metaSlots]
	if e := slot.Load(); e != nil && e.hash == h && bytes.Equal(e.raw, raw) {
		return e.meta, nil
	}
	m, _, err := tier.DecodeMeta(raw)
	if err != nil {
		return nil, err
	}
	slot.Store(&metaEntry{hash: h, raw: bytes.Clone(raw), meta: m})
	return m, nil
}
