// Package policy installs and removes an ISP's source routing: the ISP's own
// routing table (a default route and throw routes), the `from` rules that
// send the ISP's source addresses to it, and an optional main-table default
// route through the ISP.
//
// Everything it creates carries the route protocol Protocol, and everything
// it removes carries it too: the administrator's own rules and routes, even
// inside an ISP table, are never touched. It talks netlink only.
package policy

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ifisp/ifisp/pkg/stanza"
)

// Protocol is ifisp's route protocol number (rtm_protocol). 71 is in no
// rt_protos file of iproute2, FRR, BIRD or systemd; /etc/iproute2/rt_protos.d/
// ifisp.conf names it "ifisp" for `ip rule` and `ip route`.
const Protocol = 71

// Rule priorities. The kernel's own rules sit at 0 (local) and 32766 (main);
// ifisp's are spaced so an administrator can slot rules before, between and
// after them (e.g. `to 10.0.0.0/8 lookup main` at 9000).
const (
	// PrioAddress is the priority of the `from <stanza address>` rule.
	PrioAddress = 10000
	// PrioSource is the priority of the `from <isp-source>` rules.
	PrioSource = 10100
	// PrioInbound is the priority of the `fwmark <inbound mark>` rule that
	// sends the replies of connections that arrived by the link back by
	// it. After the `from` rules: a reply from another link's address
	// must leave by that link, whichever link the connection came in by.
	PrioInbound = 10200
	// PrioSticky is the priority of the `fwmark <outbound mark>` rule of
	// an isp-sticky link.
	PrioSticky = 10300
)

// Link is what policy acts on: a stanza's facts, with what the kernel knows
// filled in (the address and gateway of an `inet dhcp` stanza).
type Link struct {
	Config  *stanza.Config
	Index   int        // interface index, 0 when the interface is gone
	Address netip.Addr // the stanza's address, or the kernel's
	Gateway netip.Addr // the ISP table's gateway
}

// family returns the netlink family constant of the stanza.
func (l *Link) family() int { return NetlinkFamily(l.Config.Family) }

// Resolve looks the stanza's interface up and fills in the address and
// gateway the stanza leaves to the kernel: its first global address of the
// family, and the gateway of a main-table default route through it. A
// missing interface is not an error (Index stays 0): the down path must work
// when the interface is already gone.
func Resolve(h *netlink.Handle, c *stanza.Config) (*Link, error) {
	l := &Link{Config: c, Address: c.Address.Addr(), Gateway: c.ISPGateway}
	nl, err := h.LinkByName(c.Iface)
	if err != nil {
		var notFound netlink.LinkNotFoundError
		if errors.As(err, &notFound) {
			return l, nil
		}
		return nil, fmt.Errorf("%s: looking up the interface: %w", c.Iface, err)
	}
	l.Index = nl.Attrs().Index
	if !l.Address.IsValid() {
		addrs, err := Retry(func() ([]netlink.Addr, error) { return h.AddrList(nl, l.family()) })
		if err != nil {
			return nil, fmt.Errorf("%s: listing addresses: %w", c.Iface, err)
		}
		l.Address = OwnAddress(addrs)
	}
	if !l.Gateway.IsValid() {
		routes, err := l.mainDefaults(h)
		if err != nil {
			return nil, err
		}
		for _, r := range routes {
			if gw, ok := fromIP(r.Gw); ok {
				l.Gateway = gw
				break
			}
		}
	}
	return l, nil
}

// OwnAddress picks, of an interface's addresses, the one a stanza without
// an address has as its own: the first global one that is usable (not
// deprecated, tentative or failed: a renumbering ISP's SLAAC deprecates
// the old address before it goes), else the first global one; invalid
// for none.
func OwnAddress(addrs []netlink.Addr) netip.Addr {
	var first netip.Addr
	for _, a := range addrs {
		ip, ok := fromIP(a.IP)
		if !ok || a.Scope != unix.RT_SCOPE_UNIVERSE {
			continue
		}
		if Usable(a) {
			return ip
		}
		if !first.IsValid() {
			first = ip
		}
	}
	return first
}

// Usable says whether an address can be a new connection's source: it is
// neither deprecated nor tentative (duplicate address detection under
// way) nor failed.
func Usable(a netlink.Addr) bool {
	return a.Flags&(unix.IFA_F_DEPRECATED|unix.IFA_F_TENTATIVE|unix.IFA_F_DADFAILED) == 0
}

