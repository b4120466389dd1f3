package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/meridian-edge/meridian/internal/stack"
	"github.com/meridian-edge/meridian/internal/statesync"
)

const stateUsage = `usage:
  meridian state status [--config FILE] --node POP
  meridian state keys   [--config FILE] --node POP [PREFIX]
  meridian state get    [--config FILE] --node POP KEY

Asks a running PoP over NATS about its replica of the shared state: a key's
value, vector clock, losing concurrent versions and recent history.`

// stateSynopsis is the usage line of a state verb; "" for an unknown verb.
func stateSynopsis(verb string) string {
	switch verb {
	case "status":
		return "state status [--config FILE] --node POP"
	case "keys":
		return "state keys [--config FILE] --node POP [PREFIX]"
	case "get":
		return "state get [--config FILE] --node POP KEY"
	}
	return ""
}

// cmdState inspects the replicated state of a running node.
func cmdState(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("state: %s: %w", stateUsage, errUsage)
	}
	verb := args[0]
	if verb == "-h" || verb == "--help" || verb == "help" {
		fmt.Fprintln(stdout, stateUsage)
		return nil
	}
	synopsis := stateSynopsis(verb)
	if synopsis == "" {
		return fmt.Errorf("state: unknown verb %q\n%s: %w", verb, stateUsage, errUsage)
	}
	fs := newFlags("state "+verb, synopsis, stderr)
	path := fs.String("config", "", "configuration file naming the NATS to ask on (default: the built-in dev stack)")
	node := fs.String("node", "", "PoP id of the node to ask (required)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if *node == "" {
		return fmt.Errorf("state: --node is required\n%s: %w", stateUsage, errUsage)
	}
	cfg, err := loadConfig(*path)
	if err != nil {
		return err
	}
	nc, err := stack.Connect(cfg, "meridian-state")
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	switch verb {
	case "status":
		_, st, err := statesync.KeysRemote(ctx, nc, *node, "\x00none")
		if err != nil {
			return err
		}
		return enc.Encode(st)
	case "keys":
		keys, _, err := statesync.KeysRemote(ctx, nc, *node, fs.Arg(0))
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, strings.Join(keys, "\n"))
		return nil
	case "get":
		if fs.NArg() != 1 {
			return fmt.Errorf("state get: give one KEY (see 'meridian state keys'): %w", errUsage)
		}
		info, found, err := statesync.InspectRemote(ctx, nc, *node, fs.Arg(0))
		if err != nil {
			return err
		}
		if !found {
			return fmt.Errorf("state get: node %s has no key %q", *node, fs.Arg(0))
		}
		return enc.Encode(info)
	}
	return fmt.Errorf("state: unknown verb %q\n%s: %w", verb, stateUsage, errUsage)
}
