package freq

import "testing"

func TestSketchCountsSaturatesAndAges(t *testing.T) {
	s := New(1024)
	for want := uint64(1); want <= 15; want++ {
		if got := s.Add(42); got != want {
			t.Fatalf("after %d accesses: estimate %d", want, got)
		}
	}
	if got := s.Add(42); got != 15 {
		t.Fatalf("counter passed 15: %d", got)
	}
	if got := s.Estimate(7); got != 0 {
		t.Fatalf("unseen key estimated at %d", got)
	}
	s.age()
	if got := s.Estimate(42); got != 7 {
		t.Fatalf("after ageing: %d, want 15/2 = 7", got)
	}
}

func TestSketchAgesBySampleSize(t *testing.T) {
	s := New(16) // sample size 160 increments
	s.Add(1)
	s.Add(1)
	for i := uint64(100); i < 100+160; i++ {
		s.Increment(i)
	}
	if got := s.Estimate(1); got > 1 {
		t.Fatalf("old popularity did not fade: %d", got)
	}
}
