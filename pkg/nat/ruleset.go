package nat

import (
	"fmt"
	"slices"
	"strings"
)

// Prefix starts the name of every chain ifisp owns. In the tables nat
// manages, every chain with it is ifisp's: one it no longer wants (an
// older ifisp's, a link's that went away) is removed.
const Prefix = "IFISP-"

// Ruleset is ifisp's part of one iptables table, as iptables-save prints
// it: the chains it owns with their rules, and the built-in chains that
// jump to them with ifisp's plain `-m comment --comment ifisp` jump.
type Ruleset struct {
	Table string
	// Chains maps each of ifisp's chains to its rules, each as
	// iptables-save prints it after "-A CHAIN ".
	Chains map[string][]string
	// Jumps holds "BUILTIN TARGET" for each jump from a built-in chain to
	// one of ifisp's.
	Jumps map[string]bool
}

// ParseSave reads ifisp's part of one table from iptables-save's output.
func ParseSave(table, save string) (*Ruleset, error) {
	rs := newRuleset(table)
	in := false
	for _, line := range strings.Split(save, "\n") {
		switch {
		case strings.HasPrefix(line, "*"):
			in = line == "*"+table
		case !in || line == "COMMIT":
		case strings.HasPrefix(line, ":"+Prefix):
			name, _, _ := strings.Cut(line[1:], " ")
			if _, ok := rs.Chains[name]; !ok {
				rs.Chains[name] = []string{}
			}
		case strings.HasPrefix(line, "-A "):
			chain, rule, _ := strings.Cut(line[3:], " ")
			if strings.HasPrefix(chain, Prefix) {
				rs.Chains[chain] = append(rs.Chains[chain], rule)
			} else if target, ok := strings.CutPrefix(rule, jumpComment+" -j "); ok && strings.HasPrefix(target, Prefix) {
				rs.Jumps[chain+" "+target] = true
			}
		}
	}
	for chain := range rs.Chains {
		if len(chain) > maxChain {
			return nil, fmt.Errorf("iptables-save -t %s: chain %s is longer than iptables allows", table, chain)
		}
	}
	return rs, nil
}

// maxChain is the longest chain name iptables takes.
const maxChain = 28

// jumpComment marks ifisp's jumps from the built-in chains.
const jumpComment = "-m comment --comment ifisp"

// newRuleset returns an empty Ruleset of table: none of ifisp's chains.
func newRuleset(table string) *Ruleset {
	return &Ruleset{Table: table, Chains: map[string][]string{}, Jumps: map[string]bool{}}
}

// clone returns a deep copy of rs.
func (rs *Ruleset) clone() *Ruleset {
	c := newRuleset(rs.Table)
	for k, v := range rs.Chains {
		c.Chains[k] = slices.Clone(v)
	}
	for k := range rs.Jumps {
		c.Jumps[k] = true
	}
	return c
}

// tree is how a table's chains hang together: the top chain, jumped to
// first thing from the built-in chains, and one chain per interface below
// it, TOP-IFACE, jumped to for packets leaving by that interface (or, with
// dir "-i", arriving by it).
type tree struct {
	table string
	top   string
	from  []string // the built-in chains that jump to top
	dir   string   // "-o" or "-i": how the top chain matches an interface
}

// The trees nat manages.
var (
	snatTree   = tree{table: "nat", top: SNATChain, from: []string{"POSTROUTING"}, dir: "-o"}
	guardTree  = tree{table: "filter", top: GuardChain, from: []string{"FORWARD", "OUTPUT"}, dir: "-o"}
	arriveTree = tree{table: "mangle", top: ArriveChain, from: []string{"PREROUTING"}, dir: "-i"}
	leaveTree  = tree{table: "mangle", top: LeaveChain, from: []string{"POSTROUTING"}, dir: "-o"}

	trees = []tree{snatTree, guardTree, arriveTree, leaveTree}
)

// isTop reports whether chain is the top chain of one of the trees.
func isTop(chain string) bool {
	return slices.ContainsFunc(trees, func(t tree) bool { return t.top == chain })
}

// chain returns the name of iface's chain in t.
func (t tree) chain(iface string) string { return t.top + "-" + iface }

// sibling reports whether chain belongs to another tree of t's table.
func (t tree) sibling(chain string) bool {
	for _, o := range trees {
		if o.table == t.table && o.top != t.top && (chain == o.top || strings.HasPrefix(chain, o.top+"-")) {
			return true
		}
	}
	return false
}