// Up installs the ISP table, the `from` and `fwmark` rules and, with
// isp-metric, the main-table default. It runs in if-up.d, after ifupdown has
// added the address. Everything that can be checked is checked before
// anything changes; it then adds what of the link's plan the kernel lacks
// and removes ifisp's pieces in the table that no plan keeps (an old
// address's rule, a killed run's route): others are the plans of the other
// links that are up. If a change fails, what this run changed is put back.
// Running it twice changes nothing the second time.
func Up(h *netlink.Handle, l *Link, others ...Plan) error {
	c := l.Config
	switch {
	case l.Index == 0:
		return fmt.Errorf("%s: no such interface (is the stanza's name right?)", c.Iface)
	case !l.Address.IsValid():
		return fmt.Errorf("%s: no %s address on the interface yet (for %s, the address must be there when if-up.d runs)", c.Iface, c.Family, c.Method)
	case !l.Gateway.IsValid():
		return stanza.Errorf(c.Iface, "isp-gateway", "", "no gateway known (set isp-gateway or gateway, or check that %s installed a default route)", c.Method)
	}
	if err := check(h, c, l.Index, false); err != nil {
		return err
	}
	if err := l.checkOnLink(h); err != nil {
		return err
	}
	want := l.Plan()
	k, err := ReadKernel(h, c.Family, []int{c.Table})
	if err != nil {
		return fmt.Errorf("%s: %w", c.Iface, err)
	}
	add, stale := want.Missing(k), want.Stale(k, append(others, want)...)
	if err := Apply(h, c.Iface, add, stale); err != nil {
		return err
	}
	if err := syncMainDefault(h, l); err != nil {
		if uerr := Apply(h, c.Iface, stale, add); uerr != nil {
			return fmt.Errorf("%w; putting back what this run changed failed too: %v (ifdown %s, then ifup, repairs it)", err, uerr, c.Iface)
		}
		return err
	}
	return nil
}

// Check makes the checks of Up that need the kernel but not the configured
// interface, so that if-pre-up.d can refuse a stanza before ifupdown
// changes anything: the ISP table must not be another interface's, and a
// main-table default the stanza adds must not collide with one that is
// there.
func Check(h *netlink.Handle, c *stanza.Config) error {
	if c.Table == 0 {
		return nil
	}
	index := 0
	if nl, err := h.LinkByName(c.Iface); err == nil {
		index = nl.Attrs().Index
	}
	return check(h, c, index, true)
}

