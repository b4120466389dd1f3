package rollout

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// Every PoP keeps its own plugin log lines (plugins.Host.Logs). A logs
// request to any PoP's admin API gathers them from all PoPs over NATS:
// the PoP asked publishes one query on LogsSubject(site) with a reply
// inbox, every other PoP's Manager answers with its newest lines for the
// site, and the asking PoP merges what came back within LogsWait. NATS
// carries the query only between PoPs of the one account; who may see a
// site's lines is decided by the admin API's token check before the query
// is sent, as for every other admin request.

// LogsSubjectPrefix is the NATS subject prefix of log queries; a site's
// queries go to LogsSubject(site). PoP users need publish and subscribe on
// "meridian.plugins.logs.*" (deploy/multi-region/nats/accounts.conf).
const LogsSubjectPrefix = "meridian.plugins.logs."

// LogsSubject is the subject a site's log queries are published on.
func LogsSubject(site string) string { return LogsSubjectPrefix + site }

// logsWire versions the JSON of log queries and answers.
const logsWire = 1

// logsQuery asks every PoP for a site's newest plugin log lines.
type logsQuery struct {
	V      int    `json:"v"`
	Site   string `json:"site"`
	Plugin string `json:"plugin,omitempty"`
	Limit  int    `json:"limit"`
	// PoP, when set, is the only PoP that answers.
	PoP string `json:"pop,omitempty"`
	// From is the asking PoP, which answers for itself without NATS.
	From string `json:"from"`
	// Health asks, instead of log lines, what each PoP runs of the site's
	// plugins and how they are doing there (logsReply.Plugins). It rides
	// on the log subjects so that PoPs need no further NATS permissions; a
	// PoP from before it refuses the query (it has no limit), and the
	// answer names it among those that could not answer.
	Health bool `json:"health,omitempty"`
}

// logsReply is one PoP's answer to a logsQuery.
type logsReply struct {
	V     int       `json:"v"`
	PoP   string    `json:"pop"`
	Lines []LogLine `json:"lines"` // newest first
	// Truncated counts the older lines left out to keep the answer under
	// the NATS max payload.
	Truncated int    `json:"truncated,omitempty"`
	Error     string `json:"error,omitempty"`
	// Plugins answers a Health query: the site's plugins this PoP runs or
	// failed to apply.
	Plugins []PoPPlugin `json:"plugins,omitempty"`
}

// LogsAnswer answers GET /admin/plugins/{site}/logs.
type LogsAnswer struct {
	Site string `json:"site"`
	// PoP is the PoP whose admin API answered.
	PoP string `json:"pop"`
	// Lines are the merged lines of every PoP that answered, newest first,
	// at most the request's limit; each names its PoP.
	Lines []LogLine `json:"lines"`
	// Answered lists the PoPs whose lines are included, sorted.
	Answered []string `json:"answered"`
	// NotAnswered lists the PoPs this PoP knows of that did not answer in
	// time (down, cut off from NATS, or slow) or answered an error (in
	// Notes): their lines are missing.
	NotAnswered []string `json:"not_answered,omitempty"`
	// Truncated is, per PoP, how many of its older lines it left out to fit
	// its answer in one NATS message.
	Truncated map[string]int `json:"truncated,omitempty"`
	// Notes say in words what the answer lacks, one sentence each: PoPs
	// that did not answer or answered an error, lines left out.
	Notes []string `json:"notes,omitempty"`
}

// peerMemory is how long a PoP that answered a log query (or asked one) is
// expected to answer the next: a PoP gone for longer is taken as removed
// and no longer reported as not answering.
const peerMemory = time.Hour

// logPeers remembers the PoPs heard on the log subjects, for knowing
// when every PoP has answered without waiting out LogsWait.
type logPeers struct {
	mu   sync.Mutex
	seen map[string]time.Time
}

func (p *logPeers) heard(pop string, at time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.seen == nil {
		p.seen = map[string]time.Time{}
	}
	p.seen[pop] = at
}

func (p *logPeers) known(now time.Time) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for pop, at := range p.seen {
		if now.Sub(at) > peerMemory {
			delete(p.seen, pop)
			continue
		}
		out = append(out, pop)
	}
	return out
}

