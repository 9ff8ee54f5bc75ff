// Package nat installs and removes a WAN's SNAT rules and its egress guard,
// in iptables chains of ifisp's own, through go-iptables.
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
package nat

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/ifisp/ifisp/pkg/stanza"
)

// Chain names. Per-interface chains add "-" and the interface name (at most
// 15 characters, so at most 27 in all, within iptables' 28).
const (
	SNATChain  = "IFISP-SNAT"
	GuardChain = "IFISP-GUARD"
)

// Comment is the comment on the top chains' jumps from the built-in chains.
const Comment = "ifisp"

// A chain is an interface's chain: where it hangs and what it holds.
type chain struct {
	table string
	top   string   // ifisp's top chain
	from  []string // built-in chains that jump to top
	iface string
	name  string // the interface's own chain
	rules [][]string
}

func snatChain(iface string) *chain {
	return &chain{table: "nat", top: SNATChain, from: []string{"POSTROUTING"}, iface: iface, name: SNATChain + "-" + iface}
}

func guardChain(iface string) *chain {
	return &chain{table: "filter", top: GuardChain, from: []string{"FORWARD", "OUTPUT"}, iface: iface, name: GuardChain + "-" + iface}
}

// Tables is the part of go-iptables' *IPTables that nat uses, so tests and
// callers can choose the binary (nf_tables or legacy backend).
type Tables interface {
	Exists(table, chain string, rulespec ...string) (bool, error)
	Insert(table, chain string, pos int, rulespec ...string) error
	Append(table, chain string, rulespec ...string) error
	DeleteIfExists(table, chain string, rulespec ...string) error
	List(table, chain string) ([]string, error)
	ChainExists(table, chain string) (bool, error)
	NewChain(table, chain string) error
	ClearAndDeleteChain(table, chain string) error
	RenameChain(table, oldChain, newChain string) error
}

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

func (l *Link) comment(what string) []string {
	c := "ifisp: " + l.Config.Iface
	if what != "" {
		c += " " + what
	}
	return []string{"-m", "comment", "--comment", c}
}

// snat is the link's SNAT chain (IPv4 only; none without snat-from).
func (l *Link) snat() *chain {
	iface := l.Config.Iface
	ch := snatChain(iface)
	for _, p := range l.Config.SNATFrom {
		ch.rules = append(ch.rules, join([]string{"-o", iface, "-s", p.String()}, l.comment("snat"),
			[]string{"-j", "SNAT", "--to-source", l.snatTo().String()}))
	}
	return ch
}

// guard is the link's egress guard chain.
func (l *Link) guard() *chain {
	ch := guardChain(l.Config.Iface)
	ret := []string{"-j", "RETURN"}
	if l.Config.Family == stanza.Inet6 {
		// No NAT: the source on the wire is the source here. Link-local
		// sources (neighbour discovery) and the unspecified one (DAD)
		// belong to every link.
		for _, p := range append([]netip.Prefix{netip.MustParsePrefix("fe80::/10"), netip.MustParsePrefix("::/128")}, l.own()...) {
			ch.rules = append(ch.rules, join([]string{"-s", p.String()}, l.comment(""), ret))
		}
	} else {
		for _, p := range l.own() {
			ch.rules = append(ch.rules,
				join([]string{"-m", "conntrack", "--ctdir", "ORIGINAL", "--ctrepldst", p.String()}, l.comment(""), ret),
				join([]string{"-m", "conntrack", "--ctdir", "REPLY", "--ctorigdst", p.String()}, l.comment(""), ret))
		}
		for _, p := range l.Config.SNATFrom {
			ch.rules = append(ch.rules,
				join([]string{"-s", p.String(), "-m", "conntrack", "!", "--ctstatus", "CONFIRMED"}, l.comment("new flow, SNAT follows"), ret))
		}
	}
	ch.rules = append(ch.rules, join(l.comment("egress guard"), []string{"-j", "DROP"}))
	return ch
}

// Up installs the link's SNAT rules and egress guard, or brings them to
// what the stanza says now. Running it twice changes nothing.
func Up(t Tables, l *Link) error {
	chains := []*chain{l.guard()}
	if l.Config.Family == stanza.Inet {
		chains = append([]*chain{l.snat()}, chains...)
	}
	for _, ch := range chains {
		var err error
		if len(ch.rules) == 0 {
			err = ch.remove(t)
		} else {
			err = ch.sync(t)
		}
		if err != nil {
			return fmt.Errorf("%s: %s chain %s: %w", l.Config.Iface, ch.table, ch.name, err)
		}
	}
	return nil
}

// Down removes the link's chains, and ifisp's top chains once empty. What
// is already gone counts as removed.
func Down(t Tables, c *stanza.Config) error {
	chains := []*chain{guardChain(c.Iface)}
	if c.Family == stanza.Inet {
		chains = append(chains, snatChain(c.Iface))
	}
	for _, ch := range chains {
		if err := ch.remove(t); err != nil {
			return fmt.Errorf("%s: %s chain %s: %w", c.Iface, ch.table, ch.name, err)
		}
	}
	return nil
}

