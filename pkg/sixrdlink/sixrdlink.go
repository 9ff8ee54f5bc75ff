// Package sixrdlink configures a 6rd tunnel (RFC 5969) from an `inet6
// v4tunnel` stanza's 6rd options: the sit device's 6rd parameters, the
// address numbered from the delegated prefix, the LAN's /64, and the
// published prefix; the routing goes through package policy.
package sixrdlink

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/ifisp/ifisp/pkg/lan"
	"github.com/ifisp/ifisp/pkg/policy"
	"github.com/ifisp/ifisp/pkg/registry"
	"github.com/ifisp/ifisp/pkg/sixrd"
	"github.com/ifisp/ifisp/pkg/stanza"
)

// Plan is what a 6rd stanza configures for one IPv4 address: what Up
// installs, and what `ifisp explain` prints.
type Plan struct {
	Local     netip.Addr   // the IPv4 address embedded in the delegated prefix
	Delegated netip.Prefix // the customer's delegated prefix
	// RelayPrefix is the tunnel's 6rd relay prefix: the leading
	// 6rd-ipv4-masklen bits of Local, which the domain shares.
	RelayPrefix netip.Prefix
	NextHop     netip.Addr // ::<relay>, the default route's gateway
	// Address is the router's address from the delegated prefix: on the
	// LAN interface (its /64's ::1) with isp-lan (6rd-lan), else on the
	// tunnel (<delegated>::1 with the 6rd prefix's length, so the domain's
	// other routers are reached directly through the tunnel).
	Address netip.Prefix
	// LAN is the LAN's /64 with isp-lan, the zero Subnet without.
	LAN lan.Subnet
}

// OnLAN reports whether the router's address is on the LAN interface.
func (p Plan) OnLAN() bool { return p.LAN.Iface != "" }

// NewPlan computes the plan of stanza c for the IPv4 address v4.
func NewPlan(c *stanza.Config, v4 netip.Addr) (Plan, error) {
	s := c.SixRD
	delegated, err := sixrd.Delegated(s.Prefix, s.IPv4MaskLen, v4)
	if err != nil {
		return Plan{}, fmt.Errorf("%s: 6rd-prefix %s: %w", c.Iface, s.Prefix, err)
	}
	p := Plan{Local: v4, Delegated: delegated, RelayPrefix: netip.PrefixFrom(v4, s.IPv4MaskLen).Masked(),
		NextHop: sixrd.RelayNextHop(s.Relay)}
	if c.LAN != nil {
		if p.LAN, err = lan.Plan(c, delegated); err != nil {
			return Plan{}, err
		}
		p.Address = p.LAN.Address()
	} else {
		p.Address = netip.PrefixFrom(sixrd.LANAddr(netip.PrefixFrom(delegated.Addr(), 64)), s.Prefix.Bits())
	}
	return p, nil
}

// Resolve computes the plan of stanza c for the IPv4 address the kernel
// has for it now: 6rd-local's, else tunnelLocal (the tunnel's `local`).
func Resolve(h *netlink.Handle, c *stanza.Config, tunnelLocal netip.Addr) (Plan, error) {
	v4, err := localIPv4(h, c, tunnelLocal)
	if err != nil {
		return Plan{}, err
	}
	return NewPlan(c, v4)
}

// AddressDev is the interface that gets the plan's address.
func (p Plan) AddressDev(c *stanza.Config) string {
	if p.OnLAN() {
		return p.LAN.Iface
	}
	return c.Iface
}

// Link is the stanza's routing for package policy, with isp-table:
// through the tunnel (interface index), from the plan's address, the
// delegated prefix one more of the ISP's sources (and the LAN's /64
// thrown back to the main table, with isp-lan).
func (p Plan) Link(c *stanza.Config, index int) *policy.Link {
	routed := c
	if p.OnLAN() {
		routed = lan.Routed(c, p.LAN)
	}
	return &policy.Link{Config: withSource(routed, p.Delegated), Index: index, Address: p.Address.Addr(), Gateway: p.NextHop}
}

