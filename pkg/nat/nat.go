// Package nat installs and removes a WAN's SNAT rules and its egress guard,
// in iptables chains of ifisp's own. Like kube-proxy, it reads a table once
// (iptables-save), computes the rules it wants as data (Ruleset), and
// applies the difference in one `iptables-restore --noflush` transaction per
// table: a rule set is never half-applied, the administrator's rules are
// never touched, and a hook run costs a few processes, not one per rule.
//
// Each WAN gets one chain per job, jumped to from one top chain per table:
//
//	nat    POSTROUTING -> IFISP-SNAT  -> IFISP-SNAT-<iface>   SNAT for snat-from
//	filter FORWARD, OUTPUT -> IFISP-GUARD -> IFISP-GUARD-<iface>   egress guard
//
// The egress guard drops, at the router, any packet about to leave a WAN
// with a source that is not that WAN's. For IPv4 the source on the wire is
// decided by NAT after the filter table, so the guard asks conntrack: a flow
// may leave by the WAN when its reply would come back to one of the WAN's
// addresses (its SNAT address, or its own source when not NATed), or, for
// the first packet of a new flow from a snat-from range, when SNAT is about
// to map it to the WAN. For IPv6 there is no NAT and the guard checks the
// source itself. The guard is what keeps a spoofed packet off the wire in
// the milliseconds between a route change and the conntrack reconcile.
//
// The rules are written exactly as iptables-save prints them, so that an
// unchanged chain is recognised as unchanged and left alone.
package nat

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/ifisp/ifisp/pkg/stanza"
)

// Chain names. Per-interface chains add "-" and the interface name (at most
// 15 characters, so at most 27 in all, within iptables' 28).
const (
	SNATChain  = "IFISP-SNAT"
	GuardChain = "IFISP-GUARD"
)

// Link is what the rules are made from: the stanza and its address (the
// stanza's, or the kernel's for dhcp).
type Link struct {
	Config  *stanza.Config
	Address netip.Addr
}

// own returns the prefixes whose sources may leave by the link: its
// address, snat-to and the isp-source prefixes.
func (l *Link) own() []netip.Prefix {
	c := l.Config
	own := []netip.Prefix{netip.PrefixFrom(l.Address, l.Address.BitLen())}
	if c.SNATTo.IsValid() && c.SNATTo != l.Address {
		own = append(own, netip.PrefixFrom(c.SNATTo, c.SNATTo.BitLen()))
	}
	return append(own, c.Sources...)
}

// snatTo is the address snat-from ranges are NATed to.
func (l *Link) snatTo() netip.Addr {
	if l.Config.SNATTo.IsValid() {
		return l.Config.SNATTo
	}
	return l.Address
}

// snat is the link's SNAT chain's rules (IPv4 only; none without
// snat-from).
func (l *Link) snat() []string {
	var rules []string
	iface := l.Config.Iface
	for _, p := range l.Config.SNATFrom {
		rules = append(rules, fmt.Sprintf("-s %s -o %s %s -j SNAT --to-source %s", p.Masked(), iface, l.comment("snat"), l.snatTo()))
	}
	return rules
}

// guard is the link's egress guard chain's rules.
func (l *Link) guard() []string {
	var rules []string
	ret := l.comment("") + " -j RETURN"
	if l.Config.Family == stanza.Inet6 {
		// No NAT: the source on the wire is the source here. Link-local
		// sources (neighbour discovery) and the unspecified one (DAD)
		// belong to every link.
		for _, p := range append([]netip.Prefix{netip.MustParsePrefix("fe80::/10"), netip.MustParsePrefix("::/128")}, l.own()...) {
			rules = append(rules, fmt.Sprintf("-s %s %s", p.Masked(), ret))
		}
	} else {
		for _, p := range l.own() {
			rules = append(rules,
				fmt.Sprintf("-m conntrack --ctrepldst %s --ctdir ORIGINAL %s", ctAddr(p), ret),
				fmt.Sprintf("-m conntrack --ctorigdst %s --ctdir REPLY %s", ctAddr(p), ret))
		}
		for _, p := range l.Config.SNATFrom {
			rules = append(rules, fmt.Sprintf("-s %s -m conntrack ! --ctstatus CONFIRMED %s -j RETURN", p.Masked(), l.comment("new flow, SNAT follows")))
		}
	}
	return append(rules, l.comment("egress guard")+" -j DROP")
}

