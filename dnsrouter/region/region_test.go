package region

import (
	"bufio"
	"math"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unicode"
)

// seedID turns the seed's "UsEast1" into the catalog's "us-east-1".
func seedID(name string) string {
	var b strings.Builder
	for i, r := range name {
		if i > 0 && (unicode.IsUpper(r) || (unicode.IsDigit(r) && !unicode.IsDigit(rune(name[i-1])))) {
			b.WriteByte('-')
		}
		b.WriteRune(unicode.ToLower(r))
	}
	return b.String()
}

// seedErrata are the seed document's known coordinate errors, which the
// catalog corrects (TestCityCoordinates checks the corrected values).
var seedErrata = map[string]struct{ seedLat, seedLon float64 }{
	"italy-central": {41.9, 12.5}, // Milan given Rome's coordinates
}

// TestCatalogMatchesSeed parses the seed document (kept verbatim in testdata)
// and requires every region, city and coordinate to be in the catalog, and
// nothing else.
func TestCatalogMatchesSeed(t *testing.T) {
	f, err := os.Open("testdata/edge-architecture.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	line := regexp.MustCompile(`^Region::(\w+) // (.+) \((-?[\d.]+), (-?[\d.]+)\)$`)
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		m := line.FindStringSubmatch(strings.TrimSpace(sc.Text()))
		if m == nil {
			continue
		}
		id := seedID(m[1])
		lat, _ := strconv.ParseFloat(m[3], 64)
		lon, _ := strconv.ParseFloat(m[4], 64)
		r, ok := Lookup(id)
		if !ok {
			t.Errorf("seed region %s (%s) is missing from the catalog as %q", m[1], m[2], id)
			continue
		}
		if c, ok := seedErrata[id]; ok {
			if r.City != m[2] || lat != c.seedLat || lon != c.seedLon {
				t.Errorf("%s: the seed no longer has the erratum (%v, %v) for %s: drop it from seedErrata", id, c.seedLat, c.seedLon, r.City)
			}
			seen[id] = true
			continue
		}
		if r.City != m[2] || r.Lat != lat || r.Lon != lon {
			t.Errorf("%s: catalog has %s (%v, %v), seed has %s (%v, %v)", id, r.City, r.Lat, r.Lon, m[2], lat, lon)
		}
		seen[id] = true
	}
	if len(seen) < 40 {
		t.Fatalf("parsed only %d regions from the seed; the parser or the file is wrong", len(seen))
	}
	for _, r := range All() {
		if !seen[r.ID] {
			t.Errorf("catalog region %s is not in the seed", r.ID)
		}
	}
}

func TestIDsUnique(t *testing.T) {
	ids := IDs()
	for i := 1; i < len(ids); i++ {
		if ids[i] == ids[i-1] {
			t.Errorf("duplicate region id %s", ids[i])
		}
	}
}

func TestDistance(t *testing.T) {
	cases := []struct {
		name                   string
		lat1, lon1, lat2, lon2 float64
		wantKm, tolKm          float64
	}{
		{"same point", 35.7, 139.7, 35.7, 139.7, 0, 0.001},
		{"London-Paris", 51.5, -0.1, 48.9, 2.4, 340, 10},
		{"Tokyo-Seoul", 35.7, 139.7, 37.6, 126.9, 1160, 20},
		{"antipodes", 0, 0, 0, 180, math.Pi * EarthRadiusKm, 0.01},
		{"pole to pole", 90, 0, -90, 0, math.Pi * EarthRadiusKm, 0.01},
		{"across the date line", 0, 179.5, 0, -179.5, 111, 1},
	}
	for _, c := range cases {
		got := Distance(c.lat1, c.lon1, c.lat2, c.lon2)
		if math.Abs(got-c.wantKm) > c.tolKm {
			t.Errorf("%s: Distance = %.1f km, want %.1f ± %.1f", c.name, got, c.wantKm, c.tolKm)
		}
	}
}

// TestCityCoordinates checks every catalog region against its city's
// coordinates from an atlas (within 1 degree), so that a city given another
// city's coordinates (Milan had Rome's, 480 km off) cannot hide behind a
// faithful copy of the seed document.
func TestCityCoordinates(t *testing.T) {
	// The US "cities" are states: their data-centre towns (Ashburn,
	// Columbus, Mountain View, Portland, Council Bluffs).
	atlas := map[string]struct{ lat, lon float64 }{
		"Virginia": {39.04, -77.49}, "Ohio": {39.96, -83.00}, "California": {37.39, -122.08}, "Oregon": {45.52, -122.68},
		"Iowa": {41.26, -95.86}, "Toronto": {43.65, -79.38}, "Montreal": {45.50, -73.57}, "Atlanta": {33.75, -84.39},
		"Seattle": {47.61, -122.33}, "Mexico City": {19.43, -99.13},
		"Ireland": {53.35, -6.26}, "London": {51.51, -0.13}, "Frankfurt": {50.11, 8.68}, "Stockholm": {59.33, 18.07},
		"Paris": {48.86, 2.35}, "Milan": {45.46, 9.19}, "Madrid": {40.42, -3.70}, "Amsterdam": {52.37, 4.90},
		"Singapore": {1.35, 103.82}, "Sydney": {-33.87, 151.21}, "Tokyo": {35.68, 139.69}, "Seoul": {37.57, 126.98},
		"Mumbai": {19.08, 72.88}, "São Paulo": {-23.55, -46.63}, "Salvador": {-12.97, -38.50},
		"Buenos Aires": {-34.60, -58.38}, "Santiago": {-33.45, -70.67}, "Bogotá": {4.71, -74.07},
		"Manama": {26.23, 50.59}, "Dubai": {25.20, 55.27}, "Riyadh": {24.71, 46.68}, "Tel Aviv": {32.09, 34.78},
		"Istanbul": {41.01, 28.98}, "Cape Town": {-33.92, 18.42}, "Lagos": {6.52, 3.38}, "Cairo": {30.04, 31.24},
		"Nairobi": {-1.29, 36.82}, "Casablanca": {33.57, -7.59},
	}
	for _, r := range All() {
		c, ok := atlas[r.City]
		if !ok {
			t.Errorf("%s: no atlas entry for %q; add one", r.ID, r.City)
			continue
		}
		if math.Abs(r.Lat-c.lat) > 1 || math.Abs(r.Lon-c.lon) > 1 {
			t.Errorf("%s (%s) is at (%v, %v); %s is at about (%v, %v)", r.ID, r.City, r.Lat, r.Lon, r.City, c.lat, c.lon)
		}
	}
}