// MainDefault is the main-table default via the relay of a stanza with
// isp-metric but without isp-table (with isp-table, policy adds it); nil
// for any other.
func (p Plan) MainDefault(c *stanza.Config, index int) *netlink.Route {
	if c.Table != 0 || c.Metric < 0 {
		return nil
	}
	return &netlink.Route{LinkIndex: index, Dst: ipNet(netip.PrefixFrom(netip.IPv6Unspecified(), 0)),
		Gw: p.NextHop.AsSlice(), Priority: c.Metric, Protocol: policy.Protocol, Table: unix.RT_TABLE_MAIN}
}

// withSource returns c with one more isp-source: the delegated prefix's
// hosts source-route through the ISP too.
func withSource(c *stanza.Config, delegated netip.Prefix) *stanza.Config {
	routed := *c
	routed.Sources = append(append([]netip.Prefix(nil), c.Sources...), delegated)
	return &routed
}

// localIPv4 finds the IPv4 address to embed: 6rd-local's (an interface's
// first global address, or a literal), else the tunnel's own `local`.
func localIPv4(h *netlink.Handle, c *stanza.Config, tunnelLocal netip.Addr) (netip.Addr, error) {
	s := c.SixRD
	switch {
	case s.LocalAddr.IsValid():
		return s.LocalAddr, nil
	case s.LocalIface != "":
		link, err := h.LinkByName(s.LocalIface)
		if err != nil {
			return netip.Addr{}, lan.NoInterface(c, "6rd-local", s.LocalIface)
		}
		addrs, err := h.AddrList(link, netlink.FAMILY_V4)
		if err != nil {
			return netip.Addr{}, fmt.Errorf("%s: 6rd-local %q: listing addresses: %w", c.Iface, s.LocalIface, err)
		}
		for _, a := range addrs {
			if ip, ok := netip.AddrFromSlice(a.IP); ok && a.Scope == unix.RT_SCOPE_UNIVERSE {
				return ip.Unmap(), nil
			}
		}
		return netip.Addr{}, stanza.Errorf(c.Iface, "6rd-local", s.LocalIface, "the interface has no IPv4 address yet (bring it up before this stanza)")
	case tunnelLocal.IsValid() && !tunnelLocal.IsUnspecified():
		return tunnelLocal, nil
	}
	return netip.Addr{}, fmt.Errorf("%s: 6rd-local: missing (set 6rd-local, or local on the stanza)", c.Iface)
}

// Check makes, in if-pre-up.d, the checks of Up that can be made before
// ifupdown creates the tunnel: the interface 6rd-local names exists and
// has an IPv4 address, from which the 6rd domain numbers a delegated
// prefix (and isp-lan's /64 in it; the LAN interface is lan.Check's), the
// tunnel's name is free, and the ISP table and
// metric are free (policy.Check). A sit tunnel of the stanza's name (left
// by an ifup that was killed before it could fail cleanly) passes: Clear
// removes it. Check changes nothing, so `ifisp check --kernel` runs it.
func Check(h *netlink.Handle, c *stanza.Config) error {
	if c.SixRD.LocalIface != "" || c.SixRD.LocalAddr.IsValid() {
		v4, err := localIPv4(h, c, netip.Addr{})
		if err != nil {
			return err
		}
		// The whole plan, so that a domain no address can number (option
		// 212's, say) is refused before ifupdown makes the tunnel.
		if _, err := NewPlan(c, v4); err != nil {
			return err
		}
	}
	if link, err := h.LinkByName(c.Iface); err == nil {
		if _, ok := link.(*netlink.Sittun); !ok || c.Method != "v4tunnel" {
			return stanza.Errorf(c.Iface, "iface", c.Iface, "a %s device of this name exists already, and ifupdown's v4tunnel must create the tunnel (rename the stanza, or remove the device)", link.Type())
		}
	}
	return policy.Check(h, c)
}

// Clear removes the sit tunnel an interrupted ifup left (Check let it
// pass), so that ifupdown's v4tunnel can create it again. It runs in
// if-pre-up.d, after Check: a check changes nothing.
func Clear(h *netlink.Handle, c *stanza.Config) error {
	link, err := h.LinkByName(c.Iface)
	if err != nil {
		return nil
	}
	if err := deleteTunnel(h, link); err != nil {
		return fmt.Errorf("%s: removing the sit tunnel an interrupted ifup left: %w (ip tunnel del %s, then ifup again)", c.Iface, err, c.Iface)
	}
	return nil
}

