// Package deploy ships the example configurations: dev.yaml is the stack
// `meridian dev` runs by default, the others are starting points for ops.
package deploy

import "embed"

//go:embed *.yaml
var files embed.FS

// File returns the bytes of one shipped configuration, e.g. "dev.yaml".
func File(name string) ([]byte, error) { return files.ReadFile(name) }

// Files lists the shipped configurations.
func Files() ([]string, error) {
	entries, err := files.ReadDir(".")
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names, nil
}