// check finds another interface's routes in the ISP table, and main-table
// defaults of others at the metric the stanza's defaults take (ifisp's
// isp-metric one, and for IPv4 ifupdown's `gateway` one, which the kernel
// refuses beside another at the same metric). index is the stanza's
// interface, 0 while it does not exist; preUp says ifupdown's `gateway`
// route is still to come.
func check(h *netlink.Handle, c *stanza.Config, index int, preUp bool) error {
	// One interface per family: an ISP's inet stanza and its inet6 one
	// (native, or a 6rd tunnel of its own) share the table.
	own, err := Retry(func() ([]netlink.Route, error) {
		return h.RouteListFiltered(NetlinkFamily(c.Family), &netlink.Route{Table: c.Table, Protocol: Protocol}, netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
	})
	if err != nil {
		return fmt.Errorf("%s: listing table %d: %w", c.Iface, c.Table, err)
	}
	for _, r := range own {
		if !isDefault(r.Dst) || r.LinkIndex == 0 || r.LinkIndex == index {
			continue // throw routes hang on lo
		}
		other, err := h.LinkByIndex(r.LinkIndex)
		if err != nil || other.Attrs().Name == c.Iface {
			continue // gone meanwhile, or renumbered
		}
		return stanza.Errorf(c.Iface, "isp-table", c.TableName, "table %d's %s routes are %s's already (its %s is there): each ISP link needs a table of its own", c.Table, c.Family, other.Attrs().Name, routeString(&r))
	}
	return checkMain(h, c, index, preUp)
}

// CheckMainDefault checks that the isp-metric default a stanza adds to the
// main table through interface index (a 6rd tunnel without isp-table's)
// collides with no other default at its metric, as Up's checks do.
func CheckMainDefault(h *netlink.Handle, c *stanza.Config, index int) error {
	return checkMain(h, c, index, false)
}

// checkMain finds main-table defaults of others at the metric the
// stanza's defaults take: its isp-metric one, and before ifup (preUp) for
// IPv4 ifupdown's `gateway` one.
func checkMain(h *netlink.Handle, c *stanza.Config, index int, preUp bool) error {
	routes, err := Retry(func() ([]netlink.Route, error) {
		return h.RouteListFiltered(NetlinkFamily(c.Family), &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return fmt.Errorf("%s: listing the main table: %w", c.Iface, err)
	}
	clash := func(option, value string, m int, mine func(r *netlink.Route) bool, what string) error {
		for _, r := range routes {
			if isDefault(r.Dst) && r.Priority == stanza.KernelMetric(c.Family, m) && !mine(&r) {
				return stanza.Errorf(c.Iface, option, value, "the main table already has %s%s: %s", routeString(&r), devString(h, r.LinkIndex), what)
			}
		}
		return nil
	}
	if c.Metric >= 0 {
		mine := func(r *netlink.Route) bool { return index != 0 && r.Protocol == Protocol && r.LinkIndex == index }
		if err := clash("isp-metric", strconv.Itoa(c.Metric), c.Metric, mine, "pick another isp-metric"); err != nil {
			return err
		}
	}
	if preUp && c.Family == stanza.Inet && c.Gateway.IsValid() {
		option, value := "gateway", c.Gateway.String()
		if c.GatewayMetric >= 0 {
			option, value = "metric", strconv.Itoa(c.GatewayMetric)
		}
		mine := func(r *netlink.Route) bool { return index != 0 && r.LinkIndex == index } // left by an ifup that was killed
		if err := clash(option, value, max(c.GatewayMetric, 0), mine, "ifupdown cannot add the stanza's gateway route beside it at the same metric (give the stanza another metric)"); err != nil {
			return err
		}
	}
	return nil
}

// checkOnLink makes sure the ISP table's default can be installed: its
// gateway must be on the link, inside a prefix the interface has a route
// for (or link-local).
func (l *Link) checkOnLink(h *netlink.Handle) error {
	gw := l.Gateway
	if gw.Is6() && gw.IsLinkLocalUnicast() {
		return nil
	}
	routes, err := Retry(func() ([]netlink.Route, error) {
		return h.RouteListFiltered(l.family(), &netlink.Route{Table: unix.RT_TABLE_MAIN, LinkIndex: l.Index}, netlink.RT_FILTER_TABLE|netlink.RT_FILTER_OIF)
	})
	if err != nil {
		return fmt.Errorf("%s: listing the main table: %w", l.Config.Iface, err)
	}
	for _, r := range routes {
		if r.Gw == nil && !isDefault(r.Dst) && prefixOf(r.Dst).Contains(gw) {
			return nil
		}
	}
	option := "isp-gateway"
	if !l.Config.ISPGateway.IsValid() {
		option = "gateway"
	}
	return stanza.Errorf(l.Config.Iface, option, gw.String(), "not on the link: no route of %s covers it, so the ISP table's default cannot reach it (check the address's prefix length, or the gateway)", l.Config.Iface)
}

// devString names the device of a route, for messages.
func devString(h *netlink.Handle, index int) string {
	if nl, err := h.LinkByIndex(index); err == nil {
		return " (dev " + nl.Attrs().Name + ")"
	}
	return ""
}

// Withdraw removes the main-table default routes through the link, ifisp's
// own and the one ifupdown added for the stanza's `gateway`, so that no new
// flow is routed to a link that is going away. It runs in if-down.d, before
// ifupdown deconfigures the interface. The ISP table and the rules stay:
// until the address is gone, the router's own packets from it must still
// leave by its link.
func Withdraw(h *netlink.Handle, l *Link) error {
	if l.Index == 0 {
		return nil
	}
	routes, err := l.mainDefaults(h)
	if err != nil {
		return err
	}
	for _, r := range routes {
		gw, _ := fromIP(r.Gw)
		ifupdowns := l.Config.Gateway.IsValid() && gw == l.Config.Gateway
		if r.Protocol == Protocol || ifupdowns {
			if err := routeDel(h, &r); err != nil {
				return fmt.Errorf("%s: withdrawing main-table default via %s: %w", l.Config.Iface, gw, err)
			}
		}
	}
	return nil
}

// Down removes the link's source routing, for the stanza's family only
// (the inet6 stanza of the same ISP keeps its half): what of own, the plan
// the registry recorded for it (or l.Plan() when there is none), no other
// link's plan has; and, when no other link routes through the table in
// this family, every other rule and route of ifisp's there (a killed run's).
// So a stanza refused at ifup that names another link's table takes
// nothing of that link's when ifdown --force runs. It runs in
// if-post-down.d, once the address is gone, and also removes any
// main-table default of ifisp's own that Withdraw did not get to. What is
// already gone counts as removed.
func Down(h *netlink.Handle, l *Link, own Plan, others ...Plan) error {
	c := l.Config
	errs := []error{Withdraw(h, l)}
	remove := own.Without(others...)
	if !slices.ContainsFunc(others, own.Shares) {
		k, err := ReadKernel(h, c.Family, []int{c.Table})
		if err != nil {
			return errors.Join(append(errs, fmt.Errorf("%s: %w", c.Iface, err))...)
		}
		stale := own.Stale(k, others...)
		remove.Rules = append(remove.Rules, stale.Rules...)
		remove.Routes = append(remove.Routes, stale.Routes...)
	}
	for _, r := range remove.Rules {
		if err := ruleDel(h, r.netlink()); err != nil {
			errs = append(errs, fmt.Errorf("%s: removing rule %s: %w", c.Iface, r, err))
		}
	}
	for _, r := range remove.Routes {
		n := r.netlink(0)
		if err := routeDel(h, n); err != nil {
			errs = append(errs, fmt.Errorf("%s: removing route %s: %w", c.Iface, r, err))
		}
	}
	return errors.Join(errs...)
}

// wantRules returns the `from` rules: the address at PrioAddress, each
// isp-source prefix at PrioSource; then the `fwmark` rules: the inbound
// mark at PrioInbound (isp-inbound), the outbound one at PrioSticky
// (isp-sticky).
func (l *Link) wantRules() []netlink.Rule {
	c := l.Config
	rule := func(prio int) netlink.Rule {
		r := *netlink.NewRule()
		r.Family = l.family()
		r.Table = c.Table
		r.Priority = prio
		r.Protocol = Protocol
		return r
	}
	from := func(p netip.Prefix, prio int) netlink.Rule {
		r := rule(prio)
		r.Src = ipNet(p)
		return r
	}
	fwmark := func(mark uint32, prio int) netlink.Rule {
		r := rule(prio)
		r.Mark, r.Mask = mark, &c.Mark.Mask
		return r
	}
	want := []netlink.Rule{from(netip.PrefixFrom(l.Address, l.Address.BitLen()), PrioAddress)}
	for _, p := range c.Sources {
		want = append(want, from(p, PrioSource))
	}
	// A 6rd tunnel's connections carry no marks yet: ifisp-snat makes no
	// chains for it.
	if c.Inbound && c.SixRD == nil {
		want = append(want, fwmark(c.Mark.In(), PrioInbound))
	}
	if c.Sticky {
		want = append(want, fwmark(c.Mark.Out(), PrioSticky))
	}
	return want
}

// syncMainDefault installs the isp-metric default in the main table, and
// removes ifisp's defaults through this link that no longer match. The main
// table is shared, so a default of someone else's at the same metric is a
// conflict to report, never to replace.
func syncMainDefault(h *netlink.Handle, l *Link) error {
	c := l.Config
	have, err := Retry(func() ([]netlink.Route, error) {
		return h.RouteListFiltered(l.family(), &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return fmt.Errorf("%s: listing the main table: %w", c.Iface, err)
	}
	want := l.wantMain()
	for _, r := range have {
		if !isDefault(r.Dst) {
			continue
		}
		ours := r.Protocol == Protocol && r.LinkIndex == l.Index
		switch {
		case ours && want != nil && sameRoute(want, &r):
			want = nil // already there
		case ours:
			if err := routeDel(h, &r); err != nil {
				return fmt.Errorf("%s: removing stale main-table %s: %w", c.Iface, routeString(&r), err)
			}
		case want != nil && r.Priority == want.Priority:
			return fmt.Errorf("%s: isp-metric %d: the main table already has %s (pick another isp-metric, or leave it out when the stanza's gateway already adds this default)", c.Iface, c.Metric, routeString(&r))
		}
	}
	if want == nil {
		return nil
	}
	if err := h.RouteAdd(want); err != nil {
		return fmt.Errorf("%s: isp-metric %d: adding %s: %w", c.Iface, c.Metric, routeString(want), err)
	}
	return nil
}

// wantMain returns the isp-metric default through the link in the main
// table, nil without isp-metric.
func (l *Link) wantMain() *netlink.Route {
	c := l.Config
	if c.Metric < 0 {
		return nil
	}
	return Default{Gateway: l.Gateway, Metric: stanza.KernelMetric(c.Family, c.Metric), Protocol: Protocol}.route(c.Family, l.Index)
}

// MainDefault is the isp-metric default Up adds to the main table, nil
// without isp-metric.
func (l *Link) MainDefault() *netlink.Route { return l.wantMain() }

// mainDefaults lists the main table's default routes of the family through
// the link.
func (l *Link) mainDefaults(h *netlink.Handle) ([]netlink.Route, error) {
	routes, err := mainDefaults(h, l.Index, l.Config.Family)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", l.Config.Iface, err)
	}
	return routes, nil
}

// Retry repeats a netlink dump that the kernel interrupted because the table
// changed under it; a few tries always suffice in practice.
func Retry[T any](dump func() ([]T, error)) ([]T, error) {
	var err error
	for range 5 {
		var res []T
		if res, err = dump(); !errors.Is(err, netlink.ErrDumpInterrupted) {
			return res, err
		}
	}
	return nil, err
}

// routeDel deletes a route; one that is already gone counts as deleted (the
// kernel drops routes by itself when their gateway's address goes away).
func routeDel(h *netlink.Handle, r *netlink.Route) error {
	if err := h.RouteDel(r); err != nil && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENOENT) {
		return err
	}
	return nil
}

// ruleDel deletes a rule; one that is already gone counts as deleted.
func ruleDel(h *netlink.Handle, r *netlink.Rule) error {
	if err := h.RuleDel(r); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ESRCH) {
		return err
	}
	return nil
}

// sameRoute compares the fields ifisp sets.
func sameRoute(a, b *netlink.Route) bool {
	return prefixOf(a.Dst) == prefixOf(b.Dst) && a.Gw.Equal(b.Gw) && a.Type == b.Type &&
		(a.Type == unix.RTN_THROW || a.LinkIndex == b.LinkIndex) &&
		(a.Priority == b.Priority || a.Table != unix.RT_TABLE_MAIN)
}

// Selector writes what an ifisp rule matches as `ip rule` takes it: "from
// PREFIX" (a host without its length) or "fwmark MARK/MASK".
func Selector(r *netlink.Rule) string {
	if r.Src == nil {
		return "fwmark " + Fwmark(r)
	}
	p := prefixOf(r.Src)
	if p.IsSingleIP() {
		return "from " + p.Addr().String()
	}
	return "from " + p.String()
}

// Fwmark writes an `fwmark` rule's mark and mask as `ip rule` prints them:
// "0xe4000000/0xff000000".
func Fwmark(r *netlink.Rule) string {
	return fmt.Sprintf("%#x/%#x", r.Mark, maskOf(r.Mask))
}

// maskOf reads a rule's fwmark mask; none is all ones, as the kernel
// takes it.
func maskOf(m *uint32) uint32 {
	if m == nil {
		return 0xffffffff
	}
	return *m
}

func defaultDst(f stanza.Family) *net.IPNet {
	if f == stanza.Inet6 {
		return ipNet(netip.PrefixFrom(netip.IPv6Unspecified(), 0))
	}
	return ipNet(netip.PrefixFrom(netip.IPv4Unspecified(), 0))
}

func isDefault(n *net.IPNet) bool {
	if n == nil {
		return true
	}
	ones, _ := n.Mask.Size()
	return ones == 0
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// prefixOf turns a kernel prefix into a comparable value; nil is the
// default route.
func prefixOf(n *net.IPNet) netip.Prefix {
	if n == nil {
		return netip.Prefix{}
	}
	a, _ := fromIP(n.IP)
	ones, _ := n.Mask.Size()
	if ones == 0 {
		return netip.Prefix{}
	}
	return netip.PrefixFrom(a, ones)
}

func fromIP(ip net.IP) (netip.Addr, bool) {
	a, ok := netip.AddrFromSlice(ip)
	return a.Unmap(), ok
}

func dstString(n *net.IPNet) string {
	if isDefault(n) {
		return "default"
	}
	return n.String()
}

// routeString prints a route the way `ip route` would, for error messages.
func routeString(r *netlink.Route) string {
	s := dstString(r.Dst)
	if r.Type == unix.RTN_THROW {
		s = "throw " + s
	}
	if gw, ok := fromIP(r.Gw); ok {
		s += " via " + gw.String()
	}
	if r.Table != unix.RT_TABLE_MAIN {
		s += fmt.Sprintf(" table %d", r.Table)
	}
	if r.Priority != 0 {
		s += fmt.Sprintf(" metric %d", r.Priority)
	}
	return s
}

// NewHandle opens a netlink handle in the current network namespace, for
// rtnetlink only: links, addresses, routes and rules are all ifisp asks of
// it, and a hook opens one per run.
func NewHandle() (*netlink.Handle, error) {
	return netlink.NewHandle(unix.NETLINK_ROUTE)
}
