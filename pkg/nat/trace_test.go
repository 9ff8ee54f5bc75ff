package nat

// Packet traces through the rules Up renders (the tracer is in
// tracer_test.go): for the site of docs/design.md's picture, what becomes of the
// packets its contract is about. The snat-from ranges are NATed to the
// address of the link they leave by; the egress guard drops what would
// leave a WAN with a source that is not that WAN's; a connection that
// arrived by a link gets the link's mark, and its replies carry it to
// routing, whose `fwmark` rule sends them back by that link.

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ifisp/ifisp/pkg/policy"
	"github.com/ifisp/ifisp/pkg/stanza"
)

// rendered brings links up, one after the other, on a fake whose tables
// hold the administrator's rules (newFake's, and admin's: each "TABLE CHAIN
// RULE", appended), and loads into a tracer exactly what that took: the
// tables as iptables-save printed them before, then each payload Up fed to
// iptables-restore. The tables read back from the fake afterwards must be
// the same, or the tracer read a payload otherwise than the fake applied
// it.
func rendered(t *testing.T, v6 bool, admin []string, links ...*Link) *tracer {
	t.Helper()
	f := newFake()
	for _, a := range admin {
		w := strings.SplitN(a, " ", 3)
		f.tables[w[0]].chains[w[1]] = append(f.tables[w[0]].chains[w[1]], w[2])
	}
	tr := newTracer(v6)
	tr.mustLoad(t, f.state())
	for _, l := range links {
		if err := Up(f, l); err != nil {
			t.Fatal(err)
		}
		tr.addrs[l.Config.Iface] = l.Address
	}
	if len(f.restores) != len(links) {
		t.Fatalf("%d links up took %d iptables-restores", len(links), len(f.restores))
	}
	for _, p := range f.restores {
		tr.mustLoad(t, p)
	}
	back := newTracer(v6)
	back.mustLoad(t, f.state())
	if diff := cmp.Diff(back.String(), tr.String()); diff != "" {
		t.Fatalf("the tables the tracer built from the payloads differ from the fake's (-fake +tracer):\n%s", diff)
	}
	return tr
}

// wan is a link as an ISP stanza makes it: link's, in table, with the
// family's default isp-throw.
func wan(v6 bool, iface, addr string, table int, snat ...string) *Link {
	l := link(iface, addr, snat...)
	c := l.Config
	c.Table, c.Metric = table, -1
	c.Throw = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("172.16.0.0/12"), netip.MustParsePrefix("192.168.0.0/16")}
	if v6 {
		c.Family = stanza.Inet6
		c.Throw = []netip.Prefix{netip.MustParsePrefix("fc00::/7")}
	}
	return l
}

// route says where the links' policy rules (policy.Link.Plan, as
// ifisp-route installs them) send a packet with src, dst and mark: the
// kernel walks them in priority order, and the first that matches picks
// its link's table, unless the table throws dst back (isp-throw), when the
// walk goes on. "main" when none picks one; "local" for a packet to the
// router.
func route(links []*Link, p packet, mark uint32) string {
	if p.out == "" {
		return "local"
	}
	type owned struct {
		prio int
		from netip.Prefix // invalid: an fwmark rule
		mark uint32
		mask uint32
		link *Link
	}
	var rules []owned
	for _, l := range links {
		for _, r := range (&policy.Link{Config: l.Config, Address: l.Address}).Plan().Rules {
			rules = append(rules, owned{prio: r.Priority, from: r.From, mark: r.Mark, mask: r.Mask, link: l})
		}
	}
	slices.SortStableFunc(rules, func(a, b owned) int { return a.prio - b.prio })
	for _, r := range rules {
		matches := r.from.Contains(p.src)
		if !r.from.IsValid() {
			matches = mark&r.mask == r.mark
		}
		throws := slices.ContainsFunc(r.link.Config.Throw, func(t netip.Prefix) bool { return t.Contains(p.dst) })
		if matches && !throws {
			return r.link.Config.Iface
		}
	}
	return "main"
}

// outcome is what a trace case checks: the tracer's verdict, NAT and
// marks, and where routing takes the packet. A dropped packet's NAT and
// marks are left out: its connection is gone or stays as it was.
type outcome struct {
	verdict      string
	snat         netip.Addr
	mark, ctmark uint32
	route        string
}

