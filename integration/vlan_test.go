//go:build vmtest

package integration

import (
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/ifisp/ifisp/internal/lab"
)

// TestVLANWAN is the two-ISP scenario with ISP B's WAN a VLAN named like the
// seed site's (eth2.4), created by ifupdown itself: the same routing state,
// the same traffic, the same failover, nothing spoofed. It needs 8021q, so
// it runs in the VM tier (make test-vm), not on the host.
func TestVLANWAN(t *testing.T) {
	l := lab.NewVLAN(t)
	l.Install(bin)
	l.Interfaces(strings.ReplaceAll(lab.TwoISPs, "wanb", lab.VLANWAN))
	adminState(l)
	l.MustIfup("wana", lab.VLANWAN)
	assertState(t, "after ifup", routingState(l), strings.ReplaceAll(stateUp, "dev wanb", "dev "+lab.VLANWAN))

	for _, src := range []string{l.A.Router, l.B.Router} {
		if got := l.Ping(l.Router, lab.Internet, 3, "-I", src); got != 3 {
			t.Errorf("router from %s: %d of 3 answered", src, got)
		}
	}
	settled(t, l, "both up", "ispb")
	l.MustIfdown(lab.VLANWAN)
	settled(t, l, lab.VLANWAN+" down", "ispa")
	l.MustIfup(lab.VLANWAN)
	settled(t, l, lab.VLANWAN+" up again", "ispb")

	l.MustIfdown("wana", lab.VLANWAN)
	assertState(t, "after ifdown", routingState(l), stateDown)
	if out, err := l.Exec(l.Router, "ip", "link", "show", lab.VLANWAN); err == nil {
		t.Errorf("ifdown left the VLAN:\n%s", out)
	}
}

// TestImpairedUplink checks the lossy-upstream harness the health monitor's
// tests will use: netem on ISP B's uplink delays and drops what leaves
// through ISP B, and nothing through ISP A.
func TestImpairedUplink(t *testing.T) {
	l := newRouteLab(t)
	l.MustIfup("wana", "wanb")
	l.Impair(&l.B, "delay", "100ms")
	out := l.Must(l.Router, "ping", "-n", "-c", "3", "-I", l.B.Router, lab.Internet)
	if rtt := minRTT(t, out); rtt < 100 {
		t.Errorf("through the delayed ISP B: min rtt %.1f ms, want >= 100", rtt)
	}
	out = l.Must(l.Router, "ping", "-n", "-c", "3", "-I", l.A.Router, lab.Internet)
	if rtt := minRTT(t, out); rtt >= 100 {
		t.Errorf("through ISP A: min rtt %.1f ms, want < 100", rtt)
	}
	// A dead upstream with carrier up: everything past ISP B is lost.
	l.Impair(&l.B, "loss", "100%")
	if got := l.Ping(l.Router, lab.Internet, 10, "-I", l.B.Router); got != 0 {
		t.Errorf("through ISP B at 100%% loss: %d of 10 answered", got)
	}
	if got := l.Ping(l.Router, lab.Internet, 10, "-I", l.A.Router); got != 10 {
		t.Errorf("through ISP A: %d of 10 answered", got)
	}
	l.Impair(&l.B)
	if got := l.Ping(l.Router, lab.Internet, 10, "-I", l.B.Router); got != 10 {
		t.Errorf("through ISP B, healed: %d of 10 answered", got)
	}
}

var rttLine = regexp.MustCompile(`= ([\d.]+)/`)

// minRTT reads the minimum round trip from ping's summary.
func minRTT(t *testing.T, out string) float64 {
	t.Helper()
	m := rttLine.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no rtt summary in:\n%s", out)
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}
