// Package reconcile keeps conntrack honest after a route change, letting
// the kernel find the flows: every connection that leaves by an ISP link
// carries the link's outbound mark (package connmark), so the flows one
// link NATed are one filtered request away, however large the table.
//
// Conntrack remembers each flow's SNAT mapping. When a link loses the
// default, or a preferred one takes it back, the flows NATed to the other
// link would leave by the new one with the wrong source (the egress guard
// drops them, but they stay stuck until their entry goes). Flushing every
// NATed entry, as the seed recipe does, also kills the healthy link's
// flows; deleting by mark does not, and costs one pass of the kernel over
// its table instead of a dump to user space and a delete per entry.
//
// IPv6 flows are NATed only by NPTv6 (snat-from on an inet6 stanza): the
// rest keep their own source, which no delete could move to another link.
//
// What stays: a link's inbound connections (their own mark), its un-NATed
// flows (the router's own, from the link's address, which the `from` rules
// still route by it), and the flows of an isp-sticky link, whose `fwmark`
// rule keeps them on it.
//
// Needs Linux 5.15 or later (flush filtered by mark and status).
package reconcile

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/ti-mo/conntrack"
	"github.com/ti-mo/netfilter"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ifisp/ifisp/pkg/connmark"
	"github.com/ifisp/ifisp/pkg/policy"
	"github.com/ifisp/ifisp/pkg/registry"
	"github.com/ifisp/ifisp/pkg/stanza"
)

// Conn is what reconcile asks of ctnetlink: a *conntrack.Conn.
type Conn interface {
	FlushFilter(conntrack.Filter) error
	DumpFilter(conntrack.Filter, *conntrack.DumpOptions) ([]conntrack.Flow, error)
	Delete(conntrack.Flow) error
}

// Link is an ISP link of one family as reconcile sees it.
type Link struct {
	Iface  string
	Family stanza.Family
	Index  int // interface index
	Mark   connmark.Mark
	Sticky bool // isp-sticky: its NATed flows stay when another link takes the default
}

// Registered returns the links in ifisp-watch's registry (package
// registry) whose interface exists: the links that are up.
func Registered(h *netlink.Handle) ([]Link, error) {
	regs, err := registry.List()
	if err != nil {
		return nil, fmt.Errorf("reading the registry: %w", err)
	}
	var links []Link
	for _, r := range regs {
		if nl, err := h.LinkByName(r.Iface); err == nil {
			links = append(links, Link{Iface: r.Iface, Family: r.Family, Index: nl.Attrs().Index, Mark: r.Mark, Sticky: r.Sticky})
		}
	}
	return links, nil
}

// Left deletes the flows NATed to l, in one request: run once l's
// main-table default is gone (if-down.d, or ifisp-watch withdrew it).
func Left(ct Conn, l Link) error {
	if err := ct.FlushFilter(natted(l)); err != nil {
		return fmt.Errorf("deleting the conntrack entries NATed to %s (mark %s/%s): %w", l.Iface, connmark.Hex(l.Mark.Out()), connmark.Hex(l.Mark.Mask), err)
	}
	return nil
}

// Took runs once l's main-table default is in (if-up.d, or ifisp-watch
// restored it). When l is not the preferred default of its family now, no
// flow moved and it does nothing. When it is, the flows NATed to each of
// the others of the family now route by l: they are deleted, one request
// per link (a sticky link's stay).
func Took(h *netlink.Handle, ct Conn, l Link, others []Link) error {
	pref, err := policy.Preferred(h, l.Family)
	if err != nil || pref != l.Index {
		return err
	}
	var errs []error
	for _, o := range others {
		if o.Family == l.Family && o.Index != l.Index && !o.Sticky {
			errs = append(errs, Left(ct, o))
		}
	}
	return errors.Join(errs...)
}

// natted filters the flows of l's family that left by l and were
// source-NATed (SNAT, or NPTv6).
func natted(l Link) conntrack.Filter {
	return outbound(l).Status(conntrack.StatusSrcNAT)
}

// outbound filters the flows of l's family that left by l.
func outbound(l Link) conntrack.Filter {
	proto := netfilter.ProtoIPv4
	if l.Family == stanza.Inet6 {
		proto = netfilter.ProtoIPv6
	}
	return conntrack.NewFilter().Family(proto).Mark(l.Mark.Out()).MarkMask(l.Mark.Mask)
}

// Strays deletes l's flows whose source on the wire is not one of l's (its
// addresses, its `from` rules' prefixes), and returns how many: un-NATed
// flows from another source, and flows NATed to an address l no longer
// has. Only a link whose address the kernel learns (inet dhcp, ppp) can
// have them: a flow that left by it before if-up.d installed its SNAT rule
// carries no mapping and never would, and one NATed to the address of the
// lease before carries that forever, which the egress guard now drops.
// Any other link's SNAT rules are in from if-pre-up.d on, and sparing it
// this call spares a walk of the whole conntrack table.
func Strays(h *netlink.Handle, ct Conn, l Link) (int, error) {
	wans, err := policy.ReadWANs(h)
	if err != nil {
		return 0, err
	}
	flows, err := Dump(ct, outbound(l))
	if err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	for _, f := range flows {
		src := f.TupleOrig.IP.SourceAddress
		if f.Status.SrcNAT() {
			src = f.TupleReply.IP.DestinationAddress
		}
		if owns(wans[l.Index], src) {
			continue
		}
		if err := ct.Delete(f); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, err)
			continue
		}
		n++
	}
	if err := errors.Join(errs...); err != nil {
		return n, fmt.Errorf("deleting conntrack entries of %s with another source: %w", l.Iface, err)
	}
	return n, nil
}

func owns(own []netip.Prefix, a netip.Addr) bool {
	for _, p := range own {
		if p.Contains(a.Unmap()) {
			return true
		}
	}
	return false
}

// Dump reads the flows filter selects, again if the kernel interrupted the
// dump (the table changed under it) or ran out of buffer.
func Dump(ct Conn, filter conntrack.Filter) ([]conntrack.Flow, error) {
	var err error
	for range 5 {
		var flows []conntrack.Flow
		if flows, err = ct.DumpFilter(filter, nil); err == nil {
			return flows, nil
		}
		if !errors.Is(err, unix.EINTR) && !errors.Is(err, unix.EBUSY) && !errors.Is(err, unix.ENOBUFS) {
			break
		}
	}
	return nil, fmt.Errorf("dumping the conntrack table: %w", err)
}

// Dial opens a ctnetlink connection in the current network namespace.
func Dial() (*conntrack.Conn, error) {
	ct, err := conntrack.Dial(nil)
	if err != nil {
		return nil, fmt.Errorf("opening ctnetlink (needs root and the nfnetlink module): %w", err)
	}
	return ct, nil
}