func (o outcome) String() string {
	snat := "none"
	if o.snat.IsValid() {
		snat = o.snat.String()
	}
	return fmt.Sprintf("%s, snat %s, mark %#x, ctmark %#x, route %s", o.verdict, snat, o.mark, o.ctmark, o.route)
}

type traceCase struct {
	name string
	pkt  packet
	want outcome
}

// runTraces traces each case through tr and checks its outcome.
func runTraces(t *testing.T, tr *tracer, links []*Link, cases []traceCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := tr.trace(t, c.pkt)
			got := outcome{verdict: r.verdict, snat: r.snat, mark: r.mark, ctmark: r.ctmark, route: route(links, c.pkt, r.routeMark)}
			if got.verdict == "DROP" {
				got.snat, got.mark, got.ctmark = netip.Addr{}, 0, 0
			}
			if got != c.want {
				t.Errorf("packet %+v\n got: %v\nwant: %v\nrules that matched:\n\t%s", c.pkt, got, c.want, strings.Join(r.log, "\n\t"))
			}
		})
	}
}

// Two IPv4 links, as in docs/design.md's picture: wanb (preferred) takes
// inbound connections (isp-inbound) and keeps its flows (isp-sticky); the
// administrator MASQUERADEs whatever else leaves a WAN, after ifisp's
// SNAT. newFake's administrator rules are there too: an ACCEPT of
// everything from lan0 in FORWARD, and a connmark of their own (0x5 under
// 0xff) on lan0's connections, which ifisp's marks must leave alone.
func TestTraceTwoLinks(t *testing.T) {
	wana := wan(false, "wana", "198.51.100.2", 201, "10.1.0.0/24")
	wanb := wan(false, "wanb", "203.0.113.2", 200, "10.1.0.0/24")
	wanb.Config.Inbound, wanb.Config.Sticky = true, true
	links := []*Link{wana, wanb}
	tr := rendered(t, false, []string{"nat POSTROUTING -o wan+ -j MASQUERADE"}, links...)

	a, b := wana.Address, wanb.Address
	host, remote := ip("10.1.0.5"), ip("192.0.2.9")
	runTraces(t, tr, links, []traceCase{{
		name: "LAN to wana: SNAT to wana's address, outbound mark",
		pkt:  packet{in: "lan0", out: "wana", src: host, dst: remote, state: "NEW"},
		want: outcome{verdict: "ACCEPT", snat: a, ctmark: 0x01000005, route: "main"},
	}, {
		name: "LAN to wanb: SNAT to wanb's address, outbound mark",
		pkt:  packet{in: "lan0", out: "wanb", src: host, dst: remote, state: "NEW"},
		want: outcome{verdict: "ACCEPT", snat: b, ctmark: 0x02000005, route: "main"},
	}, {
		// wana is not sticky: the mark is restored, but no rule of
		// wana's routes by it.
		name: "LAN flow NATed to wana, by wana",
		pkt:  packet{in: "lan0", out: "wana", src: host, dst: remote, state: "ESTABLISHED", nat: a, ctmark: 0x01000005},
		want: outcome{verdict: "ACCEPT", snat: a, mark: 0x01000000, ctmark: 0x01000005, route: "main"},
	}, {
		name: "isp-sticky: LAN flow NATed to wanb stays on wanb, the packet's other mark bits kept",
		pkt:  packet{in: "lan0", out: "wanb", src: host, dst: remote, state: "ESTABLISHED", nat: b, mark: 0x77, ctmark: 0x02000005},
		want: outcome{verdict: "ACCEPT", snat: b, mark: 0x02000077, ctmark: 0x02000005, route: "wanb"},
	}, {
		// Marks are set on a connection's first packet only.
		name: "LAN flow NATed to wana before ifisp's rules were there: it gets no mark",
		pkt:  packet{in: "lan0", out: "wana", src: host, dst: remote, state: "ESTABLISHED", nat: a},
		want: outcome{verdict: "ACCEPT", snat: a, ctmark: 0x5, route: "main"},
	}, {
		name: "LAN flow NATed to wana that routing moved to wanb: the guard drops it",
		pkt:  packet{in: "lan0", out: "wanb", src: host, dst: remote, state: "ESTABLISHED", nat: a, ctmark: 0x01000005},
		want: outcome{verdict: "DROP", route: "main"},
	}, {
		name: "a retransmitted first packet NATed to wana, moved to wanb: dropped",
		pkt:  packet{in: "lan0", out: "wanb", src: host, dst: remote, state: "NEW", seen: true, nat: a, ctmark: 0x01000005},
		want: outcome{verdict: "DROP", route: "main"},
	}, {
		name: "the router from wana's address by wana: not NATed",
		pkt:  packet{out: "wana", src: a, dst: remote, state: "NEW"},
		want: outcome{verdict: "ACCEPT", ctmark: 0x01000000, route: "wana"},
	}, {
		// Routing would not send it there; the guard is for when
		// something does.
		name: "the router from wana's address by wanb: dropped by the guard",
		pkt:  packet{out: "wanb", src: a, dst: remote, state: "NEW"},
		want: outcome{verdict: "DROP", route: "wana"},
	}, {
		// A port forward: the administrator's DNAT, which comes after
		// mangle PREROUTING and which no rule of ifisp's looks at, is
		// not traced.
		name: "inbound NEW on wanb to the LAN: the connection gets wanb's inbound mark, the packet none",
		pkt:  packet{in: "wanb", out: "lan0", src: remote, dst: b, state: "NEW", mark: 0x42000000},
		want: outcome{verdict: "ACCEPT", ctmark: 0x82000000, route: "main"},
	}, {
		name: "its reply from the LAN: the mark is restored, routing picks wanb, the source is wanb's",
		pkt:  packet{in: "lan0", out: "wanb", src: host, dst: remote, state: "ESTABLISHED", reply: true, nat: b, ctmark: 0x82000000},
		want: outcome{verdict: "ACCEPT", snat: b, mark: 0x82000000, ctmark: 0x82000005, route: "wanb"},
	}, {
		name: "the same reply, were it routed by wana: dropped",
		pkt:  packet{in: "lan0", out: "wana", src: host, dst: remote, state: "ESTABLISHED", reply: true, nat: b, ctmark: 0x82000000},
		want: outcome{verdict: "DROP", route: "wanb"},
	}, {
		name: "the internet's later packets of that connection: no mark",
		pkt:  packet{in: "wanb", out: "lan0", src: remote, dst: b, state: "ESTABLISHED", ctmark: 0x82000000},
		want: outcome{verdict: "ACCEPT", ctmark: 0x82000000, route: "main"},
	}, {
		name: "a reply from the internet to a LAN flow: no mark",
		pkt:  packet{in: "wana", out: "lan0", src: remote, dst: a, state: "ESTABLISHED", reply: true, ctmark: 0x01000005},
		want: outcome{verdict: "ACCEPT", ctmark: 0x01000005, route: "main"},
	}, {
		name: "an ICMP error from the internet about a LAN flow: no mark",
		pkt:  packet{in: "wanb", out: "lan0", src: ip("198.18.0.1"), dst: b, state: "RELATED", reply: true, ctmark: 0x02000005},
		want: outcome{verdict: "ACCEPT", ctmark: 0x02000005, route: "main"},
	}, {
		name: "inbound NEW on wana to the router: wana's inbound mark",
		pkt:  packet{in: "wana", src: remote, dst: a, state: "NEW"},
		want: outcome{verdict: "ACCEPT", ctmark: 0x81000000, route: "local"},
	}, {
		name: "the router's reply by wana",
		pkt:  packet{out: "wana", src: a, dst: remote, state: "ESTABLISHED", reply: true, ctmark: 0x81000000},
		want: outcome{verdict: "ACCEPT", ctmark: 0x81000000, route: "wana"},
	}, {
		name: "LAN to LAN: untouched, but for the administrator's own mark",
		pkt:  packet{in: "lan0", out: "lan1", src: host, dst: ip("10.2.0.7"), state: "NEW"},
		want: outcome{verdict: "ACCEPT", ctmark: 0x5, route: "main"},
	}, {
		name: "the router to the LAN: untouched",
		pkt:  packet{out: "lan0", src: ip("10.1.0.1"), dst: host, state: "NEW"},
		want: outcome{verdict: "ACCEPT", route: "main"},
	}, {
		// The guard knows only snat-from: the administrator's
		// MASQUERADE of other ranges never sees a first packet.
		name: "LAN source outside snat-from by wana: dropped, though the administrator would MASQUERADE it",
		pkt:  packet{in: "lan0", out: "wana", src: ip("10.9.0.5"), dst: remote, state: "NEW"},
		want: outcome{verdict: "DROP", route: "main"},
	}})
}

// One IPv4 link NATing to another of its addresses (snat-to), with an
// isp-source block of public addresses inside.
func TestTraceOneLink(t *testing.T) {
	wana := wan(false, "wana", "198.51.100.2", 201, "10.1.0.0/24")
	wana.Config.SNATTo = ip("198.51.100.3")
	wana.Config.Sources = []netip.Prefix{netip.MustParsePrefix("198.51.100.128/28")}
	links := []*Link{wana}
	tr := rendered(t, false, nil, links...)

	host, remote := ip("10.1.0.5"), ip("192.0.2.9")
	runTraces(t, tr, links, []traceCase{{
		name: "LAN to wana: SNAT to snat-to",
		pkt:  packet{in: "lan0", out: "wana", src: host, dst: remote, state: "NEW"},
		want: outcome{verdict: "ACCEPT", snat: ip("198.51.100.3"), ctmark: 0x01000005, route: "main"},
	}, {
		name: "a flow NATed to snat-to",
		pkt:  packet{in: "lan0", out: "wana", src: host, dst: remote, state: "ESTABLISHED", nat: ip("198.51.100.3"), ctmark: 0x01000005},
		want: outcome{verdict: "ACCEPT", snat: ip("198.51.100.3"), mark: 0x01000000, ctmark: 0x01000005, route: "main"},
	}, {
		name: "a flow NATed to the link's own address",
		pkt:  packet{in: "lan0", out: "wana", src: host, dst: remote, state: "ESTABLISHED", nat: wana.Address, ctmark: 0x01000005},
		want: outcome{verdict: "ACCEPT", snat: wana.Address, mark: 0x01000000, ctmark: 0x01000005, route: "main"},
	}, {
		name: "a flow NATed to an address that is not the link's: dropped",
		pkt:  packet{in: "lan0", out: "wana", src: host, dst: remote, state: "ESTABLISHED", nat: ip("203.0.113.2"), ctmark: 0x02000005},
		want: outcome{verdict: "DROP", route: "main"},
	}, {
		name: "a LAN host with an isp-source address: not NATed, routed by wana",
		pkt:  packet{in: "lan0", out: "wana", src: ip("198.51.100.130"), dst: remote, state: "NEW"},
		want: outcome{verdict: "ACCEPT", ctmark: 0x01000005, route: "wana"},
	}, {
		name: "a LAN source outside snat-from: dropped",
		pkt:  packet{in: "lan0", out: "wana", src: ip("10.9.0.5"), dst: remote, state: "NEW"},
		want: outcome{verdict: "DROP", route: "main"},
	}, {
		name: "inbound NEW on wana: the connection gets wana's inbound mark",
		pkt:  packet{in: "wana", out: "lan0", src: remote, dst: ip("198.51.100.130"), state: "NEW"},
		want: outcome{verdict: "ACCEPT", ctmark: 0x81000000, route: "main"},
	}, {
		name: "LAN to LAN: untouched",
		pkt:  packet{in: "lan0", out: "lan1", src: host, dst: ip("10.2.0.7"), state: "NEW"},
		want: outcome{verdict: "ACCEPT", ctmark: 0x5, route: "main"},
	}})
}

