// Package status gathers what `ifisp status` shows of each ISP link that
// is up: the registry's record of it (package registry: what ifup left),
// ifisp-watch's verdict (watch.json), and what the kernel has now (the
// interface, its addresses, ifisp's rules and routes, the main-table
// defaults, the SNAT and egress guard counters, the conntrack entries of
// the link). It only reads.
//
// The JSON form (Status) is stable: fields are added, never renamed,
// retyped or removed. Addresses and prefixes are strings as net/netip
// writes them ("" when absent), times RFC 3339.
package status

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ti-mo/conntrack"
	"github.com/ti-mo/netfilter"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ifisp/ifisp/pkg/converge"
	"github.com/ifisp/ifisp/pkg/lan"
	"github.com/ifisp/ifisp/pkg/policy"
	"github.com/ifisp/ifisp/pkg/reconcile"
	"github.com/ifisp/ifisp/pkg/registry"
	"github.com/ifisp/ifisp/pkg/rundir"
	"github.com/ifisp/ifisp/pkg/stanza"
	"github.com/ifisp/ifisp/pkg/watch"
)

// Status is `ifisp status --json`.
type Status struct {
	// RunDir is the run directory the registry and ifisp-watch's state
	// were read from (/run/ifisp; in a named network namespace NS,
	// /run/ifisp/netns/NS).
	RunDir string `json:"run_dir"`
	// Monitor is ifisp-watch as its state file shows it; null when there
	// is none (the monitor is not running, or was stopped cleanly).
	Monitor *Monitor `json:"monitor"`
	// Links are the links in the registry (every ISP stanza whose ifup
	// went through), sorted by interface, then family. Empty, never null.
	Links []Link `json:"links"`
	// Waiting are the stanzas that are up as far as ifupdown knows but
	// whose link is not: a lost DHCP lease, a PPP stanza between
	// sessions, an inet6 dhcp stanza before its router advertisement.
	// Empty, never null.
	Waiting []Waiting `json:"waiting"`
}

// Waiting is a stanza whose link waits for its lease, session or default.
type Waiting struct {
	Iface  string        `json:"iface"`
	Family stanza.Family `json:"family"`
	// For is what brings the link up: "a DHCP lease", "a PPP session",
	// "a router advertisement".
	For string `json:"for"`
}

// waitingFor says what a Lost record waits for, from its stanza.
func waitingFor(r registry.Link) string {
	switch {
	case r.StanzaValue("METHOD") == "ppp":
		return "a PPP session (pppd's ip-up)"
	case r.Family == stanza.Inet6 && r.StanzaValue("METHOD") == "dhcp":
		return "a router advertisement (its default)"
	case r.StanzaValue("IF_6RD_LOCAL") != "":
		return "an IPv4 lease on " + r.StanzaValue("IF_6RD_LOCAL")
	}
	return "a DHCP lease"
}

// Monitor is the health monitor, ifisp-watch.
type Monitor struct {
	// PID is its process id, from its state file.
	PID int `json:"pid"`
	// Running says a process of that id exists now: a monitor that was
	// killed leaves its state file behind.
	Running bool `json:"running"`
	// Written is when the monitor last wrote its state file: the probe
	// figures of each link's Health are as of then (it rewrites them every
	// few seconds, and at every transition).
	Written time.Time `json:"written"`
}

