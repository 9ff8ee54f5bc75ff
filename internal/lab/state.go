package lab

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/ifisp/ifisp/pkg/registry"
)

// State is what an operator would compare of the router's kernel state:
// policy rules, every routing table, the iptables rule sets, the
// interfaces with their addresses, and ifisp's own registry of links.
// Each part is a list of normalised lines (single spaces, no counters, no
// comments) in a canonical order wherever the order carries no meaning,
// so that two States differ only where the kernel's state does, and
// StateDiff of two shows the lines that differ.
//
// Kept on purpose, although the kernel manages them: the local table,
// the interface prefix routes, and IPv6 link-local addresses and routes
// (fe80::, ff00::/8). They follow from the interfaces and addresses alone,
// and a veth's link-local address from its MAC, which a lab keeps: in one
// lab they are as stable as ifisp's own lines, and a missing one is a real
// difference (an interface left down, an address left behind). Dropped:
// route cache entries, packet counters, iptables-save's comments, and the
// interfaces' operational state (UP, DOWN, UNKNOWN), which the kernel's
// link watch sets asynchronously, up to a second after the change; the
// interface flags (UP, LOWER_UP, NO-CARRIER) are set at once and stay.
type State struct {
	Rules4, Rules6 []string // `ip rule`: "PRIO: SELECTOR ACTION", sorted by priority, then text
	// `ip route show table all`: "TABLE: ROUTE", sorted (a route's place
	// in a dump means nothing; the kernel picks by prefix and metric).
	Routes4, Routes6 []string
	// iptables-save and ip6tables-save: tables and chains sorted, the
	// rules of a chain in their order (see canonicalChain), counters
	// [0:0]. Still valid input for iptables-restore.
	IPTables, IP6Tables []string
	Links               []string // `ip -br link` and `ip -br addr`: "IFACE <FLAGS> ADDR...", sorted
	Registry            []string // RunDir/links/*.json: "NAME: JSON" without the volatile "since"
}

// State takes a snapshot of the router's state. Every command must
// succeed; a snapshot that cannot be taken fails the test.
func (l *Lab) State() State {
	l.t.Helper()
	run := func(args ...string) string { return l.Must(l.Router, args...) }
	return State{
		Rules4:    NormRules(run("ip", "-4", "rule")),
		Rules6:    NormRules(run("ip", "-6", "rule")),
		Routes4:   NormRoutes(run("ip", "-4", "route", "show", "table", "all")),
		Routes6:   NormRoutes(run("ip", "-6", "route", "show", "table", "all")),
		IPTables:  NormIptables(run("iptables-save")),
		IP6Tables: NormIptables(run("ip6tables-save")),
		Links:     NormLinks(run("ip", "-br", "link"), run("ip", "-br", "addr")),
		Registry:  l.registry(),
	}
}

// StateDiff returns the difference of two States as cmp.Diff prints it,
// "(-want +got)", or "" when they are equal. A part with no lines is
// empty however it was made (nil or not).
func StateDiff(want, got State) string {
	return cmp.Diff(want, got, cmpopts.EquateEmpty())
}

// registry reads the router's registry of links.
func (l *Lab) registry() []string {
	l.t.Helper()
	files, err := filepath.Glob(filepath.Join(l.RunDir, registry.Folder, "*.json"))
	if err != nil {
		l.t.Fatal(err)
	}
	var lines []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			l.t.Fatal(err)
		}
		lines = append(lines, NormRegistryFile(filepath.Base(f), b))
	}
	sort.Strings(lines)
	return lines
}

// NormRegistryFile returns a registry file as one line, "NAME: JSON", with
// its keys sorted and without "since" (the time the up hook wrote it) and
// "expires" (when the lease ends, which each renewal moves).
// A file that is not a JSON object is kept as it is: that is a difference
// too.
func NormRegistryFile(name string, b []byte) string {
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return name + ": unreadable: " + strings.Join(strings.Fields(string(b)), " ")
	}
	delete(m, "since")
	delete(m, "expires")
	out, _ := json.Marshal(m) // a map marshals with sorted keys
	return name + ": " + string(out)
}

