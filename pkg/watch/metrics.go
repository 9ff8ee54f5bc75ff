package watch

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/ifisp/ifisp/pkg/rundir"
)

// lossWindow is how many of the last probe rounds the loss ratio is
// taken over: 10 s at the default interval.
const lossWindow = 100

// probeStats counts one link's probe rounds, since the monitor began
// watching this registration of it.
type probeStats struct {
	rounds, answered uint64
	transitions      uint64
	rtt              time.Duration // of the last answer
	lastAnswer       time.Time
	recent           [lossWindow]bool // answered, by round number modulo lossWindow
}

// round records one probe round.
func (p *probeStats) round(ok bool, rtt time.Duration, now time.Time) {
	p.recent[p.rounds%lossWindow] = ok
	p.rounds++
	if ok {
		p.answered++
		p.lastAnswer = now
	}
	if rtt > 0 {
		p.rtt = rtt
	}
}

// loss is the share of the last lossWindow rounds (all of them, while
// there are fewer) that nothing answered; 0 before the first round.
func (p *probeStats) loss() float64 {
	n := min(p.rounds, lossWindow)
	if n == 0 {
		return 0
	}
	lost := 0
	for i := uint64(0); i < n; i++ {
		if !p.recent[i] {
			lost++
		}
	}
	return float64(lost) / float64(n)
}

// ProbeStats is what the state file says of a link's probes.
type ProbeStats struct {
	// Rounds are the probe rounds since the monitor began watching this
	// registration of the link; Answered, those some target answered.
	Rounds   uint64 `json:"rounds"`
	Answered uint64 `json:"answered"`
	// Loss is the share of the last 100 rounds (all, while fewer) that
	// nothing answered.
	Loss float64 `json:"loss"`
	// RTT is the round trip of the last answer, in seconds; 0 before any.
	RTT float64 `json:"rtt_seconds"`
	// LastAnswer is when the last answered round ended; zero before any.
	LastAnswer time.Time `json:"last_answer"`
	// Transitions counts the link's changes of state.
	Transitions uint64 `json:"transitions"`
}

func (p *probeStats) public() ProbeStats {
	return ProbeStats{Rounds: p.rounds, Answered: p.answered, Loss: p.loss(), RTT: p.rtt.Seconds(),
		LastAnswer: p.lastAnswer, Transitions: p.transitions}
}

// metric is one metric family of the metrics file.
type metric struct {
	name, typ, help string
	value           func(l *link) (float64, bool) // false: no sample for l
}

// metrics are the families of the metrics file, one sample per link each,
// labelled iface and family.
var metrics = []metric{
	{"ifisp_link_up", "gauge", "1 when ifisp-watch judges the link up (its probes are answered), 0 when down.",
		func(l *link) (float64, bool) { return boolValue(l.health.state == Up), true }},
	{"ifisp_link_withdrawn", "gauge", "1 when ifisp-watch has withdrawn the link's main-table defaults.",
		func(l *link) (float64, bool) { return boolValue(l.withdrawn), true }},
	{"ifisp_link_state_change_timestamp_seconds", "gauge", "When the link entered its state (Unix time).",
		func(l *link) (float64, bool) { return unixSeconds(l.since), true }},
	{"ifisp_link_registered_timestamp_seconds", "gauge", "When ifup registered the link (Unix time).",
		func(l *link) (float64, bool) { return unixSeconds(l.reg.Since), true }},
	{"ifisp_link_transitions_total", "counter", "Changes of state since ifisp-watch began watching this registration of the link.",
		func(l *link) (float64, bool) { return float64(l.probes.transitions), true }},
	{"ifisp_link_repairs_total", "counter", "Pieces of the link's plan (rules, routes, addresses, iptables rules) that ifisp-watch put back after something deleted them.",
		func(l *link) (float64, bool) { return float64(l.repairs), true }},
	{"ifisp_link_probe_rounds_total", "counter", "Probe rounds since ifisp-watch began watching this registration of the link.",
		func(l *link) (float64, bool) { return float64(l.probes.rounds), true }},
	{"ifisp_link_probe_rounds_answered_total", "counter", "Probe rounds that some target answered.",
		func(l *link) (float64, bool) { return float64(l.probes.answered), true }},
	{"ifisp_link_probe_loss_ratio", "gauge", "Share of the last 100 probe rounds that no target answered.",
		func(l *link) (float64, bool) { return l.probes.loss(), true }},
	{"ifisp_link_probe_rtt_seconds", "gauge", "Round trip of the last answer to a probe.",
		func(l *link) (float64, bool) { return l.probes.rtt.Seconds(), l.probes.rtt > 0 }},
	{"ifisp_link_last_answer_timestamp_seconds", "gauge", "When a probe round was last answered (Unix time).",
		func(l *link) (float64, bool) { return unixSeconds(l.probes.lastAnswer), !l.probes.lastAnswer.IsZero() }},
}

// renderMetrics writes the links (in keys' order) in the Prometheus text
// exposition format.
func renderMetrics(keys []string, links map[string]*link) string {
	var b strings.Builder
	for _, m := range metrics {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n", m.name, m.help, m.name, m.typ)
		for _, k := range keys {
			l := links[k]
			if v, ok := m.value(l); ok {
				fmt.Fprintf(&b, "%s{iface=%s,family=%s} %s\n", m.name, label(l.reg.Iface), label(string(l.reg.Family)), strconv.FormatFloat(v, 'g', -1, 64))
			}
		}
	}
	return b.String()
}

// writeMetrics rewrites the metrics file, if there is one.
func (d *daemon) writeMetrics() error {
	if d.opt.Metrics == "" {
		return nil
	}
	if err := rundir.WriteFile(d.opt.Metrics, []byte(renderMetrics(d.keys(), d.links))); err != nil {
		return fmt.Errorf("writing the metrics: %w", err)
	}
	return nil
}

// removeMetrics removes the metrics file: a stopped monitor has nothing
// to say, and a stale file would claim it does.
func (d *daemon) removeMetrics() error {
	if d.opt.Metrics == "" {
		return nil
	}
	if err := os.Remove(d.opt.Metrics); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// label quotes a label value as the text format wants.
func label(v string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(v) + `"`
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func unixSeconds(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }
