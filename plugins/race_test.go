//go:build race

package plugins_test

// raceEnabled: the race detector is on. Its own memory (shadow and sync
// metadata) grows with every goroutine and object the test makes, so the
// process RSS says nothing about leaks then; make test checks RSS bounds in
// a pass without -race.
const raceEnabled = true
