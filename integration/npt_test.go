package integration

import (
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ifisp/ifisp/internal/lab"
)

// nptISPs is the lab's interfaces file with NPTv6 on both links: the LAN's
// ULA prefix is mapped to a /64 of each ISP's.
var nptISPs = strings.NewReplacer(
	"\tisp-metric 2\n", "\tisp-metric 2\n\tsnat-from "+lab.LANNet6+"\n\tsnat-to 2001:db8:a:100::/64\n",
	"\tmetric 1\n\tisp-table ispb\n", "\tmetric 1\n\tisp-table ispb\n\tsnat-from "+lab.LANNet6+"\n\tsnat-to 2001:db8:b:100::/64\n",
).Replace(lab.TwoISPs)

// TestNPTv6: a ULA LAN host reaches the internet over IPv6 through
// whichever link is preferred, mapped to that ISP's prefix, and fails over
// and back as IPv4 NAT does (its flows NATed to the link that went are
// deleted by mark), with nothing spoofed.
func TestNPTv6(t *testing.T) {
	if !strings.Contains(nptISPs, "2001:db8:a:100::/64") || !strings.Contains(nptISPs, "2001:db8:b:100::/64") {
		t.Fatal("nptISPs did not take: lab.TwoISPs changed")
	}
	l := lab.New(t)
	l.Install(bin)
	l.Interfaces(nptISPs)
	// Each ISP routes the mapped prefix to its customer.
	for _, isp := range l.ISPs() {
		l.Must(isp.NS, "ip", "-6", "route", "add", strings.Replace(isp.Router6, "::2", ":100::/64", 1), "via", isp.Router6)
	}
	l.EchoServersAt(l.Inet, lab.Internet6)
	l.MustIfup("wana", "wanb")
	start := func() *flows {
		f := &flows{}
		for _, proto := range []string{"udp", "tcp"} {
			f.names = append(f.names, proto)
			f.flows = append(f.flows, l.StartFlowFrom(l.LAN, proto, net.JoinHostPort(lab.Internet6, strconv.Itoa(lab.FlowPort)), time.Minute))
		}
		f.working(t)
		return f
	}
	mapped := func(want string) {
		t.Helper()
		out := l.Must(l.Router, "sh", "-c", "conntrack -L -f ipv6 -p udp --orig-port-dst "+strconv.Itoa(lab.FlowPort)+" 2>/dev/null")
		if !strings.Contains(out, "dst="+want) {
			t.Errorf("the LAN's UDP flow is not mapped to %s:\n%s", want, out)
		}
	}
	f := start()
	mapped("2001:db8:b:100::10")
	began := time.Now()
	l.MustIfdown("wanb")
	f.recovered(t, began, time.Now(), true)
	f = start()
	mapped("2001:db8:a:100::10")
	began = time.Now()
	l.MustIfup("wanb")
	f.recovered(t, began, time.Now(), true)
	mapped("2001:db8:b:100::10")
	noSpoofing(t, l)
}
