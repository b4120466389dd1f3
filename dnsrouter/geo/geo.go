// Package geo owns the mapping from a client address to a location: a YAML
// CIDR table with longest-prefix match and MaxMind-format .mmdb databases.
//
// It answers "where is this network block, and how wide is the block"; it
// must not know about PoPs, health or DNS. Lookups on the hot path do not
// allocate once a block has been seen.
package geo

import (
	"fmt"
	"net/netip"
)

// Location is a point on the earth in decimal degrees (WGS84).
type Location struct {
	Lat float64 `json:"lat"`
	Lon float64 `json:"lon"`
}

// Valid reports whether the coordinates are within range.
func (l Location) Valid() bool {
	return l.Lat >= -90 && l.Lat <= 90 && l.Lon >= -180 && l.Lon <= 180
}

// String renders the location as "lat,lon".
func (l Location) String() string { return fmt.Sprintf("%.4f,%.4f", l.Lat, l.Lon) }

// Match is the result of a lookup.
type Match struct {
	// Found is false when the source has no location for the address.
	Found bool
	// Loc is the location of the block (zero when !Found).
	Loc Location
	// Bits is the prefix length of the network block that decided the
	// answer, in the address's own family (0..32 for IPv4). It becomes the
	// ECS scope prefix. -1 means the source cannot tell (an unmatched
	// address in a table), so the caller should fall back to the source
	// prefix length of the query.
	Bits int
}

// Source maps an address to a location. Several implementations exist (the
// YAML table and .mmdb files), so this is an interface; both are safe for
// concurrent use.
type Source interface {
	// Lookup finds the most specific block containing addr. IPv4-mapped
	// IPv6 addresses are treated as IPv4.
	Lookup(addr netip.Addr) Match
	// Name describes the source for logs and `dns explain` ("table FILE",
	// "mmdb FILE").
	Name() string
	// Close releases the source's resources (an mmdb's mapping).
	Close() error
}
