// Package lan numbers a LAN interface from an ISP's IPv6 prefix, as a
// stanza's isp-lan (6rd-lan on a 6rd tunnel) asks: the /64 it gets, the
// router's ::1 there, the throw route that keeps traffic to that /64 on the
// LAN, and the record in the run directory of the address ifisp added, so
// that down removes exactly what up added even when the prefix was computed
// (6rd) or the stanza was edited meanwhile. The native route hook and the
// 6rd hook both use it.
package lan

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ifisp/ifisp/pkg/sixrd"
	"github.com/ifisp/ifisp/pkg/stanza"
)

// Subnet is the /64 of an ISP's prefix that a LAN interface gets.
type Subnet struct {
	Iface  string       `json:"iface"`
	Prefix netip.Prefix `json:"prefix"`
}

// Address is the router's address in the subnet: ::1, with the /64.
func (s Subnet) Address() netip.Prefix {
	return netip.PrefixFrom(sixrd.LANAddr(s.Prefix), 64)
}

// Plan returns the /64 that c's isp-lan numbers from parent: the ISP's
// prefix, an isp-source prefix or the delegated 6rd prefix.
func Plan(c *stanza.Config, parent netip.Prefix) (Subnet, error) {
	p, err := sixrd.Subnet(parent, c.LAN.Subnet)
	if err != nil {
		return Subnet{}, fmt.Errorf("%s: %s %s: %w", c.Iface, c.LAN.Option, c.LAN.Value, err)
	}
	return Subnet{Iface: c.LAN.Iface, Prefix: p}, nil
}

// Native returns the subnet of a native inet6 stanza's isp-lan, from its
// first isp-source prefix of /64 or shorter (its delegated prefix); ok is
// false without isp-lan, or while no prefix is delegated.
func Native(c *stanza.Config) (s Subnet, ok bool, err error) {
	if c.LAN == nil || c.SixRD != nil {
		return Subnet{}, false, nil
	}
	parent, found := c.LANParent()
	if !found && c.Delegation {
		return Subnet{}, false, nil // no prefix delegated yet: no LAN to number
	}
	if !found { // stanza.Parse refuses this: a Config made by hand
		return Subnet{}, false, stanza.Errorf(c.Iface, c.LAN.Option, c.LAN.Value, "no IPv6 isp-source prefix of /64 or shorter to number the LAN from")
	}
	s, err = Plan(c, parent)
	return s, err == nil, err
}

// Routed returns a copy of c whose ISP table also throws the subnet back
// to the main table: the router's own packets from its LAN address (ping
// replies, DNS answers) and LAN traffic that the ISP's `from` rule catches
// must reach the LAN, not the ISP.
func Routed(c *stanza.Config, s Subnet) *stanza.Config {
	routed := *c
	routed.Throw = append(append([]netip.Prefix(nil), c.Throw...), s.Prefix)
	return &routed
}

// Check makes sure the interface isp-lan (6rd-lan) names exists: the
// check of if-pre-up.d, before ifupdown changes anything.
func Check(h *netlink.Handle, c *stanza.Config) error {
	if c.LAN == nil {
		return nil
	}
	if _, err := h.LinkByName(c.LAN.Iface); err != nil {
		return NoInterface(c, c.LAN.Option, c.LAN.Iface)
	}
	return nil
}

// NoInterface is the problem of an option that names a missing interface.
func NoInterface(c *stanza.Config, option, iface string) error {
	return stanza.Errorf(c.Iface, option, iface, "no such interface (fix the name, or bring the interface up before this stanza)")
}

// Published is an address ifisp numbered from an ISP's prefix, as the
// registry records it: the prefix
// it came from, the address and the interface it is on.
type Published struct {
	Prefix  netip.Prefix `json:"prefix"`
	Address netip.Prefix `json:"address"`
	Dev     string       `json:"dev"`
	// Theirs says the address was on the interface before ifisp's first
	// run (the LAN stanza's own, say): down leaves it there.
	Theirs bool `json:"theirs,omitempty"`
}

// Claim settles whose p's address is before ifisp adds it: an address
// that is on the interface already, and not by an earlier run of ifisp's
// (old, what was recorded, nil for nothing), is theirs.
func Claim(h *netlink.Handle, iface string, old *Published, p Published) (Published, error) {
	if old != nil && old.Dev == p.Dev && old.Address == p.Address {
		p.Theirs = old.Theirs // a re-run: the first settled whose it is
		return p, nil
	}
	have, err := Has(h, p)
	if err != nil {
		return p, fmt.Errorf("%s: %w", iface, err)
	}
	p.Theirs = have
	return p, nil
}

// Has says whether p's address is on its interface.
func Has(h *netlink.Handle, p Published) (bool, error) {
	link, err := h.LinkByName(p.Dev)
	if err != nil {
		return false, fmt.Errorf("%s: no such interface for %s (bring it up before this stanza)", p.Dev, p.Address)
	}
	addrs, err := h.AddrList(link, netlink.FAMILY_V6)
	if err != nil {
		return false, fmt.Errorf("listing the addresses of %s: %w", p.Dev, err)
	}
	return slices.ContainsFunc(addrs, func(a netlink.Addr) bool { return prefixOf(a.IPNet) == p.Address }), nil
}

// Add puts p's address on its interface, replacing it in place if it is
// there.
func Add(h *netlink.Handle, iface string, p Published) error {
	link, err := h.LinkByName(p.Dev)
	if err != nil {
		return fmt.Errorf("%s: %s: no such interface for %s (bring it up before this stanza)", iface, p.Dev, p.Address)
	}
	if err := h.AddrReplace(link, &netlink.Addr{IPNet: ipNet(p.Address)}); err != nil {
		return fmt.Errorf("%s: adding %s to %s: %w", iface, p.Address, p.Dev, err)
	}
	return nil
}

// Remove takes p's address off its interface (when the interface is still
// there, and the address is not theirs).
func Remove(h *netlink.Handle, iface string, p Published) error {
	if link, err := h.LinkByName(p.Dev); err == nil && p.Address.IsValid() && !p.Theirs {
		if err := h.AddrDel(link, &netlink.Addr{IPNet: ipNet(p.Address)}); err != nil &&
			!errors.Is(err, unix.EADDRNOTAVAIL) && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("%s: removing %s from %s: %w", iface, p.Address, p.Dev, err)
		}
	}
	return nil
}

// prefixOf is an address with its prefix length as netip sees it.
func prefixOf(n *net.IPNet) netip.Prefix {
	a, _ := netip.AddrFromSlice(n.IP)
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones)
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
