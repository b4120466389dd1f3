package acmetest

import (
	"strings"
	"testing"
)

// TestMissingPebbleNamesTheScript: without pebble the error (which tests
// fail with) tells the user what to run.
func TestMissingPebbleNamesTheScript(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	t.Setenv("HOME", t.TempDir())
	_, err := Binary()
	if err == nil || !strings.Contains(err.Error(), "scripts/pebble.sh") {
		t.Fatalf("Binary() = %v, want an error naming scripts/pebble.sh", err)
	}
}
