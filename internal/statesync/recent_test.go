package statesync

import (
	"fmt"
	"testing"
)

func TestRecentIDsForgetsOldestBeyondSize(t *testing.T) {
	r := newRecentIDs(4)
	for i := range 6 {
		r.add(fmt.Sprint("id", i))
		r.add(fmt.Sprint("id", i)) // twice: kept once
	}
	for i, want := range []bool{false, false, true, true, true, true} {
		if got := r.has(fmt.Sprint("id", i)); got != want {
			t.Errorf("id%d remembered=%v, want %v", i, got, want)
		}
	}
	if r.has("never") {
		t.Error("an id never added is remembered")
	}
}
