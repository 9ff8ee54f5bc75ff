package nat

// This file is a packet tracer for the tables nat renders, in the manner of
// kube-proxy's tracePacket: it reads iptables-save and iptables-restore text
// into chains, walks a packet through the built-in chains of the hooks its
// path crosses, and reports the verdict, the NAT and the marks. No kernel,
// no root.
//
// It knows only the matches and targets ifisp (and the administrator rules
// of the tests) write, and it refuses every other one instead of skipping
// it: a rule the tracer does not understand would otherwise be a rule that
// never matches, and a test could pass because of it.

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// builtins are the built-in chains of the tables the tracer knows, which
// exist (policy ACCEPT) before any text declares them, as in the kernel.
var builtins = map[string][]string{
	"filter": {"INPUT", "FORWARD", "OUTPUT"},
	"mangle": {"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"},
	"nat":    {"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"},
}

// tracer holds one family's tables, as loaded so far.
type tracer struct {
	v6     bool
	tables map[string]map[string]*chain
	// addrs is each interface's address, for MASQUERADE.
	addrs map[string]netip.Addr
}

type chain struct {
	policy string // ACCEPT or DROP for a built-in chain, "-" for a user chain
	rules  []*rule
}

type rule struct {
	text    string // as written after "-A CHAIN ", for the trace log
	matches []func(*flow) bool
	// target acts on the flow and says what comes next: "" the next rule;
	// ACCEPT, DROP or RETURN; or the name of a chain to jump to.
	target func(*flow) string
	jump   string // the chain target jumps to, checked at COMMIT
}

func newTracer(v6 bool) *tracer {
	return &tracer{v6: v6, tables: map[string]map[string]*chain{}, addrs: map[string]netip.Addr{}}
}

// table returns the named table, made with its built-in chains when new.
func (tr *tracer) table(name string) map[string]*chain {
	tab, ok := tr.tables[name]
	if !ok {
		tab = map[string]*chain{}
		for _, c := range builtins[name] {
			tab[c] = &chain{policy: "ACCEPT"}
		}
		tr.tables[name] = tab
	}
	return tab
}

// mustLoad is load that fails the test.
func (tr *tracer) mustLoad(t *testing.T, text string) {
	t.Helper()
	if err := tr.load(text); err != nil {
		t.Fatal(err)
	}
}

// load applies iptables-save output, or an iptables-restore --noflush
// payload, to the tables: a declared user chain is emptied (or made), a
// declared built-in one takes the policy, -A appends, -I inserts. Nothing
// else is taken: a payload that deletes is not what the tests trace.
func (tr *tracer) load(text string) error {
	var tab map[string]*chain
	var name string
	for n, line := range strings.Split(text, "\n") {
		where := fmt.Sprintf("line %d %q", n+1, line)
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "*"):
			name = line[1:]
			if builtins[name] == nil {
				return fmt.Errorf("%s: the tracer does not know table %s", where, name)
			}
			tab = tr.table(name)
		case tab == nil:
			return fmt.Errorf("%s: outside a table", where)
		case line == "COMMIT":
			if err := checkJumps(name, tab); err != nil {
				return fmt.Errorf("%s: %w", where, err)
			}
			tab = nil
		case strings.HasPrefix(line, ":"):
			f := strings.Fields(line[1:])
			if len(f) != 3 {
				return fmt.Errorf("%s: not a chain declaration", where)
			}
			c, builtin := tab[f[0]]
			builtin = builtin && c.policy != "-"
			switch {
			case builtin && (f[1] == "ACCEPT" || f[1] == "DROP"):
				c.policy = f[1]
			case !builtin && f[1] == "-":
				tab[f[0]] = &chain{policy: "-"}
			default:
				return fmt.Errorf("%s: policy %s on a chain that is %s", where, f[1], map[bool]string{true: "built-in", false: "not built-in"}[builtin])
			}
		case strings.HasPrefix(line, "-A "), strings.HasPrefix(line, "-I "):
			cname, rest, _ := strings.Cut(line[3:], " ")
			c := tab[cname]
			if c == nil {
				return fmt.Errorf("%s: no chain %s", where, cname)
			}
			pos := len(c.rules)
			if line[1] == 'I' {
				n, r, _ := strings.Cut(rest, " ")
				i, err := strconv.Atoi(n)
				if err != nil || i < 1 || i > len(c.rules)+1 {
					return fmt.Errorf("%s: bad position %q", where, n)
				}
				pos, rest = i-1, r
			}
			r, err := tr.parseRule(name, rest)
			if err != nil {
				return fmt.Errorf("%s: %w", where, err)
			}
			c.rules = slices.Insert(c.rules, pos, r)
		default:
			return fmt.Errorf("%s: the tracer does not take this line", where)
		}
	}
	if tab != nil {
		return fmt.Errorf("table %s has no COMMIT", name)
	}
	return nil
}

