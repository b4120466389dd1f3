// Command meridian is the one binary of the Meridian edge platform: it runs
// the all-in-one dev stack, a PoP, or the GeoDNS server, and holds the ops
// tools (config check, dns explain, regions).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
)

const usage = `meridian — an edge gateway: GeoDNS, caching PoPs, wasm plugins, NATS sync.

Usage:
  meridian dev [--config FILE]             run everything on loopback (embedded NATS, demo origin, PoPs, DNS)
  meridian pop --config FILE [--id ID]     run one PoP against the file's NATS
  meridian dns --config FILE               run the GeoDNS server against the file's NATS
  meridian dns explain [--config FILE] --subnet CIDR NAME
                                           show how a running DNS server answers NAME for a client subnet
  meridian plugin push|list|promote|rollback|remove|logs|chain --site SITE ...
                                           deploy a site's wasm plugins through a PoP's admin API
  meridian purge --site SITE --url URL|--prefix URL|--key KEY|--all [--soft]
                                           remove (or mark stale) cached objects on every PoP
  meridian state status|keys|get --node POP [KEY]
                                           inspect a running PoP's replica of the shared state
  meridian config check FILE               validate a configuration file without starting anything
  meridian token                           make an admin API token and the SHA-256 to put in the config
  meridian regions                         list the built-in region catalog
  meridian version                         print the version

Run 'meridian COMMAND -h' for a command's usage and flags.
`

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

// errUsage marks errors that come with the usage text.
var errUsage = errors.New("see 'meridian -h'")

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch cmd, rest := args[0], args[1:]; cmd {
	case "dev":
		err = cmdDev(ctx, rest, stdout, stderr)
	case "pop":
		err = cmdPoP(ctx, rest, stderr)
	case "dns":
		if len(rest) > 0 && rest[0] == "explain" {
			err = cmdDNSExplain(ctx, rest[1:], stdout, stderr)
		} else {
			err = cmdDNS(ctx, rest, stderr)
		}
	case "config":
		err = cmdConfig(rest, stdout, stderr)
	case "plugin":
		err = cmdPlugin(ctx, rest, stdout, stderr)
	case "purge":
		err = cmdPurge(ctx, rest, stdout, stderr)
	case "state":
		err = cmdState(ctx, rest, stdout, stderr)
	case "token":
		err = cmdToken(rest, stdout, stderr)
	case "regions":
		err = cmdRegions(rest, stdout, stderr)
	case "version", "--version", "-v":
		if err = noArgs("version", "version", rest, stderr); err == nil {
			fmt.Fprintln(stdout, version())
		}
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "meridian: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	if err == nil {
		return 0
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if errors.As(err, new(errFlags)) {
		return 2 // printed with the usage already
	}
	fmt.Fprintf(stderr, "meridian: %v\n", err)
	if errors.Is(err, errUsage) {
		return 2
	}
	return 1
}
