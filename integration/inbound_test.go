package integration

import (
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ifisp/ifisp/internal/lab"
	"github.com/ifisp/ifisp/pkg/watch"
)

// forwardPort is the port each WAN address forwards to the LAN host's echo
// servers.
const forwardPort = 8000

// newInboundLab is the lab with the administrator's port forwards, IPv4
// and IPv6, from forwardPort of each WAN address to the LAN host, and
// echo servers on the LAN host; stanzas is the interfaces file.
func newInboundLab(t *testing.T, stanzas string) *lab.Lab {
	l := lab.New(t)
	l.Install(bin)
	l.Interfaces(stanzas)
	for _, isp := range l.ISPs() {
		for _, fw := range []struct{ cmd, addr, to string }{
			{"iptables", isp.Router, lab.LANHost + ":" + strconv.Itoa(lab.FlowPort)},
			{"ip6tables", isp.Router6, "[" + lab.LANHost6 + "]:" + strconv.Itoa(lab.FlowPort)},
		} {
			for _, proto := range []string{"tcp", "udp"} {
				l.Must(l.Router, fw.cmd, "-t", "nat", "-A", "PREROUTING", "-d", fw.addr, "-p", proto, "--dport", strconv.Itoa(forwardPort), "-j", "DNAT", "--to-destination", fw.to)
			}
		}
	}
	l.EchoServersAt(l.LAN, "::")
	return l
}

// inbound starts, from the internet host, a UDP and a TCP flow to each
// address's port forward, IPv4 and IPv6, and waits until they work.
func inbound(t *testing.T, l *lab.Lab, isp *lab.ISP) *flows {
	t.Helper()
	f := &flows{}
	for _, addr := range []string{isp.Router, isp.Router6} {
		for _, proto := range []string{"udp", "tcp"} {
			f.names = append(f.names, proto+" to "+addr)
			f.flows = append(f.flows, l.StartFlowFrom(l.Inet, proto, net.JoinHostPort(addr, strconv.Itoa(forwardPort)), time.Minute))
		}
	}
	f.working(t)
	return f
}

// TestInbound: connections that arrive by a link are answered by it while
// the other link is preferred, and across a failover of the other link,
// which never breaks them: the reconcile deletes outbound flows only. Once
// with ISP B preferred (the lab's way), forwards on A; once with A
// preferred (wanb's gateway route at metric 2), forwards on B.
func TestInbound(t *testing.T) {
	for _, tc := range []struct {
		name         string
		stanzas      string
		backup, pref string
	}{
		{"on the backup A", lab.TwoISPs, "wana", "wanb"},
		{"on the backup B", strings.Replace(lab.TwoISPs, "\tgateway 203.0.113.1\n", "\tgateway 203.0.113.1\n\tmetric 2\n", 1), "wanb", "wana"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newInboundLab(t, tc.stanzas)
			l.MustIfup("wana", "wanb")
			backup := &l.A
			if tc.backup == "wanb" {
				backup = &l.B
			}
			if got := carrier(t, l); got == backup.Name {
				t.Fatalf("LAN traffic leaves by %s, the link meant as the backup", got)
			}
			f := inbound(t, l, backup)
			began := time.Now()
			l.MustIfdown(tc.pref)
			f.recovered(t, began, time.Now(), false)
			f = inbound(t, l, backup)
			began = time.Now()
			l.MustIfup(tc.pref)
			f.recovered(t, began, time.Now(), false)
			noSpoofing(t, l)
		})
	}
}

// TestInboundOff: without the fwmark rule (isp-inbound no) a port forward
// on the backup is answered by the preferred link, where the egress guard
// drops every reply. This is what TestInbound's flows would see without
// ifisp's marks.
func TestInboundOff(t *testing.T) {
	l := newInboundLab(t, strings.Replace(lab.TwoISPs, "\tisp-metric 1\n", "\tisp-metric 1\n\tisp-inbound no\n", 1))
	l.MustIfup("wana", "wanb")
	if out := l.Must(l.Router, "ip", "-4", "rule"); strings.Contains(out, "lookup ispa proto ifisp\n") && strings.Contains(out, "fwmark 0xe4000000") {
		t.Fatalf("isp-inbound no, yet wana's fwmark rule is there:\n%s", out)
	}
	flow := l.StartFlowFrom(l.Inet, "udp", net.JoinHostPort(l.A.Router, strconv.Itoa(forwardPort)), 2*time.Second)
	r := flow.Wait()
	if r.Received != 0 {
		t.Errorf("without wana's inbound rule %d of %d requests to its port forward were answered, want none (left by wanb, dropped by its guard)", r.Received, r.Sent)
	}
	noSpoofing(t, l)
}

// TestInboundWatch: ifisp-watch withdrawing the preferred link and
// restoring it does the reconcile ifdown and ifup do, and it never breaks
// the backup's inbound connections either.
func TestInboundWatch(t *testing.T) {
	l := newInboundLab(t, lab.Checked(lab.TwoISPs))
	l.MustIfup("wana", "wanb")
	w := l.StartWatch(bin)
	f := inbound(t, l, &l.A)
	began := time.Now()
	l.Upstream(&l.B, 4, 1)
	w.WaitFor("wanb", "inet", watch.Down, true, 5*time.Second)
	f.recovered(t, began, time.Now(), false)

	f = inbound(t, l, &l.A)
	began = time.Now()
	l.Upstream(&l.B, 4, 0)
	w.WaitFor("wanb", "inet", watch.Up, false, 10*time.Second)
	f.recovered(t, began, time.Now(), false)
	noSpoofing(t, l)
	if err := w.Stop(); err != nil {
		t.Error(err)
	}
}
