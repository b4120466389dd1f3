package tier

import (
	"encoding/binary"
	"errors"
)

// errCorrupt is returned for a record that cannot be decoded; tiers treat it as
// a miss and drop the record.
var errCorrupt = errors.New("cache tier: corrupt record")

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errCorrupt
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.err = errCorrupt
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes() []byte {
	l := d.uvarint()
	if d.err != nil {
		return nil
	}
	if l > uint64(len(d.b)) {
		d.err = errCorrupt
		return nil
	}
	s := d.b[:l]
	d.b = d.b[l:]
	return s
}

// Clone returns a deep copy of m, so a caller can change headers safely.
func (m *Meta) Clone() *Meta {
	c := *m
	c.Header = m.Header.Clone()
	c.Vary = append([]string(nil), m.Vary...)
	return &c
}