func deleteTunnel(h *netlink.Handle, link netlink.Link) error {
	if err := h.LinkDel(link); err != nil && !errors.Is(err, unix.ENODEV) {
		return err
	}
	return nil
}

// Up configures the tunnel c names, which ifupdown has just made, and its
// routing, publishes the delegated prefix and, with isp-table and
// isp-check, registers the link for ifisp-watch. Running it again after the IPv4 address
// changed moves everything to the new prefix. When the first configuration
// of a tunnel fails, Up undoes it and deletes the tunnel: ifupdown takes
// the stanza for down after a failed if-up.d, and its next ifup must be
// able to create the tunnel again.
func Up(h *netlink.Handle, c *stanza.Config) error {
	old, err := registry.Read(c.Iface, c.Family)
	if err != nil {
		return err
	}
	// A re-run (another IPv4 address, a lease come back) never deletes
	// the tunnel: ifupdown's ifup of it succeeded long ago.
	rerun := old != nil && (old.LANAddress != nil || old.Lost)
	err = up(h, c, old)
	if err == nil || rerun {
		return err
	}
	errs := []error{err, Down(h, c)}
	if link, lerr := h.LinkByName(c.Iface); lerr == nil {
		if lerr := deleteTunnel(h, link); lerr != nil {
			errs = append(errs, fmt.Errorf("%s: removing the tunnel after the failure: %w (ip tunnel del %s)", c.Iface, lerr, c.Iface))
		}
	}
	return errors.Join(errs...)
}

func up(h *netlink.Handle, c *stanza.Config, old *registry.Link) error {
	link, err := h.LinkByName(c.Iface)
	if err != nil {
		return fmt.Errorf("%s: no such tunnel (does the stanza say inet6 v4tunnel?)", c.Iface)
	}
	sit, ok := link.(*netlink.Sittun)
	if !ok {
		return fmt.Errorf("%s: is a %s device, not a sit tunnel", c.Iface, link.Type())
	}
	tunnelLocal, _ := netip.AddrFromSlice(sit.Local.To4())
	plan, err := Resolve(h, c, tunnelLocal)
	if err != nil {
		return err
	}
	if err := lan.Check(h, c); err != nil {
		return err
	}
	// A re-run after the IPv4 address changed: the old prefix goes first.
	// An unchanged one stays, so a re-run never blinks the LAN's address.
	var had *lan.Published
	if old != nil && old.LANAddress != nil {
		had = old.LANAddress
		if had.Prefix != plan.Delegated || had.Address != plan.Address {
			if err := lan.Remove(h, c.Iface, *had); err != nil {
				return err
			}
			had = nil
		}
	}
	if err := set6rd(sit, plan.Local, c.SixRD.Prefix, plan.RelayPrefix); err != nil {
		return fmt.Errorf("%s: setting the 6rd parameters: %w", c.Iface, err)
	}
	addr, err := lan.Claim(h, c.Iface, had, lan.Published{Prefix: plan.Delegated, Address: plan.Address, Dev: plan.AddressDev(c)})
	if err != nil {
		return err
	}
	var lanNet *lan.Subnet
	if plan.OnLAN() {
		lanNet = &plan.LAN
	}
	l := plan.Link(c, sit.Attrs().Index)
	rec := registry.Plan(l, old, lanNet, &addr)
	// Watched like a native link (probed from the delegated address
	// through the tunnel, its default withdrawn and its LAN prefix
	// deprecated when the relay or the IPv4 underlay stops answering) only
	// with isp-table and isp-check: the monitor's default target, the
	// gateway, is the relay's ::IPV4, which a relay need not answer, and a
	// link that never answers would be withdrawn a second after ifup.
	rec.Unwatched = c.Table == 0 || len(c.Check) == 0
	if c.Table == 0 {
		rec.Routing = policy.Plan{} // its one route is the main table's
	}
	if err := registry.Write(rec); err != nil { // ahead of the changes
		return err
	}
	if err := lan.Add(h, c.Iface, addr); err != nil {
		return err
	}
	if c.Table == 0 {
		if err := mainDefault(h, plan.MainDefault(c, sit.Attrs().Index), c); err != nil {
			return err
		}
		return registry.Record(h, l.Index, rec)
	}
	others, err := registry.Others(c.Iface, c.Family)
	if err != nil {
		return err
	}
	if err := policy.Up(h, l, registry.Plans(others)...); err != nil {
		return err
	}
	return registry.Record(h, l.Index, rec)
}

