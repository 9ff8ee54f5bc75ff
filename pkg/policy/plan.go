package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ifisp/ifisp/pkg/stanza"
)

// Rule is one ip rule of a link's plan, as data: what the registry records
// and `ifisp status` compares with the kernel. Every rule ifisp makes looks
// up an ISP table and carries Protocol.
type Rule struct {
	Family   stanza.Family `json:"family"`
	Priority int           `json:"priority"`
	From     netip.Prefix  `json:"from,omitzero"` // a `from` rule
	Mark     uint32        `json:"fwmark,omitempty"`
	Mask     uint32        `json:"fwmask,omitempty"` // an `fwmark` rule
	Table    int           `json:"table"`
}

// Route is one route of a link's plan: a unicast route through Dev, or a
// throw route (Throw, no Dev).
type Route struct {
	Family stanza.Family `json:"family"`
	Table  int           `json:"table"`
	Dst    netip.Prefix  `json:"dst"`
	Via    netip.Addr    `json:"via,omitzero"`
	Dev    string        `json:"dev,omitempty"`
	Throw  bool          `json:"throw,omitempty"`
}

// Plan is a link's source routing as data: its rules and its ISP table's
// routes. The isp-metric default in the main table is not part of it: the
// health monitor takes that away and puts it back (registry.Link.Defaults).
type Plan struct {
	Rules  []Rule  `json:"rules"`
	Routes []Route `json:"routes"`
}

// String writes r as `ip rule add` takes it.
func (r Rule) String() string {
	return fmt.Sprintf("%s lookup %d pref %d", r.selector(), r.Table, r.Priority)
}

func (r Rule) selector() string {
	if !r.From.IsValid() {
		return fmt.Sprintf("fwmark %#x/%#x", r.Mark, r.Mask)
	}
	if r.From.IsSingleIP() {
		return "from " + r.From.Addr().String()
	}
	return "from " + r.From.String()
}

// String writes r as `ip route add` takes it.
func (r Route) String() string {
	s := "default"
	if r.Dst.Bits() != 0 {
		s = r.Dst.String()
	}
	if r.Throw {
		s = "throw " + s
	}
	if r.Via.IsValid() {
		s += " via " + via(r.Via)
	}
	if r.Dev != "" {
		s += " dev " + r.Dev
	}
	return s + fmt.Sprintf(" table %d", r.Table)
}

// via writes a gateway as ip prints it: a 6rd relay's ::<IPv4> with the
// IPv4 address dotted.
func via(a netip.Addr) string {
	b := a.As16()
	if a.Is6() && [12]byte(b[:12]) == [12]byte{} && b[12] != 0 {
		return "::" + netip.AddrFrom4([4]byte(b[12:])).String()
	}
	return a.String()
}

func (r Rule) netlink() *netlink.Rule {
	n := netlink.NewRule()
	n.Family = NetlinkFamily(r.Family)
	n.Table = r.Table
	n.Priority = r.Priority
	n.Protocol = Protocol
	if r.From.IsValid() {
		n.Src = ipNet(r.From)
	} else {
		mask := r.Mask
		n.Mark, n.Mask = r.Mark, &mask
	}
	return n
}

func (r Route) netlink(index int) *netlink.Route {
	n := &netlink.Route{Family: NetlinkFamily(r.Family), Dst: ipNet(r.Dst), Table: r.Table, Protocol: Protocol, Type: unix.RTN_UNICAST}
	if r.Throw {
		n.Type = unix.RTN_THROW
		return n
	}
	n.Gw, n.LinkIndex = r.Via.AsSlice(), index
	return n
}

// ruleOf and routeOf read a kernel rule or route of ifisp's as plan data.
func ruleOf(f stanza.Family, n *netlink.Rule) Rule {
	r := Rule{Family: f, Priority: n.Priority, Table: n.Table, From: prefixOf(n.Src)}
	if r.From.IsValid() && r.From.Bits() == 0 {
		r.From = netip.Prefix{}
	}
	if !r.From.IsValid() {
		r.Mark, r.Mask = n.Mark, maskOf(n.Mask)
	}
	return r
}

