package policy

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ifisp/ifisp/pkg/stanza"
)

// Default is one main-table default route through a link, as ifup left it:
// ifisp's own isp-metric default or ifupdown's `gateway` route. It is what
// the health monitor withdraws from a dead link and puts back, field for
// field, when the link heals.
type Default struct {
	Gateway  netip.Addr `json:"gateway"`          // invalid for a route without one (`default dev ppp0`)
	Metric   int        `json:"metric"`           // as the kernel stores it
	Protocol int        `json:"protocol"`         // 71 for ifisp's, 3 (boot) for ifupdown's
	OnLink   bool       `json:"onlink,omitempty"` // ifupdown adds its gateway route onlink
}

// String reads like `ip route`.
func (d Default) String() string {
	s := "default"
	if d.Gateway.IsValid() {
		s += " via " + d.Gateway.String()
	}
	return fmt.Sprintf("%s metric %d proto %d", s, d.Metric, d.Protocol)
}

// MainDefaults returns the main-table default routes of family f through
// the interface with index ifindex.
func MainDefaults(h *netlink.Handle, ifindex int, f stanza.Family) ([]Default, error) {
	routes, err := mainDefaults(h, ifindex, f)
	if err != nil {
		return nil, err
	}
	list := make([]Default, 0, len(routes))
	for _, r := range routes {
		list = append(list, defaultOf(&r))
	}
	return list, nil
}

// RemoveDefaults deletes, of the main-table defaults through ifindex, those
// in want, and returns how many it deleted; what is already gone is fine.
func RemoveDefaults(h *netlink.Handle, ifindex int, f stanza.Family, want []Default) (int, error) {
	routes, err := mainDefaults(h, ifindex, f)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, r := range routes {
		if !containsDefault(want, defaultOf(&r)) {
			continue
		}
		if err := routeDel(h, &r); err != nil {
			return n, fmt.Errorf("withdrawing main-table %s: %w", defaultOf(&r), err)
		}
		n++
	}
	return n, nil
}

// AddDefaults adds those of want that the main table lacks through ifindex,
// as they were, and returns how many it added: running it twice adds
// nothing the second time.
func AddDefaults(h *netlink.Handle, ifindex int, f stanza.Family, want []Default) (int, error) {
	have, err := MainDefaults(h, ifindex, f)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, d := range want {
		if containsDefault(have, d) {
			continue
		}
		if err := h.RouteAdd(d.route(f, ifindex)); err != nil && !errors.Is(err, unix.EEXIST) {
			return n, fmt.Errorf("restoring main-table %s: %w", d, err)
		}
		n++
	}
	return n, nil
}

// route is d as a main-table route through ifindex.
func (d Default) route(f stanza.Family, ifindex int) *netlink.Route {
	r := &netlink.Route{
		Family:    NetlinkFamily(f),
		Dst:       defaultDst(f),
		Gw:        d.Gateway.AsSlice(),
		LinkIndex: ifindex,
		Table:     unix.RT_TABLE_MAIN,
		Type:      unix.RTN_UNICAST,
		Protocol:  netlink.RouteProtocol(d.Protocol),
		Priority:  d.Metric,
	}
	if d.OnLink {
		r.Flags = int(netlink.FLAG_ONLINK)
	}
	return r
}

// mainDefaults lists the main table's default routes of family f through
// the interface ifindex.
func mainDefaults(h *netlink.Handle, ifindex int, f stanza.Family) ([]netlink.Route, error) {
	routes, err := Retry(func() ([]netlink.Route, error) {
		return h.RouteListFiltered(NetlinkFamily(f), &netlink.Route{Table: unix.RT_TABLE_MAIN, LinkIndex: ifindex}, netlink.RT_FILTER_TABLE|netlink.RT_FILTER_OIF)
	})
	if err != nil {
		return nil, fmt.Errorf("listing the main table: %w", err)
	}
	var defaults []netlink.Route
	for _, r := range routes {
		if isDefault(r.Dst) {
			defaults = append(defaults, r)
		}
	}
	return defaults, nil
}

// Preferred returns the interface of the main table's default route of
// family f that wins, the one of the lowest metric; 0 when there is none.
func Preferred(h *netlink.Handle, f stanza.Family) (int, error) {
	routes, err := Retry(func() ([]netlink.Route, error) {
		return h.RouteListFiltered(NetlinkFamily(f), &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return 0, fmt.Errorf("listing the main table: %w", err)
	}
	index, metric := 0, -1
	for _, r := range routes {
		if isDefault(r.Dst) && (metric < 0 || r.Priority < metric) {
			index, metric = r.LinkIndex, r.Priority
		}
	}
	return index, nil
}

// defaultOf is the Default a kernel route is.
func defaultOf(r *netlink.Route) Default {
	gw, _ := fromIP(r.Gw)
	return Default{Gateway: gw, Metric: r.Priority, Protocol: int(r.Protocol), OnLink: r.Flags&int(netlink.FLAG_ONLINK) != 0}
}

// containsDefault reports whether list has a route the same as d as far as
// the kernel is concerned: the gateway and the metric make a default unique
// on a link.
func containsDefault(list []Default, d Default) bool {
	for _, o := range list {
		if o.Gateway == d.Gateway && o.Metric == d.Metric {
			return true
		}
	}
	return false
}

// NetlinkFamily returns the netlink family constant of f.
func NetlinkFamily(f stanza.Family) int {
	if f == stanza.Inet6 {
		return netlink.FAMILY_V6
	}
	return netlink.FAMILY_V4
}
