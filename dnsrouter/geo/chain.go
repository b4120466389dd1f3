package geo

import (
	"errors"
	"net/netip"
)

// Chain consults sources in order and returns the first match, e.g. a
// YAML table of ops' overrides before an MMDB. Close closes them all.
func Chain(sources ...Source) Source { return chain(sources) }

type chain []Source

func (c chain) Lookup(addr netip.Addr) Match {
	for i, s := range c {
		if m := s.Lookup(addr); m.Found {
			if i > 0 {
				// A later source's block may contain a more specific block of
				// an earlier source, so its prefix length is no safe ECS scope;
				// fall back to the query's own source prefix.
				m.Bits = -1
			}
			return m
		}
	}
	return Match{Bits: -1}
}

func (c chain) Name() string {
	name := ""
	for i, s := range c {
		if i > 0 {
			name += " then "
		}
		name += s.Name()
	}
	return name
}

func (c chain) Close() error {
	var errs []error
	for _, s := range c {
		errs = append(errs, s.Close())
	}
	return errors.Join(errs...)
}
