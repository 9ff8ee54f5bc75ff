// Package converge keeps the kernel equal to the links' plans. The
// registry records what each up link should have (its rules and ISP-table
// routes, its iptables chains, its LAN address); Diff compares that with
// what the kernel has, piece by piece, and Repair adds what is missing.
// `ifisp status` shows the diff, `ifisp sync` and ifisp-watch repair it,
// all under the run directory's lock that the hooks hold too.
//
// Repair only adds: what another tool deleted comes back, and nothing of
// anyone else's is removed. The main-table defaults are not part of a
// plan: the health monitor withdraws and restores them.
package converge

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/ifisp/ifisp/pkg/lan"
	"github.com/ifisp/ifisp/pkg/nat"
	"github.com/ifisp/ifisp/pkg/policy"
	"github.com/ifisp/ifisp/pkg/registry"
	"github.com/ifisp/ifisp/pkg/stanza"
)

// Piece is one difference between a link's plan and the kernel.
type Piece struct {
	// Link is the link's key, "wana inet".
	Link string `json:"link"`
	// Missing says the plan has the piece and the kernel does not;
	// otherwise the kernel has it among ifisp's own and no plan does
	// (foreign).
	Missing bool `json:"missing"`
	// Kind is "rule", "route", "address" or "iptables".
	Kind string `json:"kind"`
	// What is the piece as the command that adds it takes it: `ip rule
	// add`'s arguments for a rule, iptables' for an iptables rule
	// ("-t nat -A POSTROUTING -m comment --comment ifisp -j IFISP-SNAT").
	What string `json:"what"`
}

// String writes p on one line: "wana inet: missing rule from 192.0.2.2
// lookup 100 pref 10000".
func (p Piece) String() string {
	how := "foreign"
	if p.Missing {
		how = "missing"
	}
	return fmt.Sprintf("%s: %s %s %s", p.Link, how, p.Kind, p.What)
}

// Backends returns the iptables backend of a family.
type Backends func(stanza.Family) (nat.Backend, error)

// Exec is the iptables-save/-restore of each family.
func Exec(f stanza.Family) (nat.Backend, error) { return nat.NewExec(f) }

// Diff compares every link in links (the registry's up links) with the
// kernel, and lists the differences, link by link.
func Diff(h *netlink.Handle, backends Backends, links []registry.Link) ([]Piece, error) {
	var all []Piece
	var errs []error
	k := kernel{h: h, backends: backends, routing: map[stanza.Family]*policy.Kernel{}}
	for _, l := range links {
		d, err := k.diff(l, links)
		all = append(all, d.pieces(l.Key())...)
		errs = append(errs, err)
	}
	return all, errors.Join(errs...)
}

// Repair adds what of each link's plan the kernel lacks, and returns what
// it found missing. Each link is repaired on its own: one that fails (its
// interface gone, say) does not keep the others from being repaired.
//
// When it repaired any link, the links it found whole are compared once
// more: a reload that lands between two links' diffs (nftables.service's
// `flush ruleset` takes every link's chains at once) would otherwise leave
// those diffed before it broken until the next change is heard, with the
// repair already counted. The links it repaired are not looked at again:
// a tool that deletes as fast as ifisp adds is the monitor's back-off's.
func Repair(h *netlink.Handle, backends Backends, links []registry.Link) ([]Piece, error) {
	repaired, whole, err := repairRound(h, backends, links)
	if len(repaired) == 0 || len(whole) == 0 {
		return repaired, err
	}
	again, _, err2 := repairRound(h, backends, whole)
	return append(repaired, again...), errors.Join(err, err2)
}

// repairRound is one diff and repair of links; whole are those it found
// nothing missing of.
func repairRound(h *netlink.Handle, backends Backends, links []registry.Link) (repaired []Piece, whole []registry.Link, err error) {
	var errs []error
	k := kernel{h: h, backends: backends, routing: map[stanza.Family]*policy.Kernel{}}
	for _, l := range links {
		if has, err := k.hasAddress(l); err != nil || !has {
			// dhclient-script has taken the lease's address away and is
			// about to add the next, or ifdown is under way: the link's
			// hook brings its plan to the new address; its old routes
			// would not go back in anyway.
			errs = append(errs, err)
			continue
		}
		d, err := k.diff(l, links)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if err := k.repair(l, d); err != nil {
			errs = append(errs, err)
		}
		missing := Missing(d.pieces(l.Key()))
		if len(missing) == 0 {
			whole = append(whole, l)
		}
		repaired = append(repaired, missing...)
	}
	return repaired, whole, errors.Join(errs...)
}

// Missing is the pieces of list that are missing.
func Missing(list []Piece) []Piece {
	var m []Piece
	for _, p := range list {
		if p.Missing {
			m = append(m, p)
		}
	}
	return m
}