// popPattern is what a --pop filter may name: a PoP id as the config
// takes it, which is also a safe NATS token.
var popPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`)

// subscribeLogs starts answering other PoPs' log queries.
func (mg *Manager) subscribeLogs() error {
	sub, err := mg.opts.Conn.Subscribe(LogsSubjectPrefix+"*", mg.answerLogs)
	if err != nil {
		return fmt.Errorf("rollout: subscribe to %s*: %w", LogsSubjectPrefix, err)
	}
	mg.logsSub = sub
	return nil
}

// answerLogs answers one log query from another PoP.
func (mg *Manager) answerLogs(m *nats.Msg) {
	if m.Reply == "" {
		return
	}
	var q logsQuery
	rep := logsReply{V: logsWire, PoP: mg.opts.PoPID}
	switch err := json.Unmarshal(m.Data, &q); {
	case len(m.Data) > 4096:
		rep.Error = "query too large"
	case err != nil:
		rep.Error = "malformed query: " + err.Error()
	case q.V != logsWire:
		rep.Error = fmt.Sprintf("query version %d, this PoP speaks %d", q.V, logsWire)
	case q.From == mg.opts.PoPID:
		return // the asking PoP reads its own lines directly
	case q.PoP != "" && q.PoP != mg.opts.PoPID:
		return // asked of another PoP only
	case m.Subject != LogsSubject(q.Site) || checkSite(q.Site) != nil || (q.Limit < 1 && !q.Health):
		rep.Error = fmt.Sprintf("query for site %q on subject %q is not valid", q.Site, m.Subject)
	default:
		if popPattern.MatchString(q.From) {
			mg.peers.heard(q.From, time.Now())
		}
		if q.Health {
			rep.Plugins = mg.localPlugins(q.Site)
		} else {
			rep.Lines = mg.localLogs(q.Site, q.Plugin, q.Limit)
		}
	}
	data, err := encodeLogsReply(&rep, mg.logsBudget())
	if err != nil {
		mg.log.Warn("answering a plugin log query failed", "site", q.Site, "err", err)
		return
	}
	if err := m.Respond(data); err != nil {
		mg.log.Debug("answering a plugin log query failed", "site", q.Site, "err", err)
	}
}

// logsBudget is the largest answer this PoP sends: the NATS max payload
// less room for the message's headers and subject, or Options.MaxLogsReply
// when that is smaller.
func (mg *Manager) logsBudget() int {
	b := int(mg.opts.Conn.MaxPayload()) - 1024
	if b <= 0 { // not connected yet: the server default
		b = 1<<20 - 1024
	}
	if mg.opts.MaxLogsReply > 0 && mg.opts.MaxLogsReply < b {
		b = mg.opts.MaxLogsReply
	}
	return b
}

// encodeLogsReply encodes rep in at most budget bytes, leaving out the
// oldest lines (rep.Lines is newest first) and counting them in Truncated.
func encodeLogsReply(rep *logsReply, budget int) ([]byte, error) {
	data, err := json.Marshal(rep)
	if err != nil || len(data) <= budget {
		return data, err
	}
	// Keep the newest lines that fit: measure each once, then encode once
	// more (the count in Truncated adds a few bytes; 32 covers it).
	all := rep.Lines
	rep.Lines = nil
	rep.Truncated = len(all)
	base, err := json.Marshal(rep)
	if err != nil {
		return nil, err
	}
	size, keep := len(base)+32, 0
	for _, l := range all {
		b, err := json.Marshal(l)
		if err != nil {
			return nil, err
		}
		if size+len(b)+1 > budget {
			break
		}
		size += len(b) + 1
		keep++
	}
	rep.Lines, rep.Truncated = all[:keep], len(all)-keep
	return json.Marshal(rep)
}

// localLogs returns this PoP's newest lines of site (of plugin, when not
// ""), at most limit, newest first.
func (mg *Manager) localLogs(site, plugin string, limit int) []LogLine {
	all := mg.opts.Host.Logs(site) // oldest first
	out := []LogLine{}
	for i := len(all) - 1; i >= 0 && len(out) < limit; i-- {
		l := all[i]
		p, n, ok := parseSlot(l.Plugin)
		if !ok {
			continue // upload validation scratch slots
		}
		if plugin != "" && p != plugin {
			continue
		}
		out = append(out, LogLine{Time: l.Time, PoP: mg.opts.PoPID, Plugin: p, Version: n, Level: levelName(l.Level), Msg: l.Msg})
	}
	return out
}

// logs answers GET /admin/plugins/{site}/logs: the lines of every PoP,
// or with pop=local only this PoP's, or with pop=ID only that PoP's.
func (mg *Manager) logs(w http.ResponseWriter, r *http.Request, site string, _ principal) {
	q := r.URL.Query()
	only := q.Get("plugin")
	if only != "" {
		if err := checkPlugin(only); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
	}
	limit := 100
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("limit=%q: want a positive number of lines", s))
			return
		}
		limit = n
	}
	pop := q.Get("pop")
	if pop != "" && pop != "local" && !popPattern.MatchString(pop) {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("pop=%q: want a PoP id from the config, or \"local\" for the PoP answering", pop))
		return
	}
	if pop != "" && pop != "local" && pop != mg.opts.PoPID && mg.opts.PoPs != nil {
		// A PoP no configuration names: say so now, rather than wait for
		// an answer that cannot come and call the PoP silent.
		known := append(mg.opts.PoPs(), mg.peers.known(time.Now())...)
		if !slices.Contains(known, pop) {
			slices.Sort(known)
			writeError(w, http.StatusNotFound, fmt.Sprintf("pop=%q: no such PoP; the PoPs are %s", pop, strings.Join(slices.Compact(known), ", ")))
			return
		}
	}
	if pop == "local" || pop == mg.opts.PoPID {
		lines := mg.localLogs(site, only, limit)
		writeJSON(w, http.StatusOK, LogsAnswer{Site: site, PoP: mg.opts.PoPID, Lines: lines, Answered: []string{mg.opts.PoPID}})
		return
	}
	writeJSON(w, http.StatusOK, mg.GatherLogs(r.Context(), site, only, pop, limit))
}

// GatherLogs asks every PoP (only pop, when not "") for site's newest plugin
// log lines (of plugin, when not ""), waiting until every PoP it knows of
// answered or Options.LogsWait passed, and merges them newest first, at
// most limit. A PoP that does not answer is named in NotAnswered, not an
// error; with NATS down the answer holds this PoP's own lines only.
func (mg *Manager) GatherLogs(ctx context.Context, site, plugin, pop string, limit int) LogsAnswer {
	ans := LogsAnswer{Site: site, PoP: mg.opts.PoPID, Lines: []LogLine{}}
	var lines []LogLine
	if pop == "" {
		lines = mg.localLogs(site, plugin, limit)
	}
	g := mg.gather(ctx, logsQuery{V: logsWire, Site: site, Plugin: plugin, Limit: limit, PoP: pop, From: mg.opts.PoPID}, "their lines are missing")
	ans.Answered, ans.NotAnswered, ans.Notes = g.answered, g.notAnswered, g.notes
	for _, rep := range g.replies {
		for _, l := range rep.Lines {
			l.PoP = rep.PoP // an answer speaks for its own PoP only
			lines = append(lines, l)
		}
		if rep.Truncated > 0 {
			if ans.Truncated == nil {
				ans.Truncated = map[string]int{}
			}
			ans.Truncated[rep.PoP] = rep.Truncated
		}
	}
	truncated := make([]string, 0, len(ans.Truncated))
	for p := range ans.Truncated {
		truncated = append(truncated, p)
	}
	slices.Sort(truncated)
	for _, p := range truncated {
		ans.Notes = append(ans.Notes, fmt.Sprintf("PoP %s left out its %d oldest lines to fit one NATS message: lower the limit, or ask that PoP alone (pop=local on its admin API, --pop local in the CLI)",
			p, ans.Truncated[p]))
	}
	// Newest first; equal times in PoP order so the answer is stable.
	slices.SortStableFunc(lines, func(a, b LogLine) int {
		if c := b.Time.Compare(a.Time); c != 0 {
			return c
		}
		return strings.Compare(a.PoP, b.PoP)
	})
	if len(lines) > limit {
		lines = lines[:limit]
	}
	if lines != nil {
		ans.Lines = lines
	}
	return ans
}

// gathered is what the PoPs answered to one query.
type gathered struct {
	// replies are the answers without an error, one per PoP.
	replies []logsReply
	// answered and notAnswered are sorted PoP ids; answered includes this
	// PoP when the query was not for one other PoP only.
	answered, notAnswered []string
	// notes say in words who did not answer and why.
	notes []string
}

// gather publishes q to every PoP (only q.PoP, when set) and collects the
// answers until every PoP it knows of answered or Options.LogsWait passed.
// missing says, for a note, what a silent PoP's absence costs the answer.
func (mg *Manager) gather(ctx context.Context, q logsQuery, missing string) gathered {
	var g gathered
	if q.PoP == "" {
		g.answered = []string{mg.opts.PoPID}
	}
	expect := map[string]bool{}
	switch {
	case q.PoP != "":
		expect[q.PoP] = true
	default:
		known := mg.peers.known(time.Now())
		if mg.opts.PoPs != nil {
			known = append(known, mg.opts.PoPs()...)
		}
		for _, p := range known {
			if p != mg.opts.PoPID {
				expect[p] = true
			}
		}
	}
	knewPeers := len(expect) > 0
	replies, err := mg.askLogs(ctx, q, expect)
	for _, rep := range replies {
		delete(expect, rep.PoP)
		if rep.Error != "" {
			g.notes = append(g.notes, fmt.Sprintf("PoP %s could not answer: %s", rep.PoP, rep.Error))
			g.notAnswered = append(g.notAnswered, rep.PoP)
			continue
		}
		g.answered = append(g.answered, rep.PoP)
		g.replies = append(g.replies, rep)
	}
	silent := make([]string, 0, len(expect))
	for p := range expect {
		silent = append(silent, p)
	}
	slices.Sort(silent)
	g.notAnswered = append(g.notAnswered, silent...)
	slices.Sort(g.answered)
	slices.Sort(g.notAnswered)
	if g.answered == nil {
		g.answered = []string{}
	}
	wait := mg.opts.LogsWait.String()
	switch {
	case err != nil:
		g.notes = append(g.notes, "asking the other PoPs failed ("+err.Error()+"): only this PoP's view is shown")
	case q.PoP == "" && !knewPeers:
		g.notes = append(g.notes, fmt.Sprintf("this PoP knew no other PoPs yet: it took the answers that came within %s", wait))
	}
	if len(silent) > 0 {
		g.notes = append(g.notes, fmt.Sprintf("PoPs that did not answer within %s (down, or cut off from NATS; %s): %s",
			wait, missing, strings.Join(silent, ", ")))
	}
	return g
}

// askLogs publishes q and collects answers until every PoP in expect
// answered, or LogsWait passed when expect is empty or some stay silent.
func (mg *Manager) askLogs(ctx context.Context, q logsQuery, expect map[string]bool) ([]logsReply, error) {
	nc := mg.opts.Conn
	if !nc.IsConnected() {
		return nil, fmt.Errorf("this PoP's NATS connection is %s", nc.Status())
	}
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil, fmt.Errorf("subscribe to a reply inbox: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	data, err := json.Marshal(q)
	if err != nil {
		return nil, err
	}
	if err := nc.PublishRequest(LogsSubject(q.Site), inbox, data); err != nil {
		return nil, fmt.Errorf("publish the log query: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, mg.opts.LogsWait)
	defer cancel()
	waiting := len(expect)
	var out []logsReply
	got := map[string]bool{}
	for {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			return out, nil // LogsWait passed or the request was cancelled: what came is the answer
		}
		var rep logsReply
		if json.Unmarshal(m.Data, &rep) != nil || rep.V != logsWire || !popPattern.MatchString(rep.PoP) || got[rep.PoP] || rep.PoP == mg.opts.PoPID {
			mg.log.Debug("ignoring a malformed or duplicate log answer", "bytes", len(m.Data))
			continue
		}
		got[rep.PoP] = true
		mg.peers.heard(rep.PoP, time.Now())
		out = append(out, rep)
		if expect[rep.PoP] {
			waiting--
			if waiting == 0 {
				return out, nil
			}
		}
	}
}