// Link is one ISP link, one family of one interface.
type Link struct {
	// Iface is the interface.
	Iface string `json:"iface"`
	// Family is "inet" or "inet6".
	Family stanza.Family `json:"family"`
	// Table is the number of the ISP's routing table (isp-table).
	Table int `json:"table"`
	// TableName is the table's name in rt_tables, "" when it has none.
	TableName string `json:"table_name"`
	// Address is the link's address as ifup recorded it: the source of
	// its `from` rule, the probes and SNAT.
	Address netip.Addr `json:"address"`
	// Gateway is the ISP table's gateway as ifup recorded it.
	Gateway netip.Addr `json:"gateway"`
	// Registered is when ifup recorded the link (the end of if-up.d).
	Registered time.Time `json:"registered"`

	// Present says the interface exists.
	Present bool `json:"present"`
	// Carrier says the interface has carrier (IFF_LOWER_UP).
	Carrier bool `json:"carrier"`
	// OperState is the kernel's operational state of the interface:
	// "up", "down", "lowerlayerdown", "dormant", "unknown", ...
	OperState string `json:"oper_state"`
	// Addresses are the interface's addresses of the family, with their
	// prefix lengths, link-local ones included. Empty, never null.
	Addresses []netip.Prefix `json:"addresses"`

	// Rules are ifisp's `from` rules into the table of this family, by
	// priority. Empty, never null.
	Rules []Rule `json:"rules"`
	// TableDefault is ifisp's default route in the ISP table through the
	// interface; null when it is missing.
	TableDefault *Route `json:"table_default"`
	// MainDefaults are the main table's default routes of the family
	// through the interface now, ifisp's and ifupdown's. Empty, never
	// null.
	MainDefaults []Route `json:"main_defaults"`
	// RecordedDefaults are the main-table defaults the link had when ifup
	// recorded it: what ifisp-watch withdraws when the link dies and puts
	// back when it heals. Empty, never null.
	RecordedDefaults []Route `json:"recorded_defaults"`

	// Health is ifisp-watch's view of the link; null when no monitor has
	// judged this registration of it (none runs, or it has not caught up
	// with the latest ifup yet).
	Health *Health `json:"health"`

	// SNAT are the link's SNAT rules (snat-from; NPTv6 on IPv6) with their
	// counters. Empty, never null.
	SNAT []SNAT `json:"snat"`
	// LAN is the /64 of this ISP's prefix that its isp-lan interface
	// has and ifisp-watch announces there (deprecated while the link is
	// withdrawn and another on that LAN is up); null without isp-lan.
	LAN *lan.Subnet `json:"lan"`
	// GuardDropped is what the link's egress guard dropped (packets that
	// would have left with a source not the link's); null when the guard
	// chain is missing.
	GuardDropped *Counter `json:"guard_dropped"`
	// Flows counts the conntrack entries of the link's family that left
	// by it, InboundFlows those that arrived by it: the kernel counts them
	// by their connection mark. Null when not counted (--no-flows).
	Flows        *int `json:"flows"`
	InboundFlows *int `json:"inbound_flows"`

	// Differences are the pieces of the link's plan (its rules, ISP-table
	// routes, LAN address and iptables rules, as the registry records
	// them) that the kernel lacks, and the pieces of ifisp's the kernel
	// has in the link's table and chains that no plan has: what `ifisp
	// sync`, or ifisp-watch, would put right. Empty, never null.
	Differences []converge.Piece `json:"differences"`

	// Problems say what else is not as ifup left it, one sentence each.
	// Empty, never null.
	Problems []string `json:"problems"`
}

// Converged says that no link has a difference between its plan and the
// kernel: `ifisp status` exits 0 then, 3 otherwise.
func (s *Status) Converged() bool {
	for _, l := range s.Links {
		if len(l.Differences) > 0 {
			return false
		}
	}
	return true
}

// Rule is one of ifisp's `from` rules.
type Rule struct {
	Priority int `json:"priority"`
	// From is a `from` rule's prefix; "" for an `fwmark` rule.
	From netip.Prefix `json:"from"`
	// Fwmark is an `fwmark` rule's mark and mask, as `ip rule` writes
	// them ("0xe4000000/0xff000000"); "" for a `from` rule.
	Fwmark string `json:"fwmark"`
}

// Route is a default route.
type Route struct {
	// Gateway is "" for a route without one (`default dev ppp0`).
	Gateway netip.Addr `json:"gateway"`
	// Metric is as the kernel stores it (an IPv6 0 is 1024).
	Metric int `json:"metric"`
	// Protocol is the route's protocol: 71 for ifisp's, 3 (boot) for
	// the one ifupdown adds for `gateway`.
	Protocol int `json:"protocol"`
}

// Health is ifisp-watch's verdict on a link.
type Health struct {
	// State is "up" (answering) or "down".
	State string `json:"state"`
	// Withdrawn says the monitor has withdrawn the link's main-table
	// defaults (a down link is not withdrawn when every other link of its
	// family is down too).
	Withdrawn bool `json:"withdrawn"`
	// Reason is why the link is in its state, in the monitor's words.
	Reason string `json:"reason"`
	// Since is when it entered its state.
	Since time.Time `json:"since"`
	// RTT is the round trip of the last answer to a probe, in seconds; 0
	// before any (and from an ifisp-watch older than these fields).
	RTT float64 `json:"rtt_seconds"`
	// Loss is the share of the last 100 probe rounds that no target
	// answered.
	Loss float64 `json:"loss"`
	// LastAnswer is when a probe round was last answered; zero before any.
	LastAnswer time.Time `json:"last_answer"`
	// Transitions counts the link's changes of state since the monitor
	// began watching this registration of it.
	Transitions uint64 `json:"transitions"`
	// Rounds are the probe rounds since then, Answered those answered.
	Rounds   uint64 `json:"rounds"`
	Answered uint64 `json:"answered"`
}

