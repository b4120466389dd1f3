//go:build !race

package plugins_test

// raceEnabled: see race_test.go.
const raceEnabled = false