// ctAddr writes a prefix as the conntrack match prints it: a host without
// its length.
func ctAddr(p netip.Prefix) string {
	if p.IsSingleIP() {
		return p.Addr().String()
	}
	return p.Masked().String()
}

// comment is the rule's `-m comment`, naming the interface (and what the
// rule is for).
func (l *Link) comment(what string) string {
	c := "ifisp: " + l.Config.Iface
	if what != "" {
		c += " " + what
	}
	return "-m comment --comment " + quote(c)
}

// Up installs the link's SNAT rules and egress guard, or brings them to
// what the stanza says now: the guard first, then SNAT, each table in one
// transaction. If SNAT cannot be applied, the guard is put back as it was.
// Running it twice changes nothing.
func Up(b Backend, l *Link) error {
	return apply(b, l.Config.Iface, l.steps())
}

// Changes returns the payloads Up would apply now, one per table that
// would change, without applying them: none when the kernel has the rules
// already.
func Changes(b Backend, l *Link) ([]string, error) {
	var list []string
	for _, s := range l.steps() {
		have, want, err := s.plan(b, l.Config.Iface)
		if err != nil {
			return nil, err
		}
		if p := Payload(have, want); p != "" {
			list = append(list, p)
		}
	}
	return list, nil
}

// steps are the tables Up changes, in order.
func (l *Link) steps() []step {
	steps := []step{{guardTree, l.guard()}}
	if l.Config.Family == stanza.Inet {
		steps = append(steps, step{snatTree, l.snat()})
	}
	return steps
}

// Down removes the link's chains, and ifisp's top chains once empty. What
// is already gone counts as removed; a table that fails does not keep the
// other from being cleaned, and both errors are reported.
func Down(b Backend, c *stanza.Config) error {
	steps := []step{{guardTree, nil}}
	if c.Family == stanza.Inet {
		steps = append(steps, step{snatTree, nil})
	}
	var errs []error
	for _, s := range steps {
		errs = append(errs, apply(b, c.Iface, []step{s}))
	}
	return errors.Join(errs...)
}

// step is one table's change: the interface's chain in tree made to hold
// rules (none: removed).
type step struct {
	tree  tree
	rules []string
}

// plan reads the step's table and returns ifisp's part of it now, and as
// the step wants it.
func (s step) plan(b Backend, iface string) (have, want *Ruleset, err error) {
	save, err := b.Save(s.tree.table)
	if err != nil {
		return nil, nil, err
	}
	if have, err = ParseSave(s.tree.table, save); err != nil {
		return nil, nil, err
	}
	return have, s.tree.set(have, iface, s.rules), nil
}

// apply makes the steps' changes in order, one transaction each, and when
// one fails undoes the ones before it.
func apply(b Backend, iface string, steps []step) error {
	type applied struct{ table, undo string }
	var done []applied
	for _, s := range steps {
		have, want, err := s.plan(b, iface)
		if err == nil {
			if payload := Payload(have, want); payload != "" {
				if err = b.Restore(s.tree.table, payload); err == nil {
					done = append(done, applied{s.tree.table, Payload(want, have)})
				}
			}
		}
		if err != nil {
			err = fmt.Errorf("%s: %s table, chain %s: %w", iface, s.tree.table, s.tree.chain(iface), err)
			for i := len(done) - 1; i >= 0; i-- {
				if uerr := b.Restore(done[i].table, done[i].undo); uerr != nil {
					err = fmt.Errorf("%w; putting the %s table back failed too: %v (ifdown %s repairs it)", err, done[i].table, uerr, iface)
				}
			}
			return err
		}
	}
	return nil
}
