//go:build vmtest

package integration

import (
	"strings"
	"testing"

	"github.com/ifisp/ifisp/pkg/lab"
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
