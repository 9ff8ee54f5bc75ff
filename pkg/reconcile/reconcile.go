// Package reconcile keeps conntrack honest after a route change: it deletes
// exactly the entries whose source on the wire (their SNAT address, or
// their own source when not NATed) does not belong to the WAN that routing
// now picks for them, and leaves every other entry alone.
//
// Conntrack remembers each flow's SNAT mapping. When a link goes away or
// the preferred one comes back, the flows keep their old source and would
// leave by the new link spoofed (the egress guard drops them, but they stay
// stuck until their entry goes). Flushing every NATed entry, as the seed
// recipe does, also kills the healthy link's flows; reconciling does not.
//
// Everything is derived from the kernel, so the hook of one link needs no
// configuration of the others: the WANs are the devices of ifisp's default
// routes (protocol policy.Protocol) in the ISP tables, and a WAN's own
// sources are its addresses plus the prefixes of ifisp's `from` rules that
// look up its table.
package reconcile

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/ti-mo/conntrack"
	"github.com/ti-mo/netfilter"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ifisp/ifisp/pkg/policy"
)

// Stats says what one reconcile did.
type Stats struct {
	Checked int // entries looked at
	Deleted int // entries deleted
}

// Dumper reads the conntrack table: a *conntrack.Conn.
type Dumper interface {
	DumpFilter(filter conntrack.Filter, opts *conntrack.DumpOptions) ([]conntrack.Flow, error)
}

// Remover deletes conntrack entries: a *Deleter.
type Remover interface {
	Delete(flows []conntrack.Flow) (int, error)
}

// Run reconciles the IPv4 conntrack entries of the namespace ct, del and h
// are opened in (NAT is IPv4's; the kernel filters the dump, Linux 4.20 or
// later).
func Run(ct Dumper, del Remover, h *netlink.Handle) (Stats, error) {
	wans, err := policy.ReadWANs(h)
	if err != nil {
		return Stats{}, err
	}
	flows, err := dump(ct)
	if err != nil {
		return Stats{}, err
	}
	r := &router{h: h, cache: map[[2]netip.Addr]route{}}
	if r.local, err = policy.LocalAddrs(h); err != nil {
		return Stats{}, err
	}
	var gone []conntrack.Flow
	for _, f := range flows {
		if stale(f, wans, r.route) {
			gone = append(gone, f)
		}
	}
	deleted, err := del.Delete(gone)
	return Stats{Checked: len(flows), Deleted: deleted}, err
}

// Now reconciles the conntrack table of the current network namespace
// against h's routing, on conntrack connections of its own: what the hook
// and the health monitor do after they changed routes.
func Now(h *netlink.Handle) (Stats, error) {
	ct, err := conntrack.Dial(nil)
	if err != nil {
		return Stats{}, fmt.Errorf("opening ctnetlink (needs root and the nfnetlink module): %w", err)
	}
	defer ct.Close()
	del, err := DialDeleter(nil)
	if err != nil {
		return Stats{}, err // it says what it opened
	}
	defer del.Close()
	return Run(ct, del, h)
}

// route is where routing sends one flow's original direction now.
type route struct {
	oif   int
	local bool // the destination is the router's own (inbound)
	ok    bool // false: no route
}

// stale reports whether f's source on the wire does not belong to the WAN
// routing now picks for it. Inbound flows (to the router, port forwards
// included), flows routed to no WAN, and flows without a route are never
// stale.
func stale(f conntrack.Flow, wans policy.WANs, lookup func(src, dst netip.Addr) route) bool {
	src, dst := f.TupleOrig.IP.SourceAddress, f.TupleOrig.IP.DestinationAddress
	r := lookup(src, dst)
	if !r.ok || r.local {
		return false
	}
	own, isWAN := wans[r.oif]
	if !isWAN {
		return false
	}
	wire := src
	if f.Status.SrcNAT() {
		wire = f.TupleReply.IP.DestinationAddress
	}
	for _, p := range own {
		if p.Contains(wire) {
			return false
		}
	}
	return true
}

// dump reads the IPv4 conntrack table, again if the kernel interrupted the
// dump (the table changed under it) or ran out of buffer.
func dump(ct Dumper) ([]conntrack.Flow, error) {
	var err error
	for range 5 {
		var flows []conntrack.Flow
		if flows, err = ct.DumpFilter(conntrack.NewFilter().Family(netfilter.ProtoIPv4), nil); err == nil {
			return flows, nil
		}
		if !errors.Is(err, unix.EINTR) && !errors.Is(err, unix.EBUSY) && !errors.Is(err, unix.ENOBUFS) {
			break
		}
	}
	return nil, fmt.Errorf("dumping the conntrack table: %w", err)
}

// router asks the kernel where a flow goes, once per source and
// destination.
type router struct {
	h     *netlink.Handle
	local map[netip.Addr]bool
	cache map[[2]netip.Addr]route
}

func (r *router) route(src, dst netip.Addr) route {
	key := [2]netip.Addr{src, dst}
	if rt, ok := r.cache[key]; ok {
		return rt
	}
	opts := &netlink.RouteGetOptions{SrcAddr: src.AsSlice()}
	if !r.local[src] {
		// A forwarded flow: look it up as the kernel would for a
		// packet arriving from elsewhere (needs ip_forward, which a
		// router has).
		opts.Iif = "lo"
	}
	var rt route
	if routes, err := r.h.RouteGetWithOptions(dst.AsSlice(), opts); err == nil && len(routes) > 0 {
		rt = route{oif: routes[0].LinkIndex, local: routes[0].Type == unix.RTN_LOCAL || r.local[dst], ok: true}
	}
	r.cache[key] = rt
	return rt
}