// Summary names pieces on one line, for a log, link by link, the first
// few of each in full: "wana inet: missing iptables -t nat -A POSTROUTING
// -m comment --comment ifisp -j IFISP-SNAT; wanb inet: 31 pieces: ...".
func Summary(pieces []Piece) string {
	const shown = 3
	var s []string
	for i := 0; i < len(pieces); {
		j := i
		for j < len(pieces) && pieces[j].Link == pieces[i].Link {
			j++
		}
		if j-i == 1 {
			s = append(s, pieces[i].String())
			i = j
			continue
		}
		var what []string
		for _, p := range pieces[i:min(j, i+shown)] {
			what = append(what, strings.TrimPrefix(p.String(), p.Link+": "))
		}
		if j-i > shown {
			what = append(what, fmt.Sprintf("and %d more (ifisp status lists them)", j-i-shown))
		}
		s = append(s, fmt.Sprintf("%s: %d pieces: %s", pieces[i].Link, j-i, strings.Join(what, ", ")))
		i = j
	}
	return strings.Join(s, "; ")
}

// kernel reads the kernel once per family for a round of diffs.
type kernel struct {
	h        *netlink.Handle
	backends Backends
	routing  map[stanza.Family]*policy.Kernel
}

// diff is one link's differences.
type diff struct {
	routing, stale       policy.Plan
	chainsMissing, extra []string
	address              *lan.Published // the LAN address, when missing
}

func (d diff) pieces(key string) []Piece {
	var p []Piece
	add := func(missing bool, kind, what string) {
		p = append(p, Piece{Link: key, Missing: missing, Kind: kind, What: what})
	}
	for _, r := range d.routing.Routes {
		add(true, "route", r.String())
	}
	for _, r := range d.routing.Rules {
		add(true, "rule", r.String())
	}
	if d.address != nil {
		add(true, "address", d.address.Address.String()+" dev "+d.address.Dev)
	}
	for _, r := range d.chainsMissing {
		add(true, "iptables", r)
	}
	for _, r := range d.stale.Routes {
		add(false, "route", r.String())
	}
	for _, r := range d.stale.Rules {
		add(false, "rule", r.String())
	}
	for _, r := range d.extra {
		add(false, "iptables", r)
	}
	return p
}

// diff compares l's plan with the kernel; links are all the up links,
// whose plans say which of ifisp's pieces are foreign.
func (k *kernel) diff(l registry.Link, links []registry.Link) (diff, error) {
	var d diff
	kr, err := k.readRouting(l.Family, links)
	if err != nil {
		return d, err
	}
	d.routing = l.Routing.Missing(kr)
	d.stale = l.Routing.Stale(kr, registry.Plans(links)...)
	if a := l.LANAddress; a != nil {
		has, err := lan.Has(k.h, *a)
		if err != nil {
			return d, fmt.Errorf("%s: %w", l.Iface, err)
		}
		if !has {
			d.address = a
		}
	}
	if l.Chains != nil {
		b, err := k.backends(l.Family)
		if err != nil {
			return d, fmt.Errorf("%s: %w", l.Iface, err)
		}
		if d.chainsMissing, d.extra, err = nat.Diff(b, *l.Chains); err != nil {
			return d, err
		}
	}
	return d, nil
}

// hasAddress says whether l's own address is on an interface: a link
// without is between two leases. A 6rd link's address is the one ifisp
// numbered (its lan_address), which is the repair's to put back.
func (k *kernel) hasAddress(l registry.Link) (bool, error) {
	if !l.Address.IsValid() || l.LANAddress != nil && l.LANAddress.Address.Addr() == l.Address {
		return true, nil // none, or ifisp's own (a 6rd link's), which the repair puts back
	}
	addrs, err := policy.Retry(func() ([]netlink.Addr, error) { return k.h.AddrList(nil, policy.NetlinkFamily(l.Family)) })
	if err != nil {
		return false, fmt.Errorf("%s: listing addresses: %w", l.Iface, err)
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == l.Address {
			return true, nil
		}
	}
	return false, nil
}

// readRouting dumps ifisp's rules and routes of f, once per round.
func (k *kernel) readRouting(f stanza.Family, links []registry.Link) (*policy.Kernel, error) {
	if kr, ok := k.routing[f]; ok {
		return kr, nil
	}
	var tables []int
	for _, l := range links {
		if l.Family == f && l.Table != 0 {
			tables = append(tables, l.Table)
		}
	}
	kr, err := policy.ReadKernel(k.h, f, tables)
	if err != nil {
		return nil, err
	}
	k.routing[f] = kr
	return kr, nil
}

// repair adds what d found missing of l's plan.
func (k *kernel) repair(l registry.Link, d diff) error {
	var errs []error
	if d.address != nil {
		errs = append(errs, lan.Add(k.h, l.Iface, *d.address))
	}
	if !d.routing.Empty() {
		errs = append(errs, policy.Apply(k.h, l.Iface, d.routing, policy.Plan{}))
		delete(k.routing, l.Family) // the next link's diff reads it again
	}
	if len(d.chainsMissing) > 0 || slices.ContainsFunc(d.extra, func(s string) bool { return strings.HasSuffix(s, "out of order") }) {
		b, err := k.backends(l.Family)
		if err == nil {
			err = nat.Apply(b, *l.Chains)
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