// set returns rs with iface's chain holding rules, or without that chain
// when rules is empty, and the rest of the tree made to fit: the top chain
// holds head, then jumps to every interface's chain, in the order of the
// interface names (so the result does not depend on which link came up
// first), and is jumped to from the built-in chains; without interface
// chains neither the top chain nor its jumps remain. Chains with ifisp's
// prefix that the tree does not have go.
func (t tree) set(rs *Ruleset, iface string, rules, head []string) *Ruleset {
	want := rs.clone()
	if len(rules) > 0 {
		want.Chains[t.chain(iface)] = rules
	} else {
		delete(want.Chains, t.chain(iface))
	}
	var ifaces []string
	for name := range want.Chains {
		if i, ok := strings.CutPrefix(name, t.top+"-"); ok {
			ifaces = append(ifaces, i)
		} else if name != t.top && !t.sibling(name) {
			delete(want.Chains, name) // e.g. an older ifisp's IFISP-NEW-<iface>
		}
	}
	slices.Sort(ifaces)
	for _, from := range t.from {
		delete(want.Jumps, from+" "+t.top)
	}
	delete(want.Chains, t.top)
	if len(ifaces) == 0 {
		return want
	}
	top := slices.Clone(head)
	for _, i := range ifaces {
		top = append(top, fmt.Sprintf("%s %s -m comment --comment %s -j %s", t.dir, i, quote("ifisp: "+i), t.chain(i)))
	}
	want.Chains[t.top] = top
	for _, from := range t.from {
		want.Jumps[from+" "+t.top] = true
	}
	return want
}

// Payload renders, in iptables-restore's format, what turns have into
// want: "" when nothing changes. Applied with --noflush it touches ifisp's
// chains and jumps only, and in one transaction per table. A chain that
// only gains or loses rules (a top chain when a link comes or goes) gets
// just those inserted or deleted; any other changed chain is declared,
// which empties it, and filled again. An unchanged chain is not in the
// payload at all (its counters stay).
//
// Deleting rules is what costs: with nf_tables, iptables-restore waits
// for the kernel's RCU grace period (15-20 ms, more on a busy machine)
// after a table in which it deleted any, so a link coming up deletes
// nothing.
func Payload(have, want *Ruleset) string {
	var decl, del, add, jumps, drop []string
	for _, name := range sortedKeys(want.Chains) {
		old, ok := have.Chains[name]
		rules := want.Chains[name]
		gained, onlyGains := extra(old, rules)
		lost, onlyLosses := extra(rules, old)
		switch {
		case ok && slices.Equal(old, rules):
		case ok && onlyGains:
			for _, i := range gained {
				add = append(add, fmt.Sprintf("-I %s %d %s", name, i+1, rules[i]))
			}
		case ok && onlyLosses:
			for _, i := range lost {
				del = append(del, fmt.Sprintf("-D %s %s", name, old[i]))
			}
		default:
			decl = append(decl, ":"+name+" - [0:0]")
			for _, r := range rules {
				add = append(add, "-A "+name+" "+r)
			}
		}
	}
	for _, name := range sortedKeys(have.Chains) {
		if _, ok := want.Chains[name]; ok {
			continue
		}
		// Emptied, so that -X can remove it. A top chain is emptied rule
		// by rule, not re-declared: should it hold a jump have does not
		// know of (Down's records missing a link), -X fails, and the
		// transaction with it, instead of cutting that link off.
		if isTop(name) {
			for _, r := range have.Chains[name] {
				del = append(del, "-D "+name+" "+r)
			}
		} else {
			decl = append(decl, ":"+name+" - [0:0]")
		}
		drop = append(drop, "-X "+name)
	}
	for _, j := range sortedKeys(have.Jumps) {
		if !want.Jumps[j] {
			from, target, _ := strings.Cut(j, " ")
			del = append(del, fmt.Sprintf("-D %s %s -j %s", from, jumpComment, target))
		}
	}
	for _, j := range sortedKeys(want.Jumps) {
		if !have.Jumps[j] {
			// First: the guard must see a packet before any ACCEPT of the
			// administrator's, SNAT must come before a catch-all
			// MASQUERADE.
			from, target, _ := strings.Cut(j, " ")
			jumps = append(jumps, fmt.Sprintf("-I %s 1 %s -j %s", from, jumpComment, target))
		}
	}
	if len(decl)+len(del)+len(add)+len(jumps) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("*" + want.Table + "\n")
	for _, part := range [][]string{decl, del, add, jumps, drop} {
		for _, line := range part {
			b.WriteString(line + "\n")
		}
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

// extra returns the positions in full of the rules that are not part of
// sub, and whether all of sub stands in full, in sub's order.
func extra(sub, full []string) (positions []int, ok bool) {
	j := 0
	for i, r := range full {
		if j < len(sub) && sub[j] == r {
			j++
			continue
		}
		positions = append(positions, i)
	}
	return positions, j == len(sub)
}

// quote writes s as iptables-save does: bare when it is made of letters,
// digits, '-' and '_' only, else in double quotes with '"', '\' and '\”
// escaped.
func quote(s string) string {
	if s != "" && strings.Trim(s, "_-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") == "" {
		return s
	}
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		if r == '"' || r == '\\' || r == '\'' {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	b.WriteByte('"')
	return b.String()
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
