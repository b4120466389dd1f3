// Package geotest writes small, real MaxMind-format databases for tests
// (with github.com/maxmind/mmdbwriter), shaped like GeoIP2-City. It holds
// no geodata of its own: tests list the networks they need.
package geotest

import (
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"
)

// Network is one row of a test database.
type Network struct {
	CIDR string
	// Lat and Lon are written as location.latitude/longitude unless
	// NoLocation is set (a country-only row).
	Lat, Lon   float64
	NoLocation bool
	Country    string
}

// WriteCity writes a GeoIP2-City-shaped database with nets into a fresh
// file under t.TempDir() and returns its path.
func WriteCity(t testing.TB, nets []Network) string {
	t.Helper()
	w, err := mmdbwriter.New(mmdbwriter.Options{
		DatabaseType:            "GeoIP2-City",
		Description:             map[string]string{"en": "Meridian test data"},
		Languages:               []string{"en"},
		IncludeReservedNetworks: true,
		RecordSize:              28,
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nets {
		_, ipnet, err := net.ParseCIDR(n.CIDR)
		if err != nil {
			t.Fatalf("geotest: %s: %v", n.CIDR, err)
		}
		cc := n.Country
		if cc == "" {
			cc = "ZZ"
		}
		rec := mmdbtype.Map{"country": mmdbtype.Map{"iso_code": mmdbtype.String(cc)}}
		if !n.NoLocation {
			rec["location"] = mmdbtype.Map{
				"latitude":        mmdbtype.Float64(n.Lat),
				"longitude":       mmdbtype.Float64(n.Lon),
				"accuracy_radius": mmdbtype.Uint16(50),
			}
		}
		if err := w.Insert(ipnet, rec); err != nil {
			t.Fatalf("geotest: insert %s: %v", n.CIDR, err)
		}
	}
	path := filepath.Join(t.TempDir(), "city.mmdb")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteTo(f); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}
