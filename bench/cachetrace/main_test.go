package main

import (
	"strings"
	"testing"
)

func TestParseSizesErrors(t *testing.T) {
	for _, spec := range []string{"1024", "1024:x", "x:5", "0:5", "1024:0", "1024:5,", "-1:5"} {
		if _, err := parseSizes(spec, 1024); err == nil || !strings.Contains(err.Error(), "is not size:weight") {
			t.Errorf("parseSizes(%q) = %v, want a size:weight error", spec, err)
		}
	}
	if _, err := parseSizes("", 0); err == nil || !strings.Contains(err.Error(), "-size 0 must be > 0") {
		t.Errorf("parseSizes(\"\", 0) = %v", err)
	}
}

// Each key keeps one size, and the sizes come out in proportion to their
// weights.
func TestSizeMix(t *testing.T) {
	m, err := parseSizes("1024:70,16384:25,262144:5", 0)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := m.mean(), (1024*70+16384*25+262144*5)/100.0; got != want {
		t.Fatalf("mean %v, want %v", got, want)
	}
	counts := map[int]int{}
	for k := uint64(0); k < 100000; k++ {
		s := m.of(k, 1)
		if s != m.of(k, 1) {
			t.Fatalf("key %d changed size", k)
		}
		counts[s]++
	}
	for size, want := range map[int]int{1024: 70000, 16384: 25000, 262144: 5000} {
		if got := counts[size]; got < want*95/100 || got > want*105/100 {
			t.Errorf("size %d drawn for %d of 100000 keys, want about %d", size, got, want)
		}
	}
	if one, _ := parseSizes("", 512); one.of(7, 1) != 512 || one.String() != "512B" {
		t.Errorf("single size: %d %q", one.of(7, 1), one.String())
	}
}

func TestKnownVariants(t *testing.T) {
	for _, v := range []string{"adaptive", "static", "nosplit", "adaptive4", "static8"} {
		if !knownVariant(v) {
			t.Errorf("%s unknown", v)
		}
	}
	if knownVariant("half") {
		t.Error("half known")
	}
}