// fields returns line with its runs of blanks made single spaces.
func fields(line string) string { return strings.Join(strings.Fields(line), " ") }

// NormRules normalises `ip rule` output: "PRIO: REST" lines sorted by
// priority and, within one priority, by text. The kernel tries rules of
// equal priority in the order they were added, but ifisp's rules of one
// priority select disjoint sources (one link's address each), so which
// link came up first says nothing.
func NormRules(out string) []string {
	type rule struct {
		prio int
		line string
	}
	var rules []rule
	for _, line := range strings.Split(out, "\n") {
		line = fields(line)
		if line == "" {
			continue
		}
		p, _, _ := strings.Cut(line, ":")
		prio, err := strconv.Atoi(p)
		if err != nil {
			prio = -1 // not a rule line: kept, first
		}
		rules = append(rules, rule{prio, line})
	}
	sort.Slice(rules, func(i, j int) bool {
		if rules[i].prio != rules[j].prio {
			return rules[i].prio < rules[j].prio
		}
		return rules[i].line < rules[j].line
	})
	lines := make([]string, len(rules))
	for i, r := range rules {
		lines[i] = r.line
	}
	return lines
}

// NormRoutes normalises `ip route show table all`: each route on one line
// (a multipath route's "nexthop" lines joined to it), its "table NAME"
// moved to the front as "NAME: " ("main" when ip prints none), cache
// entries dropped, sorted.
func NormRoutes(out string) []string {
	var routes []string
	for _, line := range strings.Split(out, "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		if (line[0] == ' ' || line[0] == '\t') && len(routes) > 0 {
			routes[len(routes)-1] += " " + fields(line)
			continue
		}
		routes = append(routes, fields(line))
	}
	var lines []string
	for _, r := range routes {
		f := strings.Fields(r)
		table, rest := "main", make([]string, 0, len(f))
		cache := false
		for i := 0; i < len(f); i++ {
			switch {
			case f[i] == "table" && i+1 < len(f):
				table = f[i+1]
				i++
			case f[i] == "cache":
				cache = true
			default:
				rest = append(rest, f[i])
			}
		}
		if !cache {
			lines = append(lines, table+": "+strings.Join(rest, " "))
		}
	}
	sort.Strings(lines)
	return lines
}

// chainCounters matches the counters of a chain line, ":NAME POLICY [p:b]".
var chainCounters = regexp.MustCompile(`\[\d+:\d+\]$`)

// NormIptables normalises iptables-save output: comments dropped, chain
// counters zeroed, tables sorted by name and each one "*TABLE", its chain
// lines sorted, its rules chain by chain (chains sorted, rules in their
// order as canonicalChain leaves it), "COMMIT".
func NormIptables(out string) []string {
	type table struct {
		chains []string            // ":NAME POLICY [0:0]"
		rules  map[string][]string // "-A NAME ...", by chain, in order
	}
	tables := map[string]*table{}
	var cur *table
	for _, line := range strings.Split(out, "\n") {
		line = fields(line)
		if line == "" || strings.HasPrefix(line, "#") || line == "COMMIT" {
			continue
		}
		if strings.HasPrefix(line, "*") {
			cur = &table{rules: map[string][]string{}}
			tables[line] = cur
			continue
		}
		if cur == nil { // a line before any table: kept, in a table of its own
			cur = &table{rules: map[string][]string{}}
			tables["*?"] = cur
		}
		if strings.HasPrefix(line, ":") {
			cur.chains = append(cur.chains, chainCounters.ReplaceAllString(line, "[0:0]"))
			continue
		}
		chain := ""
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "-A" {
			chain = f[1]
		}
		cur.rules[chain] = append(cur.rules[chain], line)
	}
	names := make([]string, 0, len(tables))
	for name := range tables {
		names = append(names, name)
	}
	sort.Strings(names)
	var lines []string
	for _, name := range names {
		t := tables[name]
		lines = append(lines, name)
		sort.Strings(t.chains)
		lines = append(lines, t.chains...)
		chains := make([]string, 0, len(t.rules))
		for chain := range t.rules {
			chains = append(chains, chain)
		}
		sort.Strings(chains)
		for _, chain := range chains {
			lines = append(lines, canonicalChain(t.rules[chain])...)
		}
		lines = append(lines, "COMMIT")
	}
	return lines
}

