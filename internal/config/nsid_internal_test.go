package config

import (
	"testing"

	"github.com/meridian-edge/meridian/dnsrouter"
)

// A dns.nsid that config accepts must be one the DNS server accepts.
func TestNSIDLimitMatchesServer(t *testing.T) {
	if maxNSID != dnsrouter.MaxNSIDLen {
		t.Fatalf("config allows %d-byte NSIDs, dnsrouter %d", maxNSID, dnsrouter.MaxNSIDLen)
	}
}
