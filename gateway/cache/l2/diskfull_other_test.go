//go:build !unix

package l2_test

import "fmt"

// childDiskFull is the unix full-disk child (diskfull_unix_test.go); there
// is no file-size limit to run it under here, and no test starts it.
func childDiskFull(string) int {
	fmt.Println("no RLIMIT_FSIZE on this platform")
	return 2
}