// The two links' inet6 stanzas: each has a prefix of its own (isp-source)
// for the LAN; wana maps a ULA range onto one /64 of it (NPTv6, NETMAP);
// wanb takes inbound connections. Each throws the other's prefix back to
// the main table, as the README says traffic between two ISPs' LAN
// prefixes needs (else the `from` rule sends it to the ISP).
func TestTraceIPv6(t *testing.T) {
	prefixA, prefixB := netip.MustParsePrefix("2001:db8:a100::/56"), netip.MustParsePrefix("2001:db8:b100::/56")
	wana := wan(true, "wana", "2001:db8:a::2", 201, "fd00:1::/64")
	wana.Config.SNATPrefix = netip.MustParsePrefix("2001:db8:a100:ff::/64")
	wana.Config.Sources = []netip.Prefix{prefixA}
	wana.Config.Throw = append(wana.Config.Throw, prefixB)
	wanb := wan(true, "wanb", "2001:db8:b::2", 200)
	wanb.Config.Sources = []netip.Prefix{prefixB}
	wanb.Config.Throw = append(wanb.Config.Throw, prefixA)
	wanb.Config.Inbound = true
	links := []*Link{wana, wanb}
	tr := rendered(t, true, nil, links...)

	ula, mapped, remote := ip("fd00:1::5"), ip("2001:db8:a100:ff::5"), ip("2001:db8:ffff::9")
	hostA, hostB := ip("2001:db8:a100:1::5"), ip("2001:db8:b100:1::5")
	runTraces(t, tr, links, []traceCase{{
		name: "ULA host to wana: NPTv6 onto wana's prefix, host bits kept",
		pkt:  packet{in: "lan0", out: "wana", src: ula, dst: remote, state: "NEW"},
		want: outcome{verdict: "ACCEPT", snat: mapped, ctmark: 0x01000005, route: "main"},
	}, {
		name: "a ULA flow mapped to wana's prefix, by wana",
		pkt:  packet{in: "lan0", out: "wana", src: ula, dst: remote, state: "ESTABLISHED", nat: mapped, ctmark: 0x01000005},
		want: outcome{verdict: "ACCEPT", snat: mapped, mark: 0x01000000, ctmark: 0x01000005, route: "main"},
	}, {
		name: "the same flow moved to wanb: dropped",
		pkt:  packet{in: "lan0", out: "wanb", src: ula, dst: remote, state: "ESTABLISHED", nat: mapped, ctmark: 0x01000005},
		want: outcome{verdict: "DROP", route: "main"},
	}, {
		name: "ULA host to wanb, which maps nothing: dropped",
		pkt:  packet{in: "lan0", out: "wanb", src: ula, dst: remote, state: "NEW"},
		want: outcome{verdict: "DROP", route: "main"},
	}, {
		name: "a host of wana's prefix by wana: not NATed",
		pkt:  packet{in: "lan0", out: "wana", src: hostA, dst: remote, state: "NEW"},
		want: outcome{verdict: "ACCEPT", ctmark: 0x01000005, route: "wana"},
	}, {
		name: "a host of wana's prefix by wanb: dropped",
		pkt:  packet{in: "lan0", out: "wanb", src: hostA, dst: remote, state: "NEW"},
		want: outcome{verdict: "DROP", route: "wana"},
	}, {
		name: "the router's wanb address by wana: dropped",
		pkt:  packet{out: "wana", src: wanb.Address, dst: remote, state: "NEW"},
		want: outcome{verdict: "DROP", route: "wanb"},
	}, {
		name: "a router solicitation from the link-local address by wanb",
		pkt:  packet{out: "wanb", src: ip("fe80::1"), dst: ip("ff02::2"), state: "UNTRACKED"},
		want: outcome{verdict: "ACCEPT", route: "main"},
	}, {
		name: "duplicate address detection from :: by wana",
		pkt:  packet{out: "wana", src: ip("::"), dst: ip("ff02::1:ff00:2"), state: "UNTRACKED"},
		want: outcome{verdict: "ACCEPT", route: "main"},
	}, {
		name: "a neighbour solicitation from another link's address by wana: dropped",
		pkt:  packet{out: "wana", src: wanb.Address, dst: ip("ff02::1:ff00:1"), state: "UNTRACKED"},
		want: outcome{verdict: "DROP", route: "wanb"},
	}, {
		name: "inbound NEW on wanb to a LAN host: wanb's inbound mark",
		pkt:  packet{in: "wanb", out: "lan0", src: remote, dst: hostB, state: "NEW"},
		want: outcome{verdict: "ACCEPT", ctmark: 0x82000000, route: "main"},
	}, {
		name: "its reply: the mark is restored, routing picks wanb",
		pkt:  packet{in: "lan0", out: "wanb", src: hostB, dst: remote, state: "ESTABLISHED", reply: true, ctmark: 0x82000000},
		want: outcome{verdict: "ACCEPT", mark: 0x82000000, ctmark: 0x82000005, route: "wanb"},
	}, {
		name: "LAN to LAN: untouched",
		pkt:  packet{in: "lan0", out: "lan1", src: hostA, dst: hostB, state: "NEW"},
		want: outcome{verdict: "ACCEPT", ctmark: 0x5, route: "main"},
	}})
}
