package geo

import (
	"fmt"
	"path/filepath"
	"strings"
)

// Open loads a geo source from a file, by extension: ".mmdb" is a MaxMind
// database, ".yaml"/".yml" a CIDR table. Calling it again on SIGHUP and
// handing the result to the DNS server's Reload is how a changed file is
// picked up without a restart.
func Open(path string) (Source, error) {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".mmdb":
		return OpenMMDB(path)
	case ".yaml", ".yml":
		return LoadTable(path)
	}
	return nil, fmt.Errorf("geo source %s: unknown kind; want a .mmdb database or a .yaml CIDR table", path)
}
