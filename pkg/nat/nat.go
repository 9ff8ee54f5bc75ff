// Package nat installs and removes a WAN's SNAT rules and its egress guard,
// in iptables chains of ifisp's own. Like kube-proxy, it reads a table once
// (iptables-save), computes the rules it wants as data (Ruleset), and
// applies the difference in one `iptables-restore --noflush` transaction per
// table: a rule set is never half-applied, the administrator's rules are
// never touched, and a hook run costs a few processes, not one per rule.
//
// Each WAN gets one chain per job, jumped to from one top chain per job:
//
//	nat    POSTROUTING -> IFISP-SNAT  -> IFISP-SNAT-<iface>   SNAT for snat-from
//	filter FORWARD, OUTPUT -> IFISP-GUARD -> IFISP-GUARD-<iface>   egress guard
//	mangle PREROUTING -> IFISP-ARRIVE -> IFISP-ARRIVE-<iface>   inbound mark
//	mangle POSTROUTING -> IFISP-LEAVE -> IFISP-LEAVE-<iface>   outbound mark
//
// The mangle chains give each new connection that arrives or leaves by a
// WAN the WAN's mark (package connmark), once, and IFISP-ARRIVE copies a
// connection's mark to its packets where an `fwmark` rule of ifisp's may
// route them: the replies of inbound connections (isp-inbound), and the
// packets from inside of outbound ones (isp-sticky). Packets from the
// internet get no mark, so a mark never routes them back out.
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
	"slices"
	"strconv"
	"strings"

	"github.com/ifisp/ifisp/pkg/connmark"
	"github.com/ifisp/ifisp/pkg/stanza"
)