// checkJumps reports a jump to a chain the table does not have: a typo, or
// a target the tracer does not know and took for a chain.
func checkJumps(table string, tab map[string]*chain) error {
	for name, c := range tab {
		for _, r := range c.rules {
			if to := tab[r.jump]; r.jump != "" && (to == nil || to.policy != "-") {
				return fmt.Errorf("%s %s: %q jumps to %s, which is no user chain (nor a target the tracer knows)", table, name, r.text, r.jump)
			}
		}
	}
	return nil
}

// String prints the tables sorted, for comparing two loads.
func (tr *tracer) String() string {
	var b strings.Builder
	for _, tname := range sortedKeys(tr.tables) {
		fmt.Fprintf(&b, "*%s\n", tname)
		for _, cname := range sortedKeys(tr.tables[tname]) {
			c := tr.tables[tname][cname]
			fmt.Fprintf(&b, ":%s %s\n", cname, c.policy)
			for _, r := range c.rules {
				fmt.Fprintf(&b, "-A %s %s\n", cname, r.text)
			}
		}
	}
	return b.String()
}

// splitRule splits a rule into words as iptables-restore does: at spaces,
// except inside double quotes, where a backslash escapes the next byte.
func splitRule(s string) ([]string, error) {
	var words []string
	var b strings.Builder
	word, quoted := false, false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case quoted && c == '\\' && i+1 < len(s):
			i++
			b.WriteByte(s[i])
		case c == '"':
			quoted, word = !quoted, true
		case c == ' ' && !quoted:
			if word {
				words = append(words, b.String())
				b.Reset()
				word = false
			}
		default:
			b.WriteByte(c)
			word = true
		}
	}
	if quoted {
		return nil, fmt.Errorf("unterminated quote in %q", s)
	}
	if word {
		words = append(words, b.String())
	}
	return words, nil
}