// jump is the top chain's rule that sends the interface's packets to
// target.
func (ch *chain) jump(target string) []string {
	return []string{"-o", ch.iface, "-m", "comment", "--comment", "ifisp: " + ch.iface, "-j", target}
}

var topJump = []string{"-m", "comment", "--comment", Comment}

// sync makes the interface's chain hold exactly ch.rules. A new chain is
// filled before the jump to it exists; a changed one is built beside the
// old and swapped in by its jump, so there is never a moment without SNAT
// or guard. An unchanged one is left as it is, counters and all.
func (ch *chain) sync(t Tables) error {
	if err := ch.ensureTop(t); err != nil {
		return err
	}
	exists, err := t.ChainExists(ch.table, ch.name)
	if err != nil {
		return err
	}
	if !exists {
		if err := fill(t, ch.table, ch.name, ch.rules); err != nil {
			return err
		}
		return t.Insert(ch.table, ch.top, 1, ch.jump(ch.name)...)
	}
	tmp := "IFISP-NEW-" + ch.iface
	if err := t.ClearAndDeleteChain(ch.table, tmp); err != nil {
		return err
	}
	if err := fill(t, ch.table, tmp, ch.rules); err != nil {
		return err
	}
	same, err := sameRules(t, ch.table, ch.name, tmp)
	if err != nil {
		return err
	}
	if same {
		if ok, err := t.Exists(ch.table, ch.top, ch.jump(ch.name)...); err != nil || ok {
			t.ClearAndDeleteChain(ch.table, tmp)
			return err
		}
	}
	if err := t.Insert(ch.table, ch.top, 1, ch.jump(tmp)...); err != nil {
		return err
	}
	if err := t.DeleteIfExists(ch.table, ch.top, ch.jump(ch.name)...); err != nil {
		return err
	}
	if err := t.ClearAndDeleteChain(ch.table, ch.name); err != nil {
		return err
	}
	return t.RenameChain(ch.table, tmp, ch.name)
}

// ensureTop makes ifisp's top chain and the built-in chains' jumps to it,
// first in each built-in chain: the guard must see a packet before any
// ACCEPT of the administrator's, and SNAT must come before a catch-all
// MASQUERADE.
func (ch *chain) ensureTop(t Tables) error {
	exists, err := t.ChainExists(ch.table, ch.top)
	if err != nil {
		return err
	}
	if !exists {
		if err := t.NewChain(ch.table, ch.top); err != nil {
			return err
		}
	}
	for _, from := range ch.from {
		spec := join(topJump, []string{"-j", ch.top})
		ok, err := t.Exists(ch.table, from, spec...)
		if err != nil {
			return err
		}
		if !ok {
			if err := t.Insert(ch.table, from, 1, spec...); err != nil {
				return err
			}
		}
	}
	return nil
}

// remove deletes the interface's chain and its jump, then the top chain and
// its jumps when nothing else hangs there. The order is the safe one: jump,
// then chain.
func (ch *chain) remove(t Tables) error {
	exists, err := t.ChainExists(ch.table, ch.top)
	if err != nil || !exists {
		return err
	}
	if err := t.DeleteIfExists(ch.table, ch.top, ch.jump(ch.name)...); err != nil {
		return err
	}
	if err := t.ClearAndDeleteChain(ch.table, ch.name); err != nil {
		return err
	}
	rules, err := t.List(ch.table, ch.top)
	if err != nil {
		return err
	}
	if len(rules) > 1 { // the first line is the chain's -N
		return nil
	}
	for _, from := range ch.from {
		if err := t.DeleteIfExists(ch.table, from, join(topJump, []string{"-j", ch.top})...); err != nil {
			return err
		}
	}
	return t.ClearAndDeleteChain(ch.table, ch.top)
}

func fill(t Tables, table, name string, rules [][]string) error {
	if err := t.NewChain(table, name); err != nil {
		return err
	}
	for _, r := range rules {
		if err := t.Append(table, name, r...); err != nil {
			return err
		}
	}
	return nil
}

// sameRules compares two chains as iptables prints them, so the comparison
// follows iptables' own normalisation whatever the backend.
func sameRules(t Tables, table, a, b string) (bool, error) {
	ra, err := t.List(table, a)
	if err != nil {
		return false, err
	}
	rb, err := t.List(table, b)
	if err != nil {
		return false, err
	}
	if len(ra) != len(rb) {
		return false, nil
	}
	for i := range ra {
		if ruleBody(ra[i], a) != ruleBody(rb[i], b) {
			return false, nil
		}
	}
	return true, nil
}

// ruleBody strips "-N CHAIN" or "-A CHAIN" from a listed rule.
func ruleBody(rule, chain string) string {
	for _, p := range []string{"-N " + chain, "-A " + chain} {
		if rest, ok := strings.CutPrefix(rule, p); ok {
			return rest
		}
	}
	return rule
}

func join(parts ...[]string) []string {
	var out []string
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}
