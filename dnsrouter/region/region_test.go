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
