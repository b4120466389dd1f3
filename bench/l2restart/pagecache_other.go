//go:build !linux

package main

import "errors"

// canDropCache: the cold runs need posix_fadvise(DONTNEED), which this
// tool uses on Linux only (macOS has no posix_fadvise, Windows no
// equivalent for one file), so only the warm runs are made here.
const canDropCache = false

// noDropCache says why the cold runs are skipped.
const noDropCache = "dropping files from the page cache needs posix_fadvise(DONTNEED), used on Linux only"

// dropCache cannot drop files from the page cache here.
func dropCache(string) (int, error) { return 0, errors.New(noDropCache) }