// parseRule reads one rule: its matches, in order, and its target. Every
// option takes one value; -j and its options come last, as iptables-save
// prints them.
func (tr *tracer) parseRule(table, text string) (*rule, error) {
	words, err := splitRule(text)
	if err != nil {
		return nil, err
	}
	r := &rule{text: text}
	module := ""
	for i := 0; i < len(words); {
		neg := words[i] == "!"
		if neg {
			i++
		}
		if i+1 >= len(words) {
			return nil, fmt.Errorf("%q: %s has no value", text, words[len(words)-1])
		}
		opt, val := words[i], words[i+1]
		i += 2
		var m func(*flow) bool
		switch opt {
		case "-j":
			if neg {
				return nil, fmt.Errorf("%q: a negated target", text)
			}
			r.target, r.jump, err = tr.parseTarget(table, val, words[i:])
			if err != nil {
				return nil, fmt.Errorf("%q: %w", text, err)
			}
			return r, nil
		case "-m":
			if neg || !slices.Contains([]string{"comment", "conntrack", "connmark", "mark"}, val) {
				return nil, fmt.Errorf("%q: the tracer does not know match %s%s", text, map[bool]string{true: "! "}[neg], val)
			}
			module = val
			continue
		case "-i", "-o":
			m = ifaceMatch(opt, val)
		case "-s", "-d":
			p, err := tr.prefix(val)
			if err != nil {
				return nil, fmt.Errorf("%q: %s: %w", text, opt, err)
			}
			if opt == "-s" {
				m = func(f *flow) bool { return p.Contains(f.src) }
			} else {
				m = func(f *flow) bool { return p.Contains(f.dst) }
			}
		default:
			m, err = tr.moduleOption(module, opt, val)
			if err != nil {
				return nil, fmt.Errorf("%q: %w", text, err)
			}
		}
		if neg {
			m = not(m)
		}
		if module == "connmark" || module == "conntrack" && opt != "--ctstate" {
			m = tracked(m)
		}
		r.matches = append(r.matches, m)
	}
	return nil, fmt.Errorf("%q: no target (ifisp writes none)", text)
}

func not(m func(*flow) bool) func(*flow) bool { return func(f *flow) bool { return !m(f) } }

// tracked is m for a packet with a conntrack entry, and false for one
// without, negated or not: so xt_conntrack (but for --ctstate, which has
// INVALID and UNTRACKED) and xt_connmark treat such a packet.
func tracked(m func(*flow) bool) func(*flow) bool {
	return func(f *flow) bool { return f.tracked() && m(f) }
}

// ifaceMatch is -i or -o: a name, or a prefix ending in "+". A packet
// without that interface (none in yet, or none out yet) does not match.
func ifaceMatch(opt, name string) func(*flow) bool {
	return func(f *flow) bool {
		have := f.in
		if opt == "-o" {
			have = f.visibleOut()
		}
		if p, ok := strings.CutSuffix(name, "+"); ok {
			return have != "" && strings.HasPrefix(have, p)
		}
		return have == name
	}
}