// canonicalChain returns a chain's rules in their order, except that runs
// of neighbouring rules that no packet can match two of are sorted: rules
// that each name a different interface with -o (or with -i), without
// negation or a "+" wildcard. A chain that dispatches to one chain per
// link (-o wana -j X-wana, -o wanb -j X-wanb) lists its jumps in the order
// the links came up, and that order means nothing. Two rules naming the
// same interface are never reordered: a duplicated jump stays a visible
// duplicate, and everything else keeps the order the kernel walks.
func canonicalChain(rules []string) []string {
	out := make([]string, 0, len(rules))
	var run []string
	flush := func() {
		sort.Strings(run)
		out = append(out, run...)
		run = run[:0]
	}
	for _, r := range rules {
		if len(run) > 0 && !disjointFromAll(r, run) {
			flush()
		}
		run = append(run, r)
	}
	flush()
	return out
}

// disjointFromAll tells whether no packet can match both r and any rule of
// run, judged by their interface matches alone.
func disjointFromAll(r string, run []string) bool {
	for _, o := range run {
		if !disjoint(r, o) {
			return false
		}
	}
	return true
}

// disjoint tells whether rules a and b name different interfaces with the
// same option (-o or -i), plainly: then no packet matches both.
func disjoint(a, b string) bool {
	for _, opt := range []string{"-o", "-i"} {
		x, okx := plainIface(a, opt)
		y, oky := plainIface(b, opt)
		if okx && oky && x != y {
			return true
		}
	}
	return false
}

// plainIface returns the interface a rule matches with opt ("-o", "-i"),
// when it names exactly one: not negated, not a "+" wildcard.
func plainIface(rule, opt string) (string, bool) {
	f := strings.Fields(rule)
	for i := 0; i+1 < len(f); i++ {
		if f[i] != opt {
			continue
		}
		if (i > 0 && f[i-1] == "!") || f[i+1] == "!" || strings.HasSuffix(f[i+1], "+") {
			return "", false
		}
		return f[i+1], true
	}
	return "", false
}

// NormLinks joins `ip -br link` and `ip -br addr`: one line per interface,
// "NAME <FLAGS> ADDR...", the addresses sorted, the "@PEER" of a veth's
// name and the operational state dropped (see State), sorted by name.
func NormLinks(link, addr string) []string {
	flags := map[string]string{}
	for _, line := range strings.Split(link, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		name, _, _ := strings.Cut(f[0], "@")
		flags[name] = ""
		for _, x := range f[1:] {
			if strings.HasPrefix(x, "<") {
				flags[name] = x
			}
		}
	}
	addrs := map[string][]string{}
	for _, line := range strings.Split(addr, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		name, _, _ := strings.Cut(f[0], "@")
		if _, ok := flags[name]; !ok {
			flags[name] = "<?>" // in ip addr, gone from ip link meanwhile
		}
		if len(f) > 2 {
			a := append([]string(nil), f[2:]...)
			sort.Strings(a)
			addrs[name] = a
		}
	}
	var lines []string
	for name, fl := range flags {
		lines = append(lines, strings.Join(append([]string{name, fl}, addrs[name]...), " "))
	}
	sort.Strings(lines)
	return lines
}
