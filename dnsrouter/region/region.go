// Package region owns Meridian's built-in catalog of regions (the points of
// presence the product grew from, with their coordinates) and the great-circle
// distance used to rank them.
//
// It holds data and pure functions only: no health, no load, no I/O.
package region

import (
	"math"
	"sort"
)

// Region is one named location a PoP can stand in.
type Region struct {
	// ID is the stable, lower-case name used in configuration, e.g. "us-east-1".
	ID string
	// Continent groups regions the way the seed document does.
	Continent string
	// City is the human name of the location.
	City string
	// Lat and Lon are in decimal degrees (WGS84).
	Lat, Lon float64
}

// catalog is kept as a function result, not a package variable, so that no
// caller can mutate the shared table.
func catalog() []Region {
	return []Region{
		// North America
		{"us-east-1", "North America", "Virginia", 39.0, -77.5},
		{"us-east-2", "North America", "Ohio", 40.0, -83.0},
		{"us-west-1", "North America", "California", 37.4, -122.1},
		{"us-west-2", "North America", "Oregon", 45.6, -122.6},
		{"us-central", "North America", "Iowa", 41.3, -95.9},
		{"canada-central", "North America", "Toronto", 43.7, -79.4},
		{"canada-east", "North America", "Montreal", 45.5, -73.6},
		{"usa-southeast", "North America", "Atlanta", 33.7, -84.4},
		{"usa-northwest", "North America", "Seattle", 47.6, -122.3},
		{"mexico-central", "North America", "Mexico City", 19.4, -99.1},
		// Europe
		{"eu-west-1", "Europe", "Ireland", 53.4, -6.3},
		{"eu-west-2", "Europe", "London", 51.5, -0.1},
		{"eu-central-1", "Europe", "Frankfurt", 50.1, 8.7},
		{"eu-north-1", "Europe", "Stockholm", 59.3, 18.1},
		{"france-central", "Europe", "Paris", 48.9, 2.4},
		{"germany-central", "Europe", "Frankfurt", 50.1, 8.7},
		{"italy-central", "Europe", "Milan", 45.5, 9.2}, // the seed has Rome's coordinates
		{"spain-central", "Europe", "Madrid", 40.4, -3.7},
		{"netherlands-central", "Europe", "Amsterdam", 52.4, 4.9},
		// Asia-Pacific
		{"ap-southeast-1", "Asia-Pacific", "Singapore", 1.3, 103.8},
		{"ap-southeast-2", "Asia-Pacific", "Sydney", -33.9, 151.2},
		{"ap-northeast-1", "Asia-Pacific", "Tokyo", 35.7, 139.7},
		{"ap-northeast-2", "Asia-Pacific", "Seoul", 37.6, 126.9},
		{"ap-south-1", "Asia-Pacific", "Mumbai", 19.1, 72.9},
		{"japan-east", "Asia-Pacific", "Tokyo", 35.7, 139.7},
		{"south-korea-east", "Asia-Pacific", "Seoul", 37.6, 126.9},
		{"india-central", "Asia-Pacific", "Mumbai", 19.1, 72.9},
		{"singapore-central", "Asia-Pacific", "Singapore", 1.3, 103.8},
		// South America
		{"sa-brazil-south", "South America", "São Paulo", -23.6, -46.7},
		{"sa-brazil-east", "South America", "Salvador", -12.9, -38.5},
		{"sa-argentina", "South America", "Buenos Aires", -34.6, -58.4},
		{"sa-chile", "South America", "Santiago", -33.5, -70.6},
		{"sa-colombia", "South America", "Bogotá", 4.7, -74.1},
		// Middle East
		{"me-bahrain", "Middle East", "Manama", 26.2, 50.6},
		{"me-uae", "Middle East", "Dubai", 25.3, 55.3},
		{"me-saudi-arabia", "Middle East", "Riyadh", 24.7, 46.7},
		{"me-israel", "Middle East", "Tel Aviv", 32.1, 34.8},
		{"me-turkey", "Middle East", "Istanbul", 41.0, 28.9},
		// Africa
		{"af-south-africa", "Africa", "Cape Town", -33.9, 18.4},
		{"af-nigeria", "Africa", "Lagos", 6.5, 3.4},
		{"af-egypt", "Africa", "Cairo", 30.0, 31.2},
		{"af-kenya", "Africa", "Nairobi", -1.3, 36.8},
		{"af-morocco", "Africa", "Casablanca", 33.6, -7.6},
	}
}

// All returns a copy of the built-in catalog, in the seed document's order.
func All() []Region { return catalog() }

// IDs returns the catalog's region IDs, sorted, for error messages.
func IDs() []string {
	all := catalog()
	ids := make([]string, len(all))
	for i, r := range all {
		ids[i] = r.ID
	}
	sort.Strings(ids)
	return ids
}

// Lookup finds a region by ID.
func Lookup(id string) (Region, bool) {
	for _, r := range catalog() {
		if r.ID == id {
			return r, true
		}
	}
	return Region{}, false
}

// EarthRadiusKm is the mean Earth radius used by Distance.
const EarthRadiusKm = 6371.0088

// Distance returns the great-circle (haversine) distance in kilometres between
// two points given in decimal degrees.
func Distance(lat1, lon1, lat2, lon2 float64) float64 {
	const rad = math.Pi / 180
	dLat := (lat2 - lat1) * rad
	dLon := (lon2 - lon1) * rad
	s1 := math.Sin(dLat / 2)
	s2 := math.Sin(dLon / 2)
	a := s1*s1 + math.Cos(lat1*rad)*math.Cos(lat2*rad)*s2*s2
	if a > 1 {
		a = 1
	}
	return 2 * EarthRadiusKm * math.Asin(math.Sqrt(a))
}