// prefix reads an address as -s, -d and conntrack's address options print
// it: a prefix, or a host without its length. It must be of the tracer's
// family: the other family's in a table would be a bug of the renderer.
func (tr *tracer) prefix(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		a, aerr := netip.ParseAddr(s)
		if aerr != nil {
			return p, err
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if p.Addr().Is6() != tr.v6 {
		return p, fmt.Errorf("%s is of the other family", s)
	}
	return p, nil
}

// moduleOption is an option of the match module loaded last.
func (tr *tracer) moduleOption(module, opt, val string) (func(*flow) bool, error) {
	switch module + " " + opt {
	case "comment --comment":
		return func(*flow) bool { return true }, nil
	case "connmark --mark", "mark --mark":
		v, mask, err := markMask(val)
		if module == "connmark" {
			return func(f *flow) bool { return f.ctmark&mask == v }, err
		}
		return func(f *flow) bool { return f.mark&mask == v }, err
	case "conntrack --ctstate":
		want := strings.Split(val, ",")
		for _, s := range want {
			if !slices.Contains(states, s) {
				return nil, fmt.Errorf("the tracer does not know ctstate %s", s)
			}
		}
		return func(f *flow) bool { return slices.Contains(want, f.state) }, nil
	case "conntrack --ctstatus":
		if val != "CONFIRMED" {
			return nil, fmt.Errorf("the tracer does not know ctstatus %s", val)
		}
		return func(f *flow) bool { return f.confirmed }, nil
	case "conntrack --ctdir":
		if val != "ORIGINAL" && val != "REPLY" {
			return nil, fmt.Errorf("no ctdir %s", val)
		}
		return func(f *flow) bool { return f.reply == (val == "REPLY") }, nil
	case "conntrack --ctorigdst", "conntrack --ctrepldst":
		// Only the destinations: the tracer does not model the sources
		// of the other tuple (see packet.nat).
		p, err := tr.prefix(val)
		if opt == "--ctorigdst" {
			return func(f *flow) bool { return p.Contains(f.orig[1]) }, err
		}
		return func(f *flow) bool { return p.Contains(f.repl[1]) }, err
	}
	return nil, fmt.Errorf("the tracer does not know option %s (of match %q)", opt, module)
}

// markMask reads "value/mask" or "value" (mask all ones), in hex.
func markMask(s string) (v, mask uint32, err error) {
	vs, ms, ok := strings.Cut(s, "/")
	mask = ^uint32(0)
	if ok {
		m, err := strconv.ParseUint(ms, 0, 32)
		if err != nil {
			return 0, 0, fmt.Errorf("mask %q: %w", ms, err)
		}
		mask = uint32(m)
	}
	n, err := strconv.ParseUint(vs, 0, 32)
	return uint32(n), mask, err
}

// targetOptions reads a target's options: each of flags stands alone,
// each of valued takes a value; anything else is refused.
func targetOptions(words, flags, valued []string) (map[string]string, error) {
	opts := map[string]string{}
	for i := 0; i < len(words); i++ {
		switch w := words[i]; {
		case slices.Contains(flags, w):
			opts[w] = ""
		case slices.Contains(valued, w) && i+1 < len(words):
			opts[w] = words[i+1]
			i++
		default:
			return nil, fmt.Errorf("the tracer does not know target option %s", w)
		}
	}
	return opts, nil
}

// parseTarget reads -j NAME and its options. An unknown name is taken for
// a user chain, which must exist by COMMIT (checkJumps), so an unknown
// target (LOG, DNAT, ...) fails there.
func (tr *tracer) parseTarget(table, name string, words []string) (target func(*flow) string, jump string, err error) {
	nat := func() error {
		if table != "nat" {
			return fmt.Errorf("%s outside the nat table", name)
		}
		return nil
	}
	switch name {
	case "ACCEPT", "DROP", "RETURN":
		_, err = targetOptions(words, nil, nil)
		return func(*flow) string { return name }, "", err
	case "SNAT":
		opts, err := targetOptions(words, nil, []string{"--to-source"})
		if err == nil {
			err = nat()
		}
		to, perr := netip.ParseAddr(opts["--to-source"]) // a range or a port fails here
		if err == nil && (perr != nil || to.Is6() != tr.v6) {
			err = fmt.Errorf("the tracer takes --to-source of one address of its family, not %q", opts["--to-source"])
		}
		return func(f *flow) string { f.repl[1] = to; return "ACCEPT" }, "", err
	case "MASQUERADE":
		_, err := targetOptions(words, nil, nil)
		if err == nil {
			err = nat()
		}
		return func(f *flow) string {
			a, ok := tr.addrs[f.out]
			if !ok {
				f.t.Fatalf("MASQUERADE out of %q, whose address the tracer was not given", f.out)
			}
			f.repl[1] = a
			return "ACCEPT"
		}, "", err
	case "NETMAP":
		opts, err := targetOptions(words, nil, []string{"--to"})
		if err == nil {
			err = nat()
		}
		to, perr := tr.prefix(opts["--to"])
		if err == nil && perr != nil {
			err = fmt.Errorf("--to: %w", perr)
		}
		return func(f *flow) string {
			if f.hook != "POSTROUTING" {
				f.t.Fatalf("NETMAP in %s: the tracer maps sources (POSTROUTING) only", f.hook)
			}
			f.repl[1] = netmap(f.src, to)
			return "ACCEPT"
		}, "", err
	case "CONNMARK":
		opts, err := targetOptions(words, []string{"--save-mark", "--restore-mark"}, []string{"--set-xmark", "--nfmask", "--ctmask"})
		if err != nil {
			return nil, "", err
		}
		nfmask, ctmask := ^uint32(0), ^uint32(0)
		for opt, m := range map[string]*uint32{"--nfmask": &nfmask, "--ctmask": &ctmask} {
			if s, ok := opts[opt]; ok {
				if *m, _, err = markMask(s); err != nil {
					return nil, "", err
				}
			}
		}
		_, set := opts["--set-xmark"]
		_, save := opts["--save-mark"]
		_, restore := opts["--restore-mark"]
		switch {
		// Without a conntrack entry, CONNMARK does nothing.
		case set && !save && !restore && len(opts) == 1:
			v, mask, err := markMask(opts["--set-xmark"])
			return func(f *flow) string {
				if f.tracked() {
					f.ctmark = f.ctmark&^mask ^ v
				}
				return ""
			}, "", err
		case save && !set && !restore:
			return func(f *flow) string {
				if f.tracked() {
					f.ctmark = f.ctmark&^ctmask ^ f.mark&nfmask
				}
				return ""
			}, "", nil
		case restore && !set && !save:
			return func(f *flow) string {
				if f.tracked() {
					f.mark = f.mark&^nfmask ^ f.ctmark&ctmask
				}
				return ""
			}, "", nil
		}
		return nil, "", fmt.Errorf("CONNMARK %v: not one of --set-xmark, --save-mark, --restore-mark", words)
	case "MARK":
		opts, err := targetOptions(words, nil, []string{"--set-xmark"})
		if err != nil {
			return nil, "", err
		}
		v, mask, err := markMask(opts["--set-xmark"])
		return func(f *flow) string { f.mark = f.mark&^mask ^ v; return "" }, "", err
	}
	if len(words) > 0 {
		return nil, "", fmt.Errorf("the tracer does not know target %s %v", name, words)
	}
	return func(*flow) string { return name }, name, nil
}

// netmap maps a's network bits onto to's, keeping its host bits.
func netmap(a netip.Addr, to netip.Prefix) netip.Addr {
	b, t := a.As16(), to.Addr().As16()
	bits := to.Bits()
	if a.Is4() {
		bits += 96
	}
	for i := range b {
		n := min(max(bits-8*i, 0), 8) // network bits in this byte
		m := byte(0xff << (8 - n))
		b[i] = b[i]&^m | t[i]&m
	}
	out := netip.AddrFrom16(b)
	if a.Is4() {
		return out.Unmap()
	}
	return out
}

// packet is what the tracer is asked about: a packet as it reaches the
// router (or as the router sends it), with what conntrack knows of its
// connection. Its route is given (out): the tracer does not route, but it
// reports the mark routing would see.
type packet struct {
	in, out  string // "" in: the router's own packet; "" out: one to the router
	src, dst netip.Addr
	// state is conntrack's: NEW, ESTABLISHED or RELATED; or INVALID or
	// UNTRACKED for a packet without a conntrack entry (neighbour
	// discovery is UNTRACKED), whose ctmark is then ignored.
	state string
	// seen says a NEW packet's connection is confirmed already (the
	// packet is a retransmission of the first); the other states imply
	// it. Only an unconfirmed connection's packet crosses the nat table.
	seen  bool
	reply bool // the packet goes in its connection's reply direction
	// nat is where NAT shows in conntrack's other tuple: for a packet in
	// the original direction, the reply's destination (its SNAT
	// address); for a reply, the original destination (the address a
	// port forward's DNAT replaced). Invalid: the packet's own source.
	// The other tuple's source is taken to be the packet's destination:
	// the tracer refuses --ctorigsrc and --ctreplsrc, which would read it.
	nat          netip.Addr
	mark, ctmark uint32
}

// result is what became of a packet.
type result struct {
	verdict string // ACCEPT or DROP
	// snat is the source NAT gives the packet on its way out: a new
	// connection's SNAT, NETMAP or MASQUERADE, or an established one's
	// mapping. Invalid: it leaves with its own (or does not leave).
	snat netip.Addr
	// routeMark is the packet's mark when routing decides its way: after
	// mangle PREROUTING, or for the router's own packet after mangle
	// OUTPUT (where the kernel routes it again when its mark changed).
	routeMark    uint32
	mark, ctmark uint32 // when the packet leaves, arrives, or is dropped
	log          []string
}

// flow is a packet on its way through the hooks, with its conntrack entry.
type flow struct {
	packet
	t          *testing.T // for what only a trace can find wrong
	confirmed  bool
	orig, repl [2]netip.Addr // each direction's tuple: source, destination
	hook       string        // the built-in chain being traversed
	log        []string
}

// states are the conntrack states the tracer knows.
var states = []string{"NEW", "ESTABLISHED", "RELATED", "INVALID", "UNTRACKED"}

// tracked says the packet has a conntrack entry.
func (f *flow) tracked() bool { return f.state != "INVALID" && f.state != "UNTRACKED" }

// visibleOut is the out interface as the current hook knows it: none
// before the routing decision.
func (f *flow) visibleOut() string {
	if f.hook == "PREROUTING" || f.hook == "INPUT" {
		return ""
	}
	return f.out
}

// hop is one built-in chain on a packet's path; the "route" hop is where
// routing decides.
type hop struct{ table, chain string }

// The paths through the hooks, in the kernel's order (mangle before nat in
// PREROUTING and OUTPUT, filter before nat's SNAT in INPUT and
// POSTROUTING).
var (
	forwardPath = []hop{{"mangle", "PREROUTING"}, {"nat", "PREROUTING"}, {"", "route"}, {"mangle", "FORWARD"}, {"filter", "FORWARD"}, {"mangle", "POSTROUTING"}, {"nat", "POSTROUTING"}}
	inputPath   = []hop{{"mangle", "PREROUTING"}, {"nat", "PREROUTING"}, {"", "route"}, {"mangle", "INPUT"}, {"filter", "INPUT"}, {"nat", "INPUT"}}
	outputPath  = []hop{{"mangle", "OUTPUT"}, {"", "route"}, {"nat", "OUTPUT"}, {"filter", "OUTPUT"}, {"mangle", "POSTROUTING"}, {"nat", "POSTROUTING"}}
)

// trace walks p through the chains of its path.
func (tr *tracer) trace(t *testing.T, p packet) result {
	t.Helper()
	if !slices.Contains(states, p.state) || p.in == "" && p.out == "" {
		t.Fatalf("packet %+v: no state, or neither in nor out", p)
	}
	f := &flow{packet: p, t: t, confirmed: p.seen || p.state != "NEW"}
	if !f.tracked() {
		f.ctmark = 0
	}
	them, us := p.dst, p.src
	if p.nat.IsValid() {
		us = p.nat
	}
	if p.reply {
		f.orig, f.repl = [2]netip.Addr{them, us}, [2]netip.Addr{p.src, p.dst}
	} else {
		f.orig, f.repl = [2]netip.Addr{p.src, p.dst}, [2]netip.Addr{them, us}
	}
	path := forwardPath
	switch {
	case p.in == "":
		path = outputPath
	case p.out == "":
		path = inputPath
	}
	res := result{verdict: "ACCEPT"}
	for _, h := range path {
		if h.chain == "route" {
			res.routeMark = f.mark
			continue
		}
		if h.table == "nat" && (f.confirmed || !f.tracked()) {
			continue // conntrack applies a confirmed connection's NAT; untracked, there is none
		}
		f.hook = h.chain
		if v := tr.run(f, h.table, h.chain); v == "DROP" {
			res.verdict = "DROP"
			break
		}
	}
	if p.out != "" && res.verdict == "ACCEPT" {
		src := f.repl[1]
		if p.reply {
			src = f.orig[1]
		}
		if src != p.src {
			res.snat = src
		}
	}
	res.mark, res.ctmark, res.log = f.mark, f.ctmark, f.log
	return res
}

// run traverses one built-in chain and the user chains it jumps to, and
// returns the verdict: ACCEPT or DROP, the chain's policy when no rule
// gave one.
func (tr *tracer) run(f *flow, table, builtin string) string {
	f.t.Helper()
	tab := tr.tables[table]
	if tab == nil {
		return "ACCEPT" // a table nothing loaded: the kernel's is empty
	}
	type frame struct {
		name string
		next int
	}
	stack := []frame{{builtin, 0}}
	for len(stack) > 0 {
		top := &stack[len(stack)-1]
		c := tab[top.name]
		if top.next == len(c.rules) {
			stack = stack[:len(stack)-1]
			continue
		}
		r := c.rules[top.next]
		top.next++
		if slices.ContainsFunc(r.matches, func(m func(*flow) bool) bool { return !m(f) }) {
			continue
		}
		f.log = append(f.log, fmt.Sprintf("%s %s: %s", table, top.name, r.text))
		switch v := r.target(f); v {
		case "":
		case "ACCEPT", "DROP":
			return v
		case "RETURN":
			stack = stack[:len(stack)-1]
		default:
			if len(stack) > 10 {
				f.t.Fatalf("%s %s: jumps nest deeper than ifisp's ever do: a loop?", table, builtin)
			}
			stack = append(stack, frame{v, 0})
		}
	}
	return tab[builtin].policy
}

var ip = netip.MustParseAddr

// The tracer refuses what it does not understand, instead of letting such
// a rule never match.
func TestTracerRefuses(t *testing.T) {
	rule := func(table, rule string) string { return "*" + table + "\n-A POSTROUTING " + rule + "\nCOMMIT\n" }
	for _, text := range []string{
		rule("nat", "-p tcp -j ACCEPT"),
		rule("nat", "-m addrtype --dst-type LOCAL -j ACCEPT"),
		rule("nat", "! -m comment --comment x -j ACCEPT"),
		rule("nat", "-m conntrack --ctstate SNAT -j ACCEPT"),
		rule("nat", "-m conntrack --ctstatus ASSURED -j ACCEPT"),
		rule("nat", "-m conntrack --ctorigsrc 10.0.0.1 -j ACCEPT"),
		rule("nat", "-m mark --mark 0x1/0x1 --foo 1 -j ACCEPT"),
		rule("nat", "--ctdir REPLY -j ACCEPT"),
		rule("nat", `-m comment --comment "open -j ACCEPT`),
		rule("nat", "-s 2001:db8::/32 -j ACCEPT"),
		rule("nat", "-o wana"),
		rule("nat", "! -j ACCEPT"),
		rule("nat", "-j ACCEPT --foo"),
		rule("nat", "-j LOG --log-prefix x"),
		rule("nat", "-j LOG"),
		rule("nat", "-j IFISP-NOWHERE"),
		rule("nat", "-j PREROUTING"),
		rule("nat", "-j DNAT --to-destination 10.0.0.1"),
		rule("nat", "-j SNAT --to-source 198.51.100.2:1024"),
		rule("nat", "-j SNAT --to-source 198.51.100.2-198.51.100.3"),
		rule("nat", "-j MASQUERADE --to-ports 1024"),
		rule("nat", "-j NETMAP --to 2001:db8::/64"),
		rule("mangle", "-j SNAT --to-source 198.51.100.2"),
		rule("mangle", "-j CONNMARK --set-xmark 0x1/0x1 --save-mark"),
		rule("mangle", "-j CONNMARK --restore-mark --mask 0xff"),
		rule("mangle", "-j MARK --set-mark 0x1"),
		"*raw\nCOMMIT\n",
		"*nat\n-D POSTROUTING -j ACCEPT\nCOMMIT\n",
		"*nat\n-X IFISP-SNAT\nCOMMIT\n",
		"*nat\n:POSTROUTING - [0:0]\nCOMMIT\n",
		"*nat\n:IFISP-SNAT ACCEPT [0:0]\nCOMMIT\n",
		"*nat\n-A IFISP-SNAT -j ACCEPT\nCOMMIT\n",
		"*nat\n-I POSTROUTING 2 -j ACCEPT\nCOMMIT\n",
		"*nat\n-A POSTROUTING -j ACCEPT\n",
		"-A POSTROUTING -j ACCEPT\n",
	} {
		if err := newTracer(false).load(text); err == nil {
			t.Errorf("the tracer took\n%s", text)
		}
	}
}

// The tracer's own workings, on rules of no one's: marks and their masks,
// negation, user chains and RETURN, a DROP policy, interface prefixes, no
// out interface before routing, and a packet without a conntrack entry,
// which no conntrack option matches, negated or not, and whose connmark
// nothing sets.
func TestTracerSemantics(t *testing.T) {
	tr := newTracer(false)
	tr.mustLoad(t, `*mangle
:X - [0:0]
-A PREROUTING -o wan+ -j MARK --set-xmark 0x8/0x8
-A PREROUTING -j X
-A PREROUTING -j MARK --set-xmark 0x10/0xf0
-A PREROUTING -m conntrack ! --ctdir REPLY -j MARK --set-xmark 0x100/0x100
-A X -m mark ! --mark 0x1/0x1 -j RETURN
-A X -j CONNMARK --save-mark --nfmask 0xff --ctmask 0xff
COMMIT
*filter
:FORWARD DROP [0:0]
-A FORWARD -o wan+ -j ACCEPT
COMMIT
`)
	for _, c := range []struct {
		name string
		pkt  packet
		want string
	}{
		{"saved under the masks, then marked", packet{in: "lan0", out: "wanx", state: "NEW", mark: 0x1, ctmark: 0xff00}, "ACCEPT mark 0x111 ctmark 0xff01"},
		{"returned from X, marked", packet{in: "lan0", out: "wanx", state: "NEW", mark: 0x2, ctmark: 0xff00}, "ACCEPT mark 0x112 ctmark 0xff00"},
		{"a reply, not marked as original", packet{in: "lan0", out: "wanx", state: "ESTABLISHED", reply: true, mark: 0x2}, "ACCEPT mark 0x12 ctmark 0x0"},
		{"untracked: nothing saved, not marked as original", packet{in: "lan0", out: "wanx", state: "UNTRACKED", mark: 0x1, ctmark: 0xff00}, "ACCEPT mark 0x11 ctmark 0x0"},
		{"dropped by the policy", packet{in: "lan0", out: "lan1", state: "NEW"}, "DROP mark 0x110 ctmark 0x0"},
	} {
		c.pkt.src, c.pkt.dst = ip("10.1.0.5"), ip("192.0.2.9")
		r := tr.trace(t, c.pkt)
		if got := fmt.Sprintf("%s mark %#x ctmark %#x", r.verdict, r.mark, r.ctmark); got != c.want {
			t.Errorf("%s: got %s, want %s\n\t%s", c.name, got, c.want, strings.Join(r.log, "\n\t"))
		}
	}
	for _, c := range []struct{ addr, to, want string }{
		{"10.1.0.5", "192.0.2.0/24", "192.0.2.5"},
		{"10.1.2.3", "172.16.0.0/12", "172.17.2.3"},
		{"fd00:1::5", "2001:db8:a100:ff::/64", "2001:db8:a100:ff::5"},
		{"fd00:1::5", "2001:db8:a100:ff00::/56", "2001:db8:a100:ff00::5"},
	} {
		if got := netmap(ip(c.addr), netip.MustParsePrefix(c.to)).String(); got != c.want {
			t.Errorf("netmap(%s, %s) = %s, want %s", c.addr, c.to, got, c.want)
		}
	}
}
