package policy

import (
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// WANs maps each WAN's interface index to the sources that may leave by it.
type WANs map[int][]netip.Prefix

// ReadWANs reads, from the kernel alone, which interfaces are WANs and
// which sources belong to each: a WAN is the device of one of ifisp's
// default routes in an ISP table; its sources are its own addresses and
// the prefixes of ifisp's `from` rules into that table. So a hook of one
// link knows every link without reading their stanzas.
func ReadWANs(h *netlink.Handle) (WANs, error) {
	wans := WANs{}
	for _, family := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		routes, err := Retry(func() ([]netlink.Route, error) {
			return h.RouteListFiltered(family, &netlink.Route{Table: unix.RT_TABLE_UNSPEC, Protocol: Protocol},
				netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
		})
		if err != nil {
			return nil, fmt.Errorf("listing ifisp's routes: %w", err)
		}
		rules, err := Retry(func() ([]netlink.Rule, error) { return h.RuleList(family) })
		if err != nil {
			return nil, fmt.Errorf("listing rules: %w", err)
		}
		for _, r := range routes {
			if r.Table == unix.RT_TABLE_MAIN || r.LinkIndex == 0 || !isDefault(r.Dst) {
				continue
			}
			if _, seen := wans[r.LinkIndex]; !seen {
				link, err := h.LinkByIndex(r.LinkIndex)
				if err != nil {
					continue // gone meanwhile
				}
				addrs, err := Retry(func() ([]netlink.Addr, error) { return h.AddrList(link, netlink.FAMILY_ALL) })
				if err != nil {
					return nil, fmt.Errorf("%s: listing addresses: %w", link.Attrs().Name, err)
				}
				wans[r.LinkIndex] = []netip.Prefix{}
				for _, a := range addrs {
					if ip, ok := fromIP(a.IP); ok {
						wans[r.LinkIndex] = append(wans[r.LinkIndex], netip.PrefixFrom(ip, ip.BitLen()))
					}
				}
			}
			for _, rule := range rules {
				if rule.Protocol == Protocol && rule.Table == r.Table && rule.Src != nil {
					if p := prefixOf(rule.Src); p.IsValid() {
						wans[r.LinkIndex] = append(wans[r.LinkIndex], p)
					}
				}
			}
		}
	}
	return wans, nil
}