// Down removes what the link's record says Up added: the routing (the
// tunnel itself ifupdown has deleted by now) and the LAN address; then the
// record.
func Down(h *netlink.Handle, c *stanza.Config) error {
	rec, err := registry.Read(c.Iface, c.Family)
	if err != nil {
		return err
	}
	var errs []error
	if c.Table != 0 {
		routed := c
		if rec != nil && rec.LANAddress != nil {
			routed = withSource(c, rec.LANAddress.Prefix)
		}
		l, err := policy.Resolve(h, routed)
		if err == nil {
			err = registry.RemoveRouting(h, l, rec)
		}
		errs = append(errs, err)
	}
	if rec != nil && rec.LANAddress != nil {
		errs = append(errs, lan.Remove(h, c.Iface, *rec.LANAddress))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return registry.Forget(c.Iface, c.Family)
}

// mainDefault adds Plan.MainDefault's route r, if any. The main table is
// shared: another's default at the metric is a conflict to report, never
// to replace; the tunnel's own (a re-run) is replaced in place.
func mainDefault(h *netlink.Handle, r *netlink.Route, c *stanza.Config) error {
	if r == nil {
		return nil
	}
	if err := policy.CheckMainDefault(h, c, r.LinkIndex); err != nil {
		return err
	}
	if err := h.RouteReplace(r); err != nil {
		return fmt.Errorf("%s: isp-metric %d: default via %s: %w", c.Iface, c.Metric, r.Gw, err)
	}
	return nil
}

// set6rd sets the sit device's local address (the one embedded in the
// delegated prefix: 6rd-local's, which may have changed since ifupdown
// made the tunnel with the stanza's `local`), 6rd prefix and relay prefix
// over netlink (vishvananda/netlink's Sittun has no 6rd fields). A
// changelink resets what it is not given, so the tunnel's other
// parameters go along.
func set6rd(sit *netlink.Sittun, local netip.Addr, prefix, relayPrefix netip.Prefix) error {
	req := nl.NewNetlinkRequest(unix.RTM_NEWLINK, unix.NLM_F_ACK)
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(sit.Attrs().Index)
	req.AddData(msg)
	info := nl.NewRtAttr(unix.IFLA_LINKINFO, nil)
	info.AddRtAttr(nl.IFLA_INFO_KIND, nl.NonZeroTerminated("sit"))
	data := info.AddRtAttr(nl.IFLA_INFO_DATA, nil)
	data.AddRtAttr(nl.IFLA_IPTUN_LINK, nl.Uint32Attr(sit.Link))
	l4 := local.As4()
	data.AddRtAttr(nl.IFLA_IPTUN_LOCAL, l4[:])
	if ip := sit.Remote.To4(); ip != nil {
		data.AddRtAttr(nl.IFLA_IPTUN_REMOTE, []byte(ip))
	}
	data.AddRtAttr(nl.IFLA_IPTUN_TTL, nl.Uint8Attr(sit.Ttl))
	data.AddRtAttr(nl.IFLA_IPTUN_TOS, nl.Uint8Attr(sit.Tos))
	data.AddRtAttr(nl.IFLA_IPTUN_PMTUDISC, nl.Uint8Attr(sit.PMtuDisc))
	data.AddRtAttr(nl.IFLA_IPTUN_PROTO, nl.Uint8Attr(sit.Proto))
	pfx := prefix.Addr().As16()
	data.AddRtAttr(nl.IFLA_IPTUN_6RD_PREFIX, pfx[:])
	relay := relayPrefix.Addr().As4()
	data.AddRtAttr(nl.IFLA_IPTUN_6RD_RELAY_PREFIX, relay[:])
	data.AddRtAttr(nl.IFLA_IPTUN_6RD_PREFIXLEN, nl.Uint16Attr(uint16(prefix.Bits())))
	data.AddRtAttr(nl.IFLA_IPTUN_6RD_RELAY_PREFIXLEN, nl.Uint16Attr(uint16(relayPrefix.Bits())))
	req.AddData(info)
	_, err := req.Execute(unix.NETLINK_ROUTE, 0)
	return err
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
