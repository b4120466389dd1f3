package geo

import (
	"fmt"
	"net/netip"
	"sync"

	"github.com/oschwald/maxminddb-golang/v2"
)

// maxCachedRecords bounds the per-record location cache. GeoLite2 City has
// a few hundred thousand distinct records; past the bound, lookups decode
// every time instead of growing memory without limit.
const maxCachedRecords = 1 << 20

// MMDB is a Source backed by a MaxMind-format database (GeoLite2/GeoIP2
// City, DB-IP City Lite, or any database with location.latitude and
// location.longitude).
type MMDB struct {
	path string
	r    *maxminddb.Reader

	// The decoded location of each data record, keyed by its offset: many
	// networks share a record, and decoding is what allocates.
	mu    sync.RWMutex
	cache map[uintptr]cached

	closeOnce sync.Once
	closeErr  error
}

type cached struct {
	loc Location
	ok  bool
}

// OpenMMDB opens a database file (memory-mapped). It fails when the file is
// not an mmdb. Records without coordinates (country-only rows) are treated
// as unknown, so such clients get the configured default location.
func OpenMMDB(path string) (*MMDB, error) {
	r, err := maxminddb.Open(path)
	if err != nil {
		return nil, fmt.Errorf("geo mmdb %s: %w (want a GeoIP2/GeoLite2 City or DB-IP City .mmdb file)", path, err)
	}
	return &MMDB{path: path, r: r, cache: map[uintptr]cached{}}, nil
}

type mmdbRecord struct {
	Location struct {
		Latitude  *float64 `maxminddb:"latitude"`
		Longitude *float64 `maxminddb:"longitude"`
	} `maxminddb:"location"`
}

// Lookup implements Source.
func (m *MMDB) Lookup(addr netip.Addr) Match {
	addr = addr.Unmap()
	res := m.r.Lookup(addr)
	bits := res.Prefix().Bits()
	if res.Err() != nil || !res.Found() {
		return Match{Bits: bits}
	}
	off := res.Offset()
	m.mu.RLock()
	c, hit := m.cache[off]
	m.mu.RUnlock()
	if !hit {
		var rec mmdbRecord
		if err := res.Decode(&rec); err == nil && rec.Location.Latitude != nil && rec.Location.Longitude != nil {
			c = cached{loc: Location{*rec.Location.Latitude, *rec.Location.Longitude}, ok: true}
			c.ok = c.loc.Valid()
		}
		m.mu.Lock()
		if len(m.cache) < maxCachedRecords {
			m.cache[off] = c
		}
		m.mu.Unlock()
	}
	if !c.ok {
		return Match{Bits: bits}
	}
	return Match{Found: true, Loc: c.loc, Bits: bits}
}

// Name implements Source.
func (m *MMDB) Name() string { return "mmdb " + m.path }

// Close implements Source. It is safe to call more than once.
func (m *MMDB) Close() error {
	m.closeOnce.Do(func() { m.closeErr = m.r.Close() })
	return m.closeErr
}