// SNAT is one SNAT rule of the link and its counters.
type SNAT struct {
	// From is the inside range (snat-from).
	From netip.Prefix `json:"from"`
	// To is the address it is NATed to; "" for NPTv6.
	To netip.Addr `json:"to"`
	// ToPrefix is the prefix NPTv6 maps it to (an inet6 stanza's
	// snat-to); "" for SNAT.
	ToPrefix netip.Prefix `json:"to_prefix"`
	Counter
}

// Counter is an iptables rule's counters: the first packet of each flow
// (NAT rules see no other).
type Counter struct {
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

// Options tunes Gather.
type Options struct {
	// Flows counts each link's conntrack entries: two dumps the kernel
	// filters by mark per link.
	Flows bool
	// Root is the filesystem root of the rt_tables files.
	Root string
	// Backends are the iptables backends the plans are compared with
	// (converge.Exec when nil).
	Backends converge.Backends
}

// Gather reads the registry, ifisp-watch's state and the kernel of the
// current network namespace through h.
func Gather(h *netlink.Handle, opt Options) (*Status, error) {
	if opt.Root == "" {
		opt.Root = "/"
	}
	regs, err := registry.List()
	if err != nil {
		return nil, fmt.Errorf("reading the registry: %w", err)
	}
	ws, err := watch.ReadStatus()
	if err != nil {
		return nil, fmt.Errorf("reading ifisp-watch's state: %w", err)
	}
	s := &Status{RunDir: rundir.Dir(), Links: []Link{}, Waiting: []Waiting{}}
	all, err := registry.All()
	if err != nil {
		return nil, fmt.Errorf("reading the registry: %w", err)
	}
	for _, r := range all {
		if r.Lost && len(r.Stanza) > 0 {
			s.Waiting = append(s.Waiting, Waiting{Iface: r.Iface, Family: r.Family, For: waitingFor(r)})
		}
	}
	if ws != nil {
		s.Monitor = &Monitor{PID: ws.PID, Running: alive(ws.PID), Written: ws.Written}
	}
	saves := map[stanza.Family]string{}
	var ct *conntrack.Conn
	if opt.Flows {
		if ct, err = reconcile.Dial(); err != nil {
			return nil, err
		}
		defer ct.Close()
	}
	for _, reg := range regs {
		l := newLink(reg, opt.Root)
		l.kernel(h)
		l.health(ws, s.Monitor)
		if _, ok := saves[reg.Family]; !ok {
			saves[reg.Family], err = iptablesSave(reg.Family)
			if err != nil {
				l.problem("reading the counters: %v", err)
			}
		}
		l.counters(saves[reg.Family])
		if opt.Flows {
			if l.Flows, err = count(ct, reg.Family, reg.Mark.Out(), reg.Mark.Mask); err == nil {
				l.InboundFlows, err = count(ct, reg.Family, reg.Mark.In(), reg.Mark.Mask)
			}
			if err != nil {
				return nil, err
			}
		}
		s.Links = append(s.Links, *l)
	}
	if opt.Backends == nil {
		opt.Backends = converge.Exec
	}
	diff, err := converge.Diff(h, opt.Backends, regs)
	if err != nil {
		return nil, fmt.Errorf("comparing the links' plans with the kernel: %w", err)
	}
	for i := range s.Links {
		for _, p := range diff {
			if p.Link == s.Links[i].Iface+" "+string(s.Links[i].Family) {
				s.Links[i].Differences = append(s.Links[i].Differences, p)
			}
		}
	}
	return s, nil
}

// newLink is the registry's part of a link.
func newLink(reg registry.Link, root string) *Link {
	l := &Link{Iface: reg.Iface, Family: reg.Family, Table: reg.Table, TableName: stanza.TableName(root, reg.Table),
		Address: reg.Address, Gateway: reg.Gateway, Registered: reg.Since, LAN: reg.LAN,
		Addresses: []netip.Prefix{}, Rules: []Rule{}, MainDefaults: []Route{}, RecordedDefaults: []Route{},
		SNAT: []SNAT{}, Differences: []converge.Piece{}, Problems: []string{}}
	for _, d := range reg.Defaults {
		l.RecordedDefaults = append(l.RecordedDefaults, Route{Gateway: d.Gateway, Metric: d.Metric, Protocol: d.Protocol})
	}
	return l
}

func (l *Link) problem(format string, args ...any) {
	l.Problems = append(l.Problems, fmt.Sprintf(format, args...))
}

// kernel fills in what the kernel has of the link now.
func (l *Link) kernel(h *netlink.Handle) {
	fam := policy.NetlinkFamily(l.Family)
	nl, err := h.LinkByName(l.Iface)
	if err != nil {
		l.problem("the interface is gone (ifdown --force %s, then ifup, to start over)", l.Iface)
		return
	}
	a := nl.Attrs()
	l.Present = true
	l.Carrier = a.RawFlags&unix.IFF_LOWER_UP != 0
	l.OperState = a.OperState.String()
	if !l.Carrier {
		l.problem("no carrier")
	}
	addrs, err := policy.Retry(func() ([]netlink.Addr, error) { return h.AddrList(nl, fam) })
	if err != nil {
		l.problem("listing addresses: %v", err)
	}
	hasAddress := false
	for _, ad := range addrs {
		if p, ok := prefixOf(ad.IPNet); ok {
			l.Addresses = append(l.Addresses, p)
			hasAddress = hasAddress || p.Addr() == l.Address
		}
	}
	if !hasAddress {
		l.problem("the recorded address %s is not on the interface (ifup %s again after an address change)", l.Address, l.Iface)
	}

	rules, err := policy.Retry(func() ([]netlink.Rule, error) {
		return h.RuleListFiltered(fam, &netlink.Rule{Table: l.Table}, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		l.problem("listing rules: %v", err)
	}
	hasRule := false
	for _, r := range rules {
		if r.Protocol != policy.Protocol {
			continue
		}
		rule := Rule{Priority: r.Priority}
		if p, ok := prefixOf(r.Src); ok {
			rule.From = p
			hasRule = hasRule || p == netip.PrefixFrom(l.Address, l.Address.BitLen())
		} else {
			rule.Fwmark = policy.Fwmark(&r)
		}
		l.Rules = append(l.Rules, rule)
	}

	routes, err := policy.Retry(func() ([]netlink.Route, error) {
		return h.RouteListFiltered(fam, &netlink.Route{Table: l.Table, Protocol: policy.Protocol}, netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
	})
	if err != nil {
		l.problem("listing table %d: %v", l.Table, err)
	}
	for _, r := range routes {
		if r.LinkIndex == a.Index && isDefault(r.Dst) {
			l.TableDefault = &Route{Gateway: addrOf(r.Gw), Metric: r.Priority, Protocol: int(r.Protocol)}
			break
		}
	}

	defaults, err := policy.MainDefaults(h, a.Index, l.Family)
	if err != nil {
		l.problem("%v", err)
	}
	for _, d := range defaults {
		l.MainDefaults = append(l.MainDefaults, Route{Gateway: d.Gateway, Metric: d.Metric, Protocol: d.Protocol})
	}
}

// health fills in ifisp-watch's view, and says what is missing from the
// main table that the monitor did not withdraw.
func (l *Link) health(ws *watch.Status, m *Monitor) {
	if v := ws.Link(l.Iface, l.Family); v != nil && v.Up.Equal(l.Registered) {
		p := v.Probes
		l.Health = &Health{State: string(v.State), Withdrawn: v.Withdrawn, Reason: v.Reason, Since: v.Since,
			RTT: p.RTT, Loss: p.Loss, LastAnswer: p.LastAnswer, Transitions: p.Transitions, Rounds: p.Rounds, Answered: p.Answered}
	}
	if l.Health != nil && l.Health.Withdrawn {
		return
	}
	for _, r := range l.RecordedDefaults {
		found := false
		for _, o := range l.MainDefaults {
			found = found || (o.Gateway == r.Gateway && o.Metric == r.Metric)
		}
		if !found && l.Present {
			l.problem("the main-table %s is gone and ifisp-watch did not withdraw it (ifup %s again puts it back)", r, l.Iface)
		}
	}
	if m != nil && m.Running && l.Health == nil {
		l.problem("ifisp-watch (pid %d) has not taken up this registration yet", m.PID)
	}
}

// String reads like `ip route`.
func (r Route) String() string {
	s := "default"
	if r.Gateway.IsValid() {
		s += " via " + r.Gateway.String()
	}
	return fmt.Sprintf("%s metric %d proto %s", s, r.Metric, protoName(r.Protocol))
}

// protoName names the route protocols a WAN's defaults have, as iproute2
// does.
func protoName(p int) string {
	switch p {
	case 2:
		return "kernel"
	case 3:
		return "boot"
	case 4:
		return "static"
	case 16:
		return "dhcp"
	case policy.Protocol:
		return "ifisp"
	}
	return strconv.Itoa(p)
}

// iptablesSave runs iptables-save (ip6tables-save) with counters.
func iptablesSave(f stanza.Family) (string, error) {
	cmd := "iptables-save"
	if f == stanza.Inet6 {
		cmd = "ip6tables-save"
	}
	var out, stderr bytes.Buffer
	c := exec.Command(cmd, "-c")
	c.Stdout, c.Stderr = &out, &stderr
	if err := c.Run(); err != nil {
		return "", fmt.Errorf("%s -c: %v %s", cmd, err, strings.TrimSpace(stderr.String()))
	}
	return out.String(), nil
}

// saveRule matches a rule line of iptables-save -c: counters, chain, rule.
var saveRule = regexp.MustCompile(`^\[(\d+):(\d+)\] -A (\S+) (.*)$`)

var (
	sourceOpt  = regexp.MustCompile(`(?:^| )-s (\S+)`)
	toSourceOp = regexp.MustCompile(`--to-source (\S+)`)
	netmapTo   = regexp.MustCompile(`-j NETMAP --to (\S+)`)
)

// counters reads the link's SNAT and guard counters from iptables-save
// -c output.
func (l *Link) counters(save string) {
	snat, guard := "IFISP-SNAT-"+l.Iface, "IFISP-GUARD-"+l.Iface
	table := ""
	s := bufio.NewScanner(strings.NewReader(save))
	for s.Scan() {
		line := s.Text()
		if strings.HasPrefix(line, "*") {
			table = line[1:]
			continue
		}
		m := saveRule.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		packets, _ := strconv.ParseUint(m[1], 10, 64)
		bytes, _ := strconv.ParseUint(m[2], 10, 64)
		c := Counter{Packets: packets, Bytes: bytes}
		switch chain, rule := m[3], m[4]; {
		case table == "nat" && chain == snat && strings.Contains(rule, "-j SNAT"):
			from, _ := netip.ParsePrefix(firstSubmatch(sourceOpt, rule))
			to, _ := netip.ParseAddr(firstSubmatch(toSourceOp, rule))
			l.SNAT = append(l.SNAT, SNAT{From: from, To: to, Counter: c})
		case table == "nat" && chain == snat && strings.Contains(rule, "-j NETMAP"):
			from, _ := netip.ParsePrefix(firstSubmatch(sourceOpt, rule))
			to, _ := netip.ParsePrefix(firstSubmatch(netmapTo, rule))
			l.SNAT = append(l.SNAT, SNAT{From: from, ToPrefix: to, Counter: c})
		case table == "filter" && chain == guard && strings.HasSuffix(rule, "-j DROP"):
			l.GuardDropped = &c
		}
	}
}

func firstSubmatch(re *regexp.Regexp, s string) string {
	if m := re.FindStringSubmatch(s); m != nil {
		return m[1]
	}
	return ""
}

// count counts the conntrack entries of family f whose mark is mark under
// mask.
func count(ct *conntrack.Conn, f stanza.Family, mark, mask uint32) (*int, error) {
	proto := netfilter.ProtoIPv4
	if f == stanza.Inet6 {
		proto = netfilter.ProtoIPv6
	}
	flows, err := reconcile.Dump(ct, conntrack.NewFilter().Family(proto).Mark(mark).MarkMask(mask))
	if err != nil {
		return nil, err
	}
	n := len(flows)
	return &n, nil
}

// alive reports whether a process pid exists.
func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

func isDefault(n *net.IPNet) bool {
	if n == nil {
		return true
	}
	ones, _ := n.Mask.Size()
	return ones == 0
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), true
}

func addrOf(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap()
}
