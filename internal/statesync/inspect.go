package statesync

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/nats-io/nats.go"
)

func inspectSubject(node string) string { return subjectRoot + ".inspect." + node }

// inspectVersion versions the JSON request/reply of the inspect subject,
// apart from WireVersion: the CLI's format did not change with the binary
// delta format.
const inspectVersion = 1

// inspectRequest asks a node about one key, or for its keys under a prefix.
type inspectRequest struct {
	V      int    `json:"v"`
	Key    string `json:"key,omitempty"`
	Prefix string `json:"prefix,omitempty"`
	List   bool   `json:"list,omitempty"`
}

type inspectReply struct {
	V      int      `json:"v"`
	Error  string   `json:"error,omitempty"`
	Found  bool     `json:"found"`
	Info   KeyInfo  `json:"info"`
	Keys   []string `json:"keys,omitempty"`
	Status Status   `json:"status"`
}

const maxInspectKeys = 10000

func (n *Node) serveInspect(m *nats.Msg) {
	var req inspectRequest
	var rep inspectReply
	rep.V = inspectVersion
	switch err := json.Unmarshal(m.Data, &req); {
	case len(m.Data) > 4096:
		rep.Error = "request too large"
	case err != nil:
		rep.Error = "malformed request: " + err.Error()
	case req.V != inspectVersion:
		rep.Error = fmt.Sprintf("request version %d, this node speaks %d", req.V, inspectVersion)
	case req.List:
		rep.Keys = n.Keys(req.Prefix)
		if len(rep.Keys) > maxInspectKeys {
			rep.Keys = rep.Keys[:maxInspectKeys]
		}
		rep.Found = true
	default:
		rep.Info, rep.Found = n.Inspect(req.Key)
	}
	rep.Status = n.Status()
	data, err := json.Marshal(rep)
	if err != nil {
		return
	}
	_ = m.Respond(data)
}

func askNode(ctx context.Context, nc *nats.Conn, node string, req inspectRequest) (inspectReply, error) {
	var rep inspectReply
	if !validID(node) {
		return rep, fmt.Errorf("statesync: node id %q is not valid", node)
	}
	req.V = inspectVersion
	data, _ := json.Marshal(req)
	msg, err := nc.RequestWithContext(ctx, inspectSubject(node), data)
	if err != nil {
		return rep, fmt.Errorf("statesync: ask node %s: %w (is it running and connected to this NATS?)", node, err)
	}
	if err := json.Unmarshal(msg.Data, &rep); err != nil {
		return rep, fmt.Errorf("statesync: node %s answered garbage: %w", node, err)
	}
	if rep.Error != "" {
		return rep, fmt.Errorf("statesync: node %s: %s", node, rep.Error)
	}
	return rep, nil
}

// InspectRemote asks the running node `node` (over NATS) for a key's value,
// vector clock, conflicts and history: `meridian state get --node`.
func InspectRemote(ctx context.Context, nc *nats.Conn, node, key string) (KeyInfo, bool, error) {
	rep, err := askNode(ctx, nc, node, inspectRequest{Key: key})
	return rep.Info, rep.Found, err
}

// KeysRemote asks the running node `node` for its keys under prefix (at most
// 10000) and its Status: `meridian state keys|status --node`.
func KeysRemote(ctx context.Context, nc *nats.Conn, node, prefix string) ([]string, Status, error) {
	rep, err := askNode(ctx, nc, node, inspectRequest{Prefix: prefix, List: true})
	return rep.Keys, rep.Status, err
}
