package config_test

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/meridian-edge/meridian/internal/config"
)

// withNSID is base with "  nsid: <value>" on line 16, under dns.listen.
func withNSID(value string) string {
	return strings.Replace(base, "  listen: 127.0.0.1:5353\n", "  listen: 127.0.0.1:5353\n  nsid: "+value+"\n", 1)
}

func TestNSIDSetting(t *testing.T) {
	host, err := os.Hostname()
	if err != nil || host == "" {
		t.Fatalf("this machine has no host name to test with: %v", err)
	}
	cases := []struct {
		name string
		text string
		want []byte // nil: off
	}{
		{"off by default", base, nil},
		{"empty is off", withNSID(`""`), nil},
		{"a node name", withNSID("ns1-fra"), []byte("ns1-fra")},
		{"quoted text with spaces, as written", withNSID(`"fra 2 / rack 7"`), []byte("fra 2 / rack 7")},
		{"a number is text", withNSID("42"), []byte("42")},
		{"hostname", withNSID("hostname"), []byte(host)},
		{"128 bytes, the most", withNSID(strings.Repeat("a", 128)), bytes.Repeat([]byte("a"), 128)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := config.Parse("nsid.yaml", []byte(c.text))
			if err != nil {
				t.Fatal(err)
			}
			got, err := cfg.DNS.NSIDBytes()
			if err != nil {
				t.Fatalf("NSIDBytes: %v", err)
			}
			if !bytes.Equal(got, c.want) || (got == nil) != (c.want == nil) {
				t.Errorf("NSID %q, want %q", got, c.want)
			}
		})
	}
}

func TestNSIDErrors(t *testing.T) {
	checkErrors(t, "nsid.yaml", withNSID(strings.Repeat("a", 129)), []wantErr{
		{16, "dns.nsid", "129 bytes is too long; an NSID is at most 128 bytes: use a short node name such as ns1-fra, or hostname"},
	})
	checkErrors(t, "nsid.yaml", withNSID("[ns1, ns2]"), []wantErr{
		{16, "dns.nsid", "expected a string, got a list"},
	})
	// Reported with the other problems of the file, in line order.
	text := strings.Replace(withNSID(strings.Repeat("é", 65)), "names: [www]", "names: [www.other.test]", 1)
	checkErrors(t, "nsid.yaml", text, []wantErr{
		{16, "dns.nsid", "130 bytes is too long; an NSID is at most 128 bytes: use a short node name such as ns1-fra, or hostname"},
		{19, "dns.zones[0].names[0]", "www.other.test is outside zone example.test; use a name under the apex"},
	})
}