// Chain names. Per-interface chains add "-" and the interface name (at most
// 15 characters, so at most 27 in all, within iptables' 28).
const (
	SNATChain   = "IFISP-SNAT"
	GuardChain  = "IFISP-GUARD"
	ArriveChain = "IFISP-ARRIVE"
	LeaveChain  = "IFISP-LEAVE"
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

// snat is the link's SNAT chain's rules: none without snat-from; for
// IPv6, NPTv6 of its ULA prefix onto snat-to's, host bits kept (NETMAP, so
// that conntrack knows the mapping, and marks and the reconcile work as
// for IPv4).
func (l *Link) snat() []string {
	var rules []string
	c := l.Config
	for _, p := range c.SNATFrom {
		if c.Family == stanza.Inet6 {
			rules = append(rules, fmt.Sprintf("-s %s -o %s %s -j NETMAP --to %s", p.Masked(), c.Iface, l.comment("npt"), c.SNATPrefix))
			continue
		}
		rules = append(rules, fmt.Sprintf("-s %s -o %s %s -j SNAT --to-source %s", p.Masked(), c.Iface, l.comment("snat"), l.snatTo()))
	}
	return rules
}

// arrive is the link's IFISP-ARRIVE chain: a new connection that arrives by
// it gets its inbound mark.
func (l *Link) arrive() []string {
	return []string{l.setMark("inbound", l.Config.Mark.In())}
}

// leave is the link's IFISP-LEAVE chain: a new connection that leaves by it
// gets its outbound mark, unless it has a mark of ifisp's already (it
// arrived by another link).
func (l *Link) leave() []string {
	return []string{l.setMark("outbound", l.Config.Mark.Out())}
}

// setMark sets the connection's mark to v, under the mask, when ifisp's
// bits of it are still 0. The top chains send only a connection's first
// packets here (firstOnly).
func (l *Link) setMark(what string, v uint32) string {
	mask := connmark.Hex(l.Config.Mark.Mask)
	return fmt.Sprintf("-m connmark --mark 0x0/%s %s -j CONNMARK --set-xmark %s/%s", mask, l.comment(what), connmark.Hex(v), mask)
}

// firstOnly ends a top chain's work for the packets of a connection past
// its first: no mark is set on them, and no -i or -o jump need be tried.
var firstOnly = "-m conntrack ! --ctstate NEW -m comment --comment " + quote("ifisp: marks are set on the first packet only") + " -j RETURN"

// arriveHead is IFISP-ARRIVE's own rules, before the jumps to the links'
// chains: they copy a connection's mark to the packets an `fwmark` rule may
// route, the reply direction of inbound connections and the original
// direction of outbound ones, and only ifisp's bits of it (the cheap
// connmark match first: most packets fail it).
func arriveHead(mask uint32) []string {
	m, in := connmark.Hex(mask), connmark.Hex(connmark.InboundBit(mask))
	restore := fmt.Sprintf("-j CONNMARK --restore-mark --nfmask %s --ctmask %s", m, m)
	return []string{
		fmt.Sprintf("-m connmark --mark %s/%s -m conntrack --ctdir REPLY -m comment --comment %s %s", in, in, quote("ifisp: replies of inbound connections"), restore),
		fmt.Sprintf("-m connmark --mark 0x0/%s -m conntrack --ctdir ORIGINAL -m comment --comment %s %s", in, quote("ifisp: outbound flows, for isp-sticky"), restore),
		firstOnly,
	}
}

// checkMarks refuses stanza c when the other links' IFISP-LEAVE chains in
// save use its mark already, or another mask: two links with one mark
// would share their flows' fate, and two masks would each restore bits the
// other does not own.
func checkMarks(c *stanza.Config, save string) error {
	rs, err := ParseSave(leaveTree.table, save)
	if err != nil {
		return err
	}
	for _, name := range sortedKeys(rs.Chains) {
		other, ok := strings.CutPrefix(name, LeaveChain+"-")
		if !ok || other == c.Iface {
			continue
		}
		for _, r := range rs.Chains[name] {
			_, xmark, ok := strings.Cut(r, "--set-xmark ")
			if !ok {
				continue
			}
			v, mask, _ := strings.Cut(xmark, "/")
			switch {
			case mask != connmark.Hex(c.Mark.Mask):
				return stanza.Errorf(c.Iface, "isp-mark-mask", connmark.Hex(c.Mark.Mask), "%s's marks are under %s (give every ISP stanza the same isp-mark-mask)", other, mask)
			case v == connmark.Hex(c.Mark.Out()):
				return stanza.Errorf(c.Iface, "isp-mark", strconv.Itoa(int(c.Mark.ID)), "%s has this link id already (each ISP stanza needs its own isp-mark; it defaults to the table's number, folded into the mask's ids when larger)", other)
			}
		}
	}
	return nil
}

// guard is the link's egress guard chain's rules.
func (l *Link) guard() []string {
	var rules []string
	ret := l.comment("") + " -j RETURN"
	if l.Config.Family == stanza.Inet6 {
		// No SNAT: the source on the wire is the source here. Link-local
		// sources (neighbour discovery) and the unspecified one (DAD)
		// belong to every link. The replies of a port forward leave with
		// the address they came to once NAT has undone the DNAT.
		for _, p := range append([]netip.Prefix{netip.MustParsePrefix("fe80::/10"), netip.MustParsePrefix("::/128")}, l.own()...) {
			rules = append(rules, fmt.Sprintf("-s %s %s", p.Masked(), ret))
		}
		for _, p := range l.own() {
			rules = append(rules, fmt.Sprintf("-m conntrack --ctorigdst %s --ctdir REPLY %s", ctAddr(p), ret))
		}
		// NPTv6 decides the source after the filter table, as SNAT does.
		if p := l.Config.SNATPrefix; p.IsValid() {
			rules = append(rules, fmt.Sprintf("-m conntrack --ctrepldst %s --ctdir ORIGINAL %s", ctAddr(p), ret))
		}
	} else {
		for _, p := range l.own() {
			rules = append(rules,
				fmt.Sprintf("-m conntrack --ctrepldst %s --ctdir ORIGINAL %s", ctAddr(p), ret),
				fmt.Sprintf("-m conntrack --ctorigdst %s --ctdir REPLY %s", ctAddr(p), ret))
		}
	}
	for _, p := range l.Config.SNATFrom {
		rules = append(rules, fmt.Sprintf("-s %s -m conntrack ! --ctstatus CONFIRMED %s -j RETURN", p.Masked(), l.comment("new flow, SNAT follows")))
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
// what the stanza says now, in one iptables-restore: each table is one
// transaction, and if one cannot be applied the other is put back as it
// was. Running it twice changes nothing, and runs no iptables-restore.
func Up(b Backend, l *Link) error {
	return apply(b, l.Config.Iface, l.Chains().steps(), func(save string) error { return checkMarks(l.Config, save) })
}

// Chains is a link's share of ifisp's rules in one family, as data (what
// the registry records): the rules of the link's own chain under each of
// ifisp's top chains (those of IFISP-SNAT-wana under "IFISP-SNAT"), and the
// mark mask the top chains' heads use. The top chains and the jumps to
// them follow from the chains there are.
type Chains struct {
	Iface string              `json:"iface"`
	Mask  uint32              `json:"mask"`
	Rules map[string][]string `json:"rules"`
}

// Chains renders l's chains.
func (l *Link) Chains() Chains {
	return Chains{Iface: l.Config.Iface, Mask: l.Config.Mark.Mask, Rules: map[string][]string{
		ArriveChain: l.arrive(), LeaveChain: l.leave(), GuardChain: l.guard(), SNATChain: l.snat(),
	}}
}

// Closed renders the chains of a link whose lease is lost: an egress
// guard that drops every packet leaving by it, and nothing else. The
// next lease's address and default route come before its hook can put
// the SNAT rules back (dhclient-script adds them, then runs its hooks):
// until then, a new LAN flow would leave un-NATed. The link's next up
// replaces them.
func (l *Link) Closed() Chains {
	return Chains{Iface: l.Config.Iface, Mask: l.Config.Mark.Mask, Rules: map[string][]string{
		GuardChain: {l.comment("no lease: egress guard") + " -j DROP"},
	}}
}

// Apply brings the tables to ch as Up does, without Up's checks: it puts
// back what another tool deleted.
func Apply(b Backend, ch Chains) error { return apply(b, ch.Iface, ch.steps(), nil) }

// Diff is what the tables lack of ch (each as the iptables command that
// would add it: "-t nat -A IFISP-SNAT-wana ...") and what ifisp's chains
// hold that no link's plan has (a stale chain, a rule another tool added,
// a chain out of order).
func Diff(b Backend, ch Chains) (missing, foreign []string, err error) {
	cs, err := plan(b, ch.Iface, ch.steps(), nil)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", ch.Iface, err)
	}
	for _, c := range cs {
		t := "-t " + c.want.Table + " "
		for _, name := range sortedKeys(c.want.Chains) {
			want := c.want.Chains[name]
			have, ok := c.have.Chains[name]
			if !ok {
				missing = append(missing, t+"-N "+name)
			}
			n := len(missing)
			for _, r := range want {
				if !slices.Contains(have, r) {
					missing = append(missing, t+"-A "+name+" "+r)
				}
			}
			m := len(foreign)
			for _, r := range have {
				if !slices.Contains(want, r) {
					foreign = append(foreign, t+"-A "+name+" "+r)
				}
			}
			if ok && n == len(missing) && m == len(foreign) && !slices.Equal(have, want) {
				foreign = append(foreign, t+name+": rules out of order")
			}
		}
		for _, name := range sortedKeys(c.have.Chains) {
			if _, ok := c.want.Chains[name]; !ok {
				foreign = append(foreign, t+"-N "+name)
			}
		}
		for _, j := range sortedKeys(c.want.Jumps) {
			if !c.have.Jumps[j] {
				missing = append(missing, t+jumpCommand(j))
			}
		}
		for _, j := range sortedKeys(c.have.Jumps) {
			if !c.want.Jumps[j] {
				foreign = append(foreign, t+jumpCommand(j))
			}
		}
	}
	return missing, foreign, nil
}

// jumpCommand writes a Ruleset.Jumps key as the rule iptables-save shows.
func jumpCommand(j string) string {
	from, target, _ := strings.Cut(j, " ")
	return fmt.Sprintf("-A %s %s -j %s", from, jumpComment, target)
}

// CheckMarks makes Up's first check without changing anything: that the
// links up in the kernel use neither c's mark nor another mask (for
// `ifisp check --kernel`).
func CheckMarks(b Backend, c *stanza.Config) error {
	save, err := b.Save()
	if err != nil {
		return fmt.Errorf("%s: %w", c.Iface, err)
	}
	return checkMarks(c, save)
}

// Changes returns the payload Up would apply now, without applying it: ""
// when the kernel has the rules already.
func Changes(b Backend, l *Link) (string, error) {
	p, err := plan(b, l.Config.Iface, l.Chains().steps(), nil)
	if err != nil {
		return "", fmt.Errorf("%s: %w", l.Config.Iface, err)
	}
	return p.payload(), nil
}

// steps are the changes of the link's chains to ch's rules (none:
// removed). Mangle goes first: iptables-nft probes the connmark, conntrack
// and CONNMARK extensions while parsing it, one netlink socket per probe,
// and once a commit has deleted rules each such socket's close waits for
// an RCU grace period (milliseconds). Nat goes before filter: each table
// commits on its own, and the guard lets a new flow from snat-from by
// because SNAT follows, so the SNAT rules must be there before a guard
// that opens (a lease's closed guard, a new address): else the first
// packet of a flow begun between the two commits leaves un-NATed.
func (ch Chains) steps() []step {
	return []step{
		{tree: arriveTree, rules: ch.Rules[ArriveChain], head: arriveHead(ch.Mask)},
		{tree: leaveTree, rules: ch.Rules[LeaveChain], head: []string{firstOnly}},
		{tree: snatTree, rules: ch.Rules[SNATChain]},
		{tree: guardTree, rules: ch.Rules[GuardChain]},
	}
}

// Down removes the link's chains, and ifisp's top chains once empty. What
// is already gone counts as removed. With own, the link's chains as its
// record has them, it first takes the tables to be what the records say
// (own and others, the family's other links' chains) and removes own from
// that without reading them: an ifdown costs one iptables-restore, not an
// iptables-save too. When the tables are not that (another tool changed
// them), that restore fails, as it does when a table lacks what it
// deletes or a top chain it empties holds more, and Down reads the tables
// and removes what is there. When the tables cannot be cleaned together,
// each is tried alone, so one that fails does not keep the other from
// being cleaned, and every error is reported.
func Down(b Backend, c *stanza.Config, own *Chains, others []Chains) error {
	steps := Chains{Iface: c.Iface, Mask: c.Mark.Mask}.steps()
	if own != nil {
		if p := recorded(append(slices.Clone(others), *own), c.Iface, steps).payload(); p != "" && b.Restore(p) == nil {
			return nil
		}
	}
	err := apply(b, c.Iface, steps, nil)
	if err == nil {
		return err
	}
	var errs []error
	for _, table := range byTable(steps) {
		errs = append(errs, apply(b, c.Iface, table, nil))
	}
	return errors.Join(errs...)
}

// recorded returns the steps' changes of iface's chains in tables that
// hold links' chains and nothing else of ifisp's.
func recorded(links []Chains, iface string, steps []step) changes {
	tables := map[string]*Ruleset{}
	for _, ch := range links {
		for _, s := range ch.steps() {
			if len(s.rules) == 0 {
				continue
			}
			rs := tables[s.tree.table]
			if rs == nil {
				rs = newRuleset(s.tree.table)
			}
			tables[s.tree.table] = s.tree.set(rs, ch.Iface, s.rules, s.head)
		}
	}
	return changesOf(tables, iface, steps)
}

// step is one tree's change: the interface's chain in tree made to hold
// rules (none: removed), the top chain starting with head.
type step struct {
	tree        tree
	rules, head []string
}

// byTable groups steps by table, in the order the tables first appear.
func byTable(steps []step) [][]step {
	var groups [][]step
	at := map[string]int{}
	for _, s := range steps {
		i, ok := at[s.tree.table]
		if !ok {
			i = len(groups)
			at[s.tree.table] = i
			groups = append(groups, nil)
		}
		groups[i] = append(groups[i], s)
	}
	return groups
}

// change is one table's ifisp part as it is and as it is wanted.
type change struct{ have, want *Ruleset }

type changes []change

// plan reads the tables (one iptables-save) and returns the steps'
// changes of iface's chains.
func plan(b Backend, iface string, steps []step, check func(save string) error) (changes, error) {
	save, err := b.Save()
	if err != nil {
		return nil, err
	}
	if check != nil {
		if err := check(save); err != nil {
			return nil, err
		}
	}
	have := map[string]*Ruleset{}
	for _, table := range byTable(steps) {
		name := table[0].tree.table
		if have[name], err = ParseSave(name, save); err != nil {
			return nil, err
		}
	}
	return changesOf(have, iface, steps), nil
}

// changesOf returns the steps' changes of iface's chains in the tables
// have holds (ifisp's part of each, by name; a table not there has none).
func changesOf(have map[string]*Ruleset, iface string, steps []step) changes {
	var cs changes
	for _, table := range byTable(steps) {
		h := have[table[0].tree.table]
		if h == nil {
			h = newRuleset(table[0].tree.table)
		}
		want := h
		for _, s := range table {
			want = s.tree.set(want, iface, s.rules, s.head)
		}
		cs = append(cs, change{h, want})
	}
	return cs
}

// payload is every table's payload, one after the other.
func (cs changes) payload() string {
	var b strings.Builder
	for _, c := range cs {
		b.WriteString(Payload(c.have, c.want))
	}
	return b.String()
}

// apply makes the steps' changes with one iptables-restore. When it fails,
// it reads the tables again and puts back those that did change (with
// several tables, iptables-restore commits each at its COMMIT line).
func apply(b Backend, iface string, steps []step, check func(save string) error) error {
	cs, err := plan(b, iface, steps, check)
	var se *stanza.Error
	if errors.As(err, &se) {
		return err
	}
	if err != nil {
		return fmt.Errorf("%s: %w", iface, err)
	}
	payload := cs.payload()
	if payload == "" {
		return nil
	}
	err = b.Restore(payload)
	if err == nil {
		return nil
	}
	err = fmt.Errorf("%s: applying ifisp's chains: %w", iface, err)
	save, serr := b.Save()
	if serr != nil {
		return fmt.Errorf("%w; reading the tables back failed too: %v (ifdown %s repairs it)", err, serr, iface)
	}
	var undo strings.Builder
	for _, c := range cs {
		now, perr := ParseSave(c.have.Table, save)
		if perr != nil {
			return fmt.Errorf("%w; %v (ifdown %s repairs it)", err, perr, iface)
		}
		undo.WriteString(Payload(now, c.have))
	}
	if undo.Len() > 0 {
		if uerr := b.Restore(undo.String()); uerr != nil {
			return fmt.Errorf("%w; putting the tables back failed too: %v (ifdown %s repairs it)", err, uerr, iface)
		}
	}
	return err
}
