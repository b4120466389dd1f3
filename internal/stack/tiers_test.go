package stack

import (
	"testing"

	"github.com/meridian-edge/meridian/internal/config"
)

// l1_large_bodies has three meanings that L1 spells differently: unset is
// L1's own default split, 0B is "no side pool" (LargeBody -1, since 0 would
// mean the default), and a size is the side pool's budget.
func TestL1LargeOptions(t *testing.T) {
	size := func(b config.ByteSize) *config.ByteSize { return &b }
	tests := []struct {
		name      string
		set       *config.ByteSize
		wantBody  int64
		wantBytes int64
	}{
		{"unset", nil, 0, 0},
		{"none", size(0), -1, 0},
		{"sized", size(96 << 20), 0, 96 << 20},
	}
	for _, tc := range tests {
		body, bytes := l1Large(config.CacheTiers{L1Size: 256 << 20, L1LargeBodies: tc.set})
		if body != tc.wantBody || bytes != tc.wantBytes {
			t.Errorf("%s: l1Large = (%d, %d), want (%d, %d)", tc.name, body, bytes, tc.wantBody, tc.wantBytes)
		}
	}
}
