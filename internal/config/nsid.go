package config

import (
	"fmt"
	"os"
)

// NSIDHostname is the dns.nsid value that stands for the machine's host
// name, as PowerDNS's server-id and Knot's empty nsid do.
const NSIDHostname = "hostname"

// maxNSID is the longest NSID in bytes; dnsrouter.MaxNSIDLen (a test keeps
// the two equal; config does not import the DNS server).
const maxNSID = 128

// NSIDBytes returns what dns.nsid asks the DNS server to send: nil when it
// is empty, the machine's host name for NSIDHostname, else the text's
// bytes. Validation calls it, so after a successful Load it fails only if
// the host name changed since to something unusable.
func (d *DNS) NSIDBytes() ([]byte, error) {
	switch d.NSID {
	case "":
		return nil, nil
	case NSIDHostname:
		h, err := os.Hostname()
		if err != nil || h == "" {
			return nil, fmt.Errorf("cannot read the machine's host name (%v); write the node's name instead", err)
		}
		if len(h) > maxNSID {
			return nil, fmt.Errorf("the host name %q is %d bytes, over the %d an NSID may have; write a shorter node name instead", h, len(h), maxNSID)
		}
		return []byte(h), nil
	}
	if len(d.NSID) > maxNSID {
		return nil, fmt.Errorf("%d bytes is too long; an NSID is at most %d bytes: use a short node name such as ns1-fra, or hostname", len(d.NSID), maxNSID)
	}
	return []byte(d.NSID), nil
}