func routeOf(h *netlink.Handle, f stanza.Family, n *netlink.Route) Route {
	r := Route{Family: f, Table: n.Table, Dst: prefixOf(n.Dst), Throw: n.Type == unix.RTN_THROW}
	if !r.Dst.IsValid() {
		r.Dst = defaultPrefix(f)
	}
	r.Via, _ = fromIP(n.Gw)
	if !r.Throw && n.LinkIndex != 0 {
		if nl, err := h.LinkByIndex(n.LinkIndex); err == nil {
			r.Dev = nl.Attrs().Name
		}
	}
	return r
}

func defaultPrefix(f stanza.Family) netip.Prefix {
	if f == stanza.Inet6 {
		return netip.PrefixFrom(netip.IPv6Unspecified(), 0)
	}
	return netip.PrefixFrom(netip.IPv4Unspecified(), 0)
}

// Plan returns l's source routing as data, from l alone, without asking the
// kernel: the ISP table's default and throw routes, the `from` rules and
// the `fwmark` ones.
func (l *Link) Plan() Plan {
	c := l.Config
	var p Plan
	for _, r := range l.wantRules() {
		p.Rules = append(p.Rules, ruleOf(c.Family, &r))
	}
	p.Routes = append(p.Routes, Route{Family: c.Family, Table: c.Table, Dst: defaultPrefix(c.Family), Via: l.Gateway, Dev: c.Iface})
	for _, t := range c.Throw {
		p.Routes = append(p.Routes, Route{Family: c.Family, Table: c.Table, Dst: t.Masked(), Throw: true})
	}
	return p
}

// Kernel is what the kernel has of ifisp's source routing in one family:
// every rule and ISP-table route carrying Protocol, as plan data.
type Kernel struct {
	Rules  []Rule
	Routes []Route
}

