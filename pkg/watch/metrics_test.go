package watch

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ifisp/ifisp/pkg/registry"
)

func TestLoss(t *testing.T) {
	var p probeStats
	if p.loss() != 0 {
		t.Errorf("no rounds: loss %v", p.loss())
	}
	now := time.Unix(0, 0)
	for i := range 4 {
		p.round(i != 0, 0, now) // the first of four lost
	}
	if p.loss() != 0.25 {
		t.Errorf("1 of 4 lost: loss %v", p.loss())
	}
	for range lossWindow {
		p.round(true, time.Millisecond, now)
	}
	if p.loss() != 0 || p.rounds != lossWindow+4 || p.answered != lossWindow+3 || p.rtt != time.Millisecond {
		t.Errorf("then %d answered: %+v, loss %v", lossWindow, p, p.loss())
	}
}

// TestRenderMetrics pins the metrics file: what dashboards are built on.
func TestRenderMetrics(t *testing.T) {
	at := func(s int64) time.Time { return time.Unix(s, 0) }
	up := &link{reg: registry.Link{Iface: "wana", Family: "inet", Since: at(1000)}, health: health{state: Up}, since: at(1000)}
	up.probes.round(true, 1500*time.Microsecond, at(1001))
	up.probes.round(false, 0, at(1002))
	down := &link{reg: registry.Link{Iface: "wanb", Family: "inet6", Since: at(2000)}, health: health{state: Down}, withdrawn: true, since: at(2005)}
	down.probes.transitions = 1
	down.repairs = 3
	down.probes.round(false, 0, at(2006))
	got := renderMetrics([]string{"wana inet", "wanb inet6"}, map[string]*link{"wana inet": up, "wanb inet6": down})
	want := `# HELP ifisp_link_up 1 when ifisp-watch judges the link up (its probes are answered), 0 when down.
# TYPE ifisp_link_up gauge
ifisp_link_up{iface="wana",family="inet"} 1
ifisp_link_up{iface="wanb",family="inet6"} 0
# HELP ifisp_link_withdrawn 1 when ifisp-watch has withdrawn the link's main-table defaults.
# TYPE ifisp_link_withdrawn gauge
ifisp_link_withdrawn{iface="wana",family="inet"} 0
ifisp_link_withdrawn{iface="wanb",family="inet6"} 1
# HELP ifisp_link_state_change_timestamp_seconds When the link entered its state (Unix time).
# TYPE ifisp_link_state_change_timestamp_seconds gauge
ifisp_link_state_change_timestamp_seconds{iface="wana",family="inet"} 1000
ifisp_link_state_change_timestamp_seconds{iface="wanb",family="inet6"} 2005
# HELP ifisp_link_registered_timestamp_seconds When ifup registered the link (Unix time).
# TYPE ifisp_link_registered_timestamp_seconds gauge
ifisp_link_registered_timestamp_seconds{iface="wana",family="inet"} 1000
ifisp_link_registered_timestamp_seconds{iface="wanb",family="inet6"} 2000
# HELP ifisp_link_transitions_total Changes of state since ifisp-watch began watching this registration of the link.
# TYPE ifisp_link_transitions_total counter
ifisp_link_transitions_total{iface="wana",family="inet"} 0
ifisp_link_transitions_total{iface="wanb",family="inet6"} 1
# HELP ifisp_link_repairs_total Pieces of the link's plan (rules, routes, addresses, iptables rules) that ifisp-watch put back after something deleted them.
# TYPE ifisp_link_repairs_total counter
ifisp_link_repairs_total{iface="wana",family="inet"} 0
ifisp_link_repairs_total{iface="wanb",family="inet6"} 3
# HELP ifisp_link_probe_rounds_total Probe rounds since ifisp-watch began watching this registration of the link.
# TYPE ifisp_link_probe_rounds_total counter
ifisp_link_probe_rounds_total{iface="wana",family="inet"} 2
ifisp_link_probe_rounds_total{iface="wanb",family="inet6"} 1
# HELP ifisp_link_probe_rounds_answered_total Probe rounds that some target answered.
# TYPE ifisp_link_probe_rounds_answered_total counter
ifisp_link_probe_rounds_answered_total{iface="wana",family="inet"} 1
ifisp_link_probe_rounds_answered_total{iface="wanb",family="inet6"} 0
# HELP ifisp_link_probe_loss_ratio Share of the last 100 probe rounds that no target answered.
# TYPE ifisp_link_probe_loss_ratio gauge
ifisp_link_probe_loss_ratio{iface="wana",family="inet"} 0.5
ifisp_link_probe_loss_ratio{iface="wanb",family="inet6"} 1
# HELP ifisp_link_probe_rtt_seconds Round trip of the last answer to a probe.
# TYPE ifisp_link_probe_rtt_seconds gauge
ifisp_link_probe_rtt_seconds{iface="wana",family="inet"} 0.0015
# HELP ifisp_link_last_answer_timestamp_seconds When a probe round was last answered (Unix time).
# TYPE ifisp_link_last_answer_timestamp_seconds gauge
ifisp_link_last_answer_timestamp_seconds{iface="wana",family="inet"} 1001
`
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
	if got := label("a\"b\\c\nd"); got != `"a\"b\\c\nd"` {
		t.Errorf("label: %s", got)
	}
}
