package geo

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"

	"github.com/meridian-edge/meridian/dnsrouter/region"
	"go.yaml.in/yaml/v3"
)

// Entry is one row of a CIDR table: a network and where it is.
type Entry struct {
	Prefix netip.Prefix
	Loc    Location
}

// Table is an in-memory CIDR → location table with longest-prefix match.
// It is immutable after construction.
type Table struct {
	name string
	// byLen holds one map per distinct prefix length, longest first, so a
	// lookup is a handful of masked map probes and never allocates.
	byLen []lenMap
	n     int
	// spans and longest index the entries by address for Scope.
	spans   []span
	longest [][]uint8
}

type lenMap struct {
	bits int // in the 128-bit space; IPv4 entries are stored as mapped /96+n
	m    map[netip.Prefix]Location
}

// NewTable builds a table from entries. Duplicate prefixes are an error, so
// that a typo in a table never silently overrides a line above it.
func NewTable(name string, entries []Entry) (*Table, error) {
	t := &Table{name: name}
	idx := map[int]int{}
	for i, e := range entries {
		if !e.Prefix.IsValid() {
			return nil, fmt.Errorf("geo table %s: entry %d: invalid prefix", name, i+1)
		}
		if !e.Loc.Valid() {
			return nil, fmt.Errorf("geo table %s: entry %d (%s): lat must be -90..90 and lon -180..180, got %s", name, i+1, e.Prefix, e.Loc)
		}
		p := canon(e.Prefix)
		j, ok := idx[p.Bits()]
		if !ok {
			j = len(t.byLen)
			idx[p.Bits()] = j
			t.byLen = append(t.byLen, lenMap{bits: p.Bits(), m: map[netip.Prefix]Location{}})
		}
		if _, dup := t.byLen[j].m[p]; dup {
			return nil, fmt.Errorf("geo table %s: entry %d: prefix %s listed twice", name, i+1, e.Prefix)
		}
		t.byLen[j].m[p] = e.Loc
		t.n++
	}
	slices.SortFunc(t.byLen, func(a, b lenMap) int { return b.bits - a.bits })
	t.buildSpans()
	return t, nil
}

// canon maps IPv4 prefixes into the IPv4-mapped IPv6 space so that one
// lookup walk serves both families.
func canon(p netip.Prefix) netip.Prefix {
	p = p.Masked()
	if p.Addr().Is4() {
		return netip.PrefixFrom(netip.AddrFrom16(p.Addr().As16()), p.Bits()+96)
	}
	return p
}

// Lookup implements Source.
func (t *Table) Lookup(addr netip.Addr) Match {
	a := addr.Unmap()
	is4 := a.Is4()
	a16 := netip.AddrFrom16(a.As16())
	for _, l := range t.byLen {
		bits := l.bits
		if is4 && bits < 96 {
			// An IPv6 prefix shorter than ::ffff:0:0/96 would cover mapped
			// addresses; IPv4 clients must not match IPv6 rows.
			break
		}
		p, err := a16.Prefix(bits)
		if err != nil {
			continue
		}
		if loc, ok := l.m[p]; ok {
			if is4 {
				bits -= 96
			}
			return Match{Found: true, Loc: loc, Bits: bits}
		}
	}
	return Match{Bits: -1}
}

// Len returns the number of entries.
func (t *Table) Len() int { return t.n }

// Name implements Source.
func (t *Table) Name() string { return "table " + t.name }

// Close implements Source; a table holds nothing to release.
func (t *Table) Close() error { return nil }

// tableFile is the YAML shape of a table file:
//
//	networks:
//	  - cidr: 192.0.2.0/24
//	    region: us-east-1        # a catalog region ...
//	  - cidr: 198.51.100.0/24
//	    lat: 51.5                # ... or explicit coordinates
//	    lon: -0.1
type tableFile struct {
	Networks []tableRow `yaml:"networks"`
}

type tableRow struct {
	CIDR   string   `yaml:"cidr"`
	Region string   `yaml:"region"`
	Lat    *float64 `yaml:"lat"`
	Lon    *float64 `yaml:"lon"`
}

// LoadTable reads a YAML CIDR table from path. Errors name the file and line.
func LoadTable(path string) (*Table, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("geo table: %w", err)
	}
	return ParseTable(path, data)
}

// ParseTable parses the YAML form of a table (see LoadTable); name is used
// in error messages as the file name.
func ParseTable(name string, data []byte) (*Table, error) {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: empty geo table: want a top-level 'networks:' list", name)
		}
		return nil, fmt.Errorf("%s: %v", name, err)
	}
	var f tableFile
	strict := yaml.NewDecoder(bytes.NewReader(data))
	strict.KnownFields(true)
	if err := strict.Decode(&f); err != nil {
		return nil, fmt.Errorf("%s: %v", name, err)
	}
	rows := rowNodes(&doc)
	entries := make([]Entry, 0, len(f.Networks))
	for i, r := range f.Networks {
		line := 0
		if i < len(rows) {
			line = rows[i].Line
		}
		at := fmt.Sprintf("%s:%d", name, line)
		p, err := netip.ParsePrefix(r.CIDR)
		if err != nil {
			return nil, fmt.Errorf("%s: cidr: want a network like 192.0.2.0/24, got %q", at, r.CIDR)
		}
		if p.Masked() != p {
			return nil, fmt.Errorf("%s: cidr: %s has host bits set; did you mean %s?", at, p, p.Masked())
		}
		var loc Location
		switch {
		case r.Region != "" && (r.Lat != nil || r.Lon != nil):
			return nil, fmt.Errorf("%s: give either region or lat/lon, not both", at)
		case r.Region != "":
			reg, ok := region.Lookup(r.Region)
			if !ok {
				return nil, fmt.Errorf("%s: region: unknown region %q", at, r.Region)
			}
			loc = Location{reg.Lat, reg.Lon}
		case r.Lat != nil && r.Lon != nil:
			loc = Location{*r.Lat, *r.Lon}
			if *r.Lat < -90 || *r.Lat > 90 {
				return nil, fmt.Errorf("%s: lat: want -90..90, got %g", at, *r.Lat)
			}
			if *r.Lon < -180 || *r.Lon > 180 {
				return nil, fmt.Errorf("%s: lon: want -180..180, got %g", at, *r.Lon)
			}
		default:
			return nil, fmt.Errorf("%s: want region or both lat and lon", at)
		}
		entries = append(entries, Entry{Prefix: p, Loc: loc})
	}
	t, err := NewTable(name, entries)
	if err != nil {
		return nil, err
	}
	return t, nil
}

// rowNodes returns the YAML nodes of the networks list, for line numbers.
func rowNodes(doc *yaml.Node) []*yaml.Node {
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return nil
	}
	m := doc.Content[0]
	if m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == "networks" && m.Content[i+1].Kind == yaml.SequenceNode {
			return m.Content[i+1].Content
		}
	}
	return nil
}

// DevEntries is the built-in table of `meridian dev`: the documentation
// networks placed in Virginia, London and Tokyo so that EDNS Client Subnet
// works out of the box.
func DevEntries() []Entry {
	at := func(id string) Location {
		r, _ := region.Lookup(id)
		return Location{r.Lat, r.Lon}
	}
	va, ldn, tyo := at("us-east-1"), at("eu-west-2"), at("ap-northeast-1")
	return []Entry{
		{netip.MustParsePrefix("192.0.2.0/24"), va},
		{netip.MustParsePrefix("198.51.100.0/24"), ldn},
		{netip.MustParsePrefix("203.0.113.0/24"), tyo},
		{netip.MustParsePrefix("2001:db8:1::/48"), va},
		{netip.MustParsePrefix("2001:db8:2::/48"), ldn},
		{netip.MustParsePrefix("2001:db8:3::/48"), tyo},
	}
}

// DevTable returns DevEntries as a Table.
func DevTable() *Table {
	t, err := NewTable("dev", DevEntries())
	if err != nil {
		panic(err) // static data; covered by tests
	}
	return t
}

// Locations returns the distinct locations in the table, so that callers
// can precompute per-location decisions before the first query.
func (t *Table) Locations() []Location {
	seen := map[Location]bool{}
	var out []Location
	for _, l := range t.byLen {
		for _, loc := range l.m {
			if !seen[loc] {
				seen[loc] = true
				out = append(out, loc)
			}
		}
	}
	return out
}