// ReadKernel dumps ifisp's rules and the routes of the tables they (and
// tables) name, in family f.
func ReadKernel(h *netlink.Handle, f stanza.Family, tables []int) (*Kernel, error) {
	rules, err := Retry(func() ([]netlink.Rule, error) { return h.RuleList(NetlinkFamily(f)) })
	if err != nil {
		return nil, fmt.Errorf("listing %s rules: %w", f, err)
	}
	k := &Kernel{}
	for i := range rules {
		if rules[i].Protocol == Protocol {
			k.Rules = append(k.Rules, ruleOf(f, &rules[i]))
			tables = append(tables, rules[i].Table)
		}
	}
	slices.Sort(tables)
	for _, t := range slices.Compact(tables) {
		routes, err := Retry(func() ([]netlink.Route, error) {
			return h.RouteListFiltered(NetlinkFamily(f), &netlink.Route{Table: t, Protocol: Protocol}, netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
		})
		if err != nil {
			return nil, fmt.Errorf("listing %s table %d: %w", f, t, err)
		}
		for i := range routes {
			k.Routes = append(k.Routes, routeOf(h, f, &routes[i]))
		}
	}
	return k, nil
}

// Missing is what of p the kernel k lacks.
func (p Plan) Missing(k *Kernel) Plan {
	var m Plan
	for _, r := range p.Rules {
		if !slices.Contains(k.Rules, r) {
			m.Rules = append(m.Rules, r)
		}
	}
	for _, r := range p.Routes {
		if !slices.Contains(k.Routes, r) {
			m.Routes = append(m.Routes, r)
		}
	}
	return m
}

// Stale is what k has of ifisp's in p's tables and family that none of the
// plans keep (the link's own plan and every other link's): an old
// address's rule, a killed run's route.
func (p Plan) Stale(k *Kernel, keep ...Plan) Plan {
	tables := map[int]bool{}
	for _, r := range p.Routes {
		tables[r.Table] = true
	}
	kept := func(has func(Plan) bool) bool { return slices.ContainsFunc(keep, has) }
	var s Plan
	for _, r := range k.Rules {
		if tables[r.Table] && !kept(func(o Plan) bool { return slices.Contains(o.Rules, r) }) {
			s.Rules = append(s.Rules, r)
		}
	}
	for _, r := range k.Routes {
		if tables[r.Table] && !kept(func(o Plan) bool { return slices.Contains(o.Routes, r) }) {
			s.Routes = append(s.Routes, r)
		}
	}
	return s
}

// Without is p less every piece that one of others has too: what p's link
// may remove when others are up.
func (p Plan) Without(others ...Plan) Plan {
	var w Plan
	for _, r := range p.Rules {
		if !slices.ContainsFunc(others, func(o Plan) bool { return slices.Contains(o.Rules, r) }) {
			w.Rules = append(w.Rules, r)
		}
	}
	for _, r := range p.Routes {
		if !slices.ContainsFunc(others, func(o Plan) bool { return slices.Contains(o.Routes, r) }) {
			w.Routes = append(w.Routes, r)
		}
	}
	return w
}

// Empty says p has nothing.
func (p Plan) Empty() bool { return len(p.Rules) == 0 && len(p.Routes) == 0 }

// Shares says whether p and o route through one table in one family.
func (p Plan) Shares(o Plan) bool {
	for _, r := range p.Routes {
		if slices.ContainsFunc(o.Routes, func(x Route) bool { return x.Table == r.Table && x.Family == r.Family }) {
			return true
		}
	}
	return false
}

// Apply adds add's pieces (routes first, so that no rule points at an empty
// table) and then removes remove's. On a failure it undoes what it did, in
// reverse, and reports both. What is there already counts as added, what is
// gone as removed.
func Apply(h *netlink.Handle, iface string, add, remove Plan) error {
	var undo []func() error
	err := func() error {
		for _, r := range add.Routes {
			index, err := indexOf(h, r.Dev)
			if err != nil {
				return fmt.Errorf("%s: route %s: %w", iface, r, err)
			}
			n := r.netlink(index)
			// Replace: a table's default whose gateway changed is swapped in
			// place, with no moment without one.
			if err := h.RouteReplace(n); err != nil {
				return fmt.Errorf("%s: adding route %s: %w", iface, r, err)
			}
			undo = append(undo, func() error { return routeDel(h, n) })
		}
		for _, r := range add.Rules {
			n := r.netlink()
			if err := h.RuleAdd(n); err != nil && !errors.Is(err, unix.EEXIST) {
				return fmt.Errorf("%s: adding rule %s: %w", iface, r, err)
			}
			undo = append(undo, func() error { return ruleDel(h, n) })
		}
		for _, r := range remove.Rules {
			n := r.netlink()
			if err := ruleDel(h, n); err != nil {
				return fmt.Errorf("%s: removing rule %s: %w", iface, r, err)
			}
			undo = append(undo, func() error { return h.RuleAdd(n) })
		}
		for _, r := range remove.Routes {
			n := r.netlink(0)
			n.Gw = r.Via.AsSlice()
			if err := routeDel(h, n); err != nil {
				return fmt.Errorf("%s: removing route %s: %w", iface, r, err)
			}
			if index, ierr := indexOf(h, r.Dev); ierr == nil {
				undo = append(undo, func() error { return h.RouteReplace(r.netlink(index)) })
			}
		}
		return nil
	}()
	if err == nil {
		return nil
	}
	var uerrs []error
	for i := len(undo) - 1; i >= 0; i-- {
		uerrs = append(uerrs, undo[i]())
	}
	if uerr := errors.Join(uerrs...); uerr != nil {
		return fmt.Errorf("%w; putting back what this run changed failed too: %v (ifdown %s, then ifup, repairs it)", err, uerr, iface)
	}
	return err
}

// indexOf is the index of interface name; "" (a throw route's) is 0.
func indexOf(h *netlink.Handle, name string) (int, error) {
	if name == "" {
		return 0, nil
	}
	nl, err := h.LinkByName(name)
	if err != nil {
		return 0, fmt.Errorf("no interface %s", name)
	}
	return nl.Attrs().Index, nil
}
