package nat

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/ifisp/ifisp/pkg/connmark"
	"github.com/ifisp/ifisp/pkg/stanza"
)

// A packet tracer in the manner of kube-proxy's tracePacket: the rule set
// ifisp renders (applied by Up to the fake backend, read back as
// iptables-save prints it, the administrator's own rules included) is
// walked by a packet the way netfilter walks it, so the tests say what
// happens to packets, not which lines exist. The tracer knows only the
// matches and targets ifisp writes, and fails the test on any other: it
// can never pass a rule it does not understand.

// packet is one packet and what conntrack knows of its connection.
type packet struct {
	in, out  string // interfaces; in "" is the router's own, out "" is for the router
	src, dst string
	state    string // "NEW" or "ESTABLISHED"
	dir      string // "ORIGINAL" or "REPLY"
	// confirmed is conntrack's CONFIRMED status: false only for the
	// first packet of a connection.
	confirmed bool
	// origDst and replDst are the connection's tuples as conntrack has
	// them when the packet passes filter: the reply's destination is the
	// SNAT address once a flow was NATed, the original source before.
	origDst, replDst string
	mark, ctmark     uint32
}

// verdict is what became of the packet.
type verdict struct {
	accepted       bool
	snat           string // the source NAT gave it, "" for none
	mark, ctmark   uint32
	matchedRuleIDs []string
}

// tables is a parsed iptables-save: table → chain → rules.
type tables map[string]map[string][]string

func parseTables(t *testing.T, save string) tables {
	t.Helper()
	ts := tables{}
	var cur string
	for _, line := range strings.Split(save, "\n") {
		switch {
		case strings.HasPrefix(line, "*"):
			cur = line[1:]
			ts[cur] = map[string][]string{}
		case strings.HasPrefix(line, ":"):
			ts[cur][strings.Fields(line[1:])[0]] = nil
		case strings.HasPrefix(line, "-A "):
			chain, rule, _ := strings.Cut(line[3:], " ")
			ts[cur][chain] = append(ts[cur][chain], rule)
		case line == "" || line == "COMMIT" || strings.HasPrefix(line, "#"):
		default:
			t.Fatalf("iptables-save line the tracer does not know: %q", line)
		}
	}
	return ts
}

// trace sends p through the hooks a forwarded packet (or the router's own,
// in ""; or one for the router, out "") passes, in netfilter's order.
func trace(t *testing.T, ts tables, p packet) verdict {
	t.Helper()
	v := verdict{accepted: true, mark: p.mark, ctmark: p.ctmark}
	hooks := [][2]string{}
	if p.in != "" {
		hooks = append(hooks, [2]string{"mangle", "PREROUTING"})
	}
	switch {
	case p.in != "" && p.out != "":
		hooks = append(hooks, [2]string{"filter", "FORWARD"})
	case p.in == "":
		hooks = append(hooks, [2]string{"filter", "OUTPUT"})
	}
	if p.out != "" {
		hooks = append(hooks, [2]string{"mangle", "POSTROUTING"})
		if p.state == "NEW" { // NAT sees the first packet only
			hooks = append(hooks, [2]string{"nat", "POSTROUTING"})
		}
	}
	for _, h := range hooks {
		walk(t, ts, h[0], h[1], p, &v, 0)
		if !v.accepted {
			return v // dropped: no later hook sees it
		}
	}
	return v
}

// walk runs chain; it returns false when a terminal target (ACCEPT, DROP,
// SNAT) ended the packet's way through the hook's chains. Only DROP ends
// it for the later hooks too.
func walk(t *testing.T, ts tables, table, chain string, p packet, v *verdict, depth int) bool {
	t.Helper()
	if depth > 8 {
		t.Fatalf("%s %s: chains nest too deep", table, chain)
	}
	for _, rule := range ts[table][chain] {
		target, args, ok := match(t, rule, p, v)
		if !ok {
			continue
		}
		v.matchedRuleIDs = append(v.matchedRuleIDs, table+"/"+chain+": "+rule)
		switch target {
		case "RETURN":
			return true
		case "ACCEPT":
			return false
		case "DROP":
			v.accepted = false
			return false
		case "SNAT":
			v.snat = value(t, args, "--to-source")
			return false
		case "CONNMARK":
			switch {
			case has(args, "--set-xmark"):
				val, mask := valueMask(t, value(t, args, "--set-xmark"))
				v.ctmark = (v.ctmark &^ mask) ^ val
			case has(args, "--restore-mark"):
				nf, ct := hexOf(t, value(t, args, "--nfmask")), hexOf(t, value(t, args, "--ctmask"))
				v.mark = (v.mark &^ nf) ^ (v.ctmark & ct)
			default:
				t.Fatalf("CONNMARK %q: the tracer does not know it", args)
			}
		default:
			if _, ok := ts[table][target]; !ok || !strings.HasPrefix(target, Prefix) {
				t.Fatalf("rule %q: target %s the tracer does not know", rule, target)
			}
			if !walk(t, ts, table, target, p, v, depth+1) {
				return false
			}
		}
	}
	return true // a built-in chain's policy: ACCEPT
}

// match says whether rule matches p (with v's marks as they are now) and
// returns its target and the target's arguments.
func match(t *testing.T, rule string, p packet, v *verdict) (target string, args []string, ok bool) {
	t.Helper()
	words := split(t, rule)
	ok = true
	for i := 0; i < len(words); i++ {
		w := words[i]
		neg := false
		if w == "!" {
			neg, i = true, i+1
			w = words[i]
		}
		next := func() string {
			i++
			if i >= len(words) {
				t.Fatalf("rule %q: %s wants a value", rule, w)
			}
			return words[i]
		}
		is := func(b bool) {
			if b == neg {
				ok = false
			}
		}
		switch w {
		case "-m":
			switch m := next(); m {
			case "conntrack", "connmark", "mark", "comment":
			default:
				t.Fatalf("rule %q: match -m %s the tracer does not know", rule, m)
			}
		case "--comment":
			next()
		case "-i":
			is(p.in == next())
		case "-o":
			is(p.out == next())
		case "-s":
			is(contains(t, next(), p.src))
		case "-d":
			is(contains(t, next(), p.dst))
		case "--ctstate":
			is(p.state == next())
		case "--ctdir":
			is(p.dir == next())
		case "--ctstatus":
			if s := next(); s != "CONFIRMED" {
				t.Fatalf("rule %q: --ctstatus %s the tracer does not know", rule, s)
			}
			is(p.confirmed)
		case "--ctorigdst":
			is(contains(t, next(), p.origDst))
		case "--ctrepldst":
			is(contains(t, next(), p.replDst))
		case "--mark":
			// -m connmark --mark or -m mark --mark: which one is the
			// word before the option's -m.
			val, mask := valueMask(t, next())
			if strings.Contains(rule, "-m connmark --mark") && !strings.Contains(rule, "-m mark --mark") {
				is(v.ctmark&mask == val)
			} else {
				t.Fatalf("rule %q: -m mark the tracer does not know", rule)
			}
		case "-j":
			return next(), words[i+1:], ok
		default:
			t.Fatalf("rule %q: %s: the tracer does not know it", rule, w)
		}
	}
	t.Fatalf("rule %q: no target", rule)
	return "", nil, false
}

// split cuts a rule into words, as the shell would, with quotes.
func split(t *testing.T, rule string) []string {
	var words []string
	var b strings.Builder
	quoted, in := false, false
	for i := 0; i < len(rule); i++ {
		c := rule[i]
		switch {
		case c == '\\' && quoted && i+1 < len(rule):
			i++
			b.WriteByte(rule[i])
		case c == '"':
			quoted, in = !quoted, true
		case c == ' ' && !quoted:
			if in {
				words = append(words, b.String())
				b.Reset()
				in = false
			}
		default:
			b.WriteByte(c)
			in = true
		}
	}
	if quoted {
		t.Fatalf("rule %q: unbalanced quotes", rule)
	}
	if in {
		words = append(words, b.String())
	}
	return words
}

// has says whether args has the option name.
func has(args []string, name string) bool {
	for _, a := range args {
		if a == name {
			return true
		}
	}
	return false
}

// value returns the value after the option name in args.
func value(t *testing.T, args []string, name string) string {
	t.Helper()
	for i, a := range args {
		if a == name && i+1 < len(args) {
			return args[i+1]
		}
	}
	t.Fatalf("%q: no value for %s", args, name)
	return ""
}

func valueMask(t *testing.T, s string) (uint32, uint32) {
	v, m, ok := strings.Cut(s, "/")
	if !ok {
		t.Fatalf("%q: want VALUE/MASK", s)
	}
	return hexOf(t, v), hexOf(t, m)
}

func hexOf(t *testing.T, s string) uint32 {
	n, err := strconv.ParseUint(strings.TrimPrefix(s, "0x"), 16, 32)
	if err != nil {
		t.Fatalf("%q: not a hex number", s)
	}
	return uint32(n)
}

// contains says whether address a is in p (an address or a prefix).
func contains(t *testing.T, p, a string) bool {
	addr, err := netip.ParseAddr(a)
	if err != nil {
		return false // the packet has none: "" matches nothing
	}
	if !strings.Contains(p, "/") {
		return netip.MustParseAddr(p) == addr
	}
	return netip.MustParsePrefix(p).Contains(addr)
}

// traced renders two ISPs' rule sets of family f with Up, through the fake
// backend and its administrator's rules, and parses iptables-save's view.
func traced(t *testing.T, links ...*Link) tables {
	t.Helper()
	f := newFake()
	for _, l := range links {
		if err := Up(f, l); err != nil {
			t.Fatal(err)
		}
	}
	return parseTables(t, f.state())
}

func TestTracePackets(t *testing.T) {
	wana := link("wana", "198.51.100.2", "10.1.0.0/24")
	wana.Config.Sources = []netip.Prefix{netip.MustParsePrefix("198.51.100.64/28")}
	wanb := link("wanb", "203.0.113.2", "10.1.0.0/24")
	ts := traced(t, wana, wanb)
	out := func(l *Link) uint32 { return l.Config.Mark.Out() }
	in := func(l *Link) uint32 { return l.Config.Mark.In() }
	const admin = 0x5 // the administrator's PREROUTING mark on lan0, below ifisp's mask

	for _, tc := range []struct {
		name string
		p    packet
		want verdict
	}{
		{"a LAN host's first packet out of wana is NATed to wana's address, its connection marked wana's",
			packet{in: "lan0", out: "wana", src: "10.1.0.5", dst: "192.0.2.100", state: "NEW", dir: "ORIGINAL", origDst: "192.0.2.100", replDst: "10.1.0.5"},
			verdict{accepted: true, snat: "198.51.100.2", ctmark: out(wana) | admin}},
		{"the same out of wanb: wanb's address and mark",
			packet{in: "lan0", out: "wanb", src: "10.1.0.5", dst: "192.0.2.100", state: "NEW", dir: "ORIGINAL", origDst: "192.0.2.100", replDst: "10.1.0.5"},
			verdict{accepted: true, snat: "203.0.113.2", ctmark: out(wanb) | admin}},
		{"a NATed flow's later packets pass wana's guard, their mark restored from the connection's (what isp-sticky routes by)",
			packet{in: "lan0", out: "wana", src: "10.1.0.5", dst: "192.0.2.100", state: "ESTABLISHED", dir: "ORIGINAL", confirmed: true, origDst: "192.0.2.100", replDst: "198.51.100.2", ctmark: out(wana)},
			verdict{accepted: true, mark: out(wana), ctmark: out(wana) | admin}},
		{"a flow NATed to wana that routing moved to wanb is dropped by wanb's guard (never leaves spoofed)",
			packet{in: "lan0", out: "wanb", src: "10.1.0.5", dst: "192.0.2.100", state: "ESTABLISHED", dir: "ORIGINAL", confirmed: true, origDst: "192.0.2.100", replDst: "198.51.100.2", ctmark: out(wana)},
			verdict{accepted: false, mark: out(wana), ctmark: out(wana) | admin}},
		{"the router's own packet from wana's address out of wanb is dropped",
			packet{out: "wanb", src: "198.51.100.2", dst: "192.0.2.100", state: "NEW", dir: "ORIGINAL", origDst: "192.0.2.100", replDst: "198.51.100.2"},
			verdict{accepted: false}},
		{"the router's own packet from an isp-source address out of wana passes",
			packet{out: "wana", src: "198.51.100.70", dst: "192.0.2.100", state: "NEW", dir: "ORIGINAL", origDst: "192.0.2.100", replDst: "198.51.100.70"},
			verdict{accepted: true, ctmark: out(wana)}},
		{"a new inbound connection on wanb is marked wanb's inbound",
			packet{in: "wanb", src: "192.0.2.100", dst: "203.0.113.2", state: "NEW", dir: "ORIGINAL", origDst: "203.0.113.2", replDst: "192.0.2.100"},
			verdict{accepted: true, ctmark: in(wanb)}},
		{"its reply from a LAN host (a port forward) gets the mark back, so the fwmark rule routes it by wanb, and passes wanb's guard",
			packet{in: "lan0", out: "wanb", src: "10.1.0.9", dst: "192.0.2.100", state: "ESTABLISHED", dir: "REPLY", confirmed: true, origDst: "203.0.113.2", replDst: "192.0.2.100", ctmark: in(wanb)},
			verdict{accepted: true, mark: in(wanb), ctmark: in(wanb) | admin}},
		{"LAN to LAN touches nothing of ifisp's",
			packet{in: "lan0", out: "lan1", src: "10.1.0.5", dst: "10.2.0.5", state: "NEW", dir: "ORIGINAL", origDst: "10.2.0.5", replDst: "10.1.0.5"},
			verdict{accepted: true, ctmark: admin}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := trace(t, ts, tc.p)
			if got.accepted != tc.want.accepted || got.snat != tc.want.snat || got.mark != tc.want.mark || got.ctmark != tc.want.ctmark {
				t.Errorf("got accepted %v, snat %q, mark %#x, ctmark %#x\nwant accepted %v, snat %q, mark %#x, ctmark %#x\nrules it matched:\n%s",
					got.accepted, got.snat, got.mark, got.ctmark, tc.want.accepted, tc.want.snat, tc.want.mark, tc.want.ctmark, strings.Join(got.matchedRuleIDs, "\n"))
			}
		})
	}
}

// TestTracePackets6: the IPv6 guard lets the link's own and link-local
// sources out of it, and nothing of another link's.
func TestTracePackets6(t *testing.T) {
	mk := func(iface, addr string, id uint32) *Link {
		c := &stanza.Config{Iface: iface, Family: stanza.Inet6, Mark: connmark.Mark{ID: id, Mask: connmark.DefaultMask}}
		return &Link{Config: c, Address: netip.MustParseAddr(addr)}
	}
	wana, wanb := mk("wana", "2001:db8:a::2", 1), mk("wanb", "2001:db8:b::2", 2)
	ts := traced(t, wana, wanb)
	for _, tc := range []struct {
		out, src string
		accepted bool
	}{
		{"wana", "2001:db8:a::2", true},
		{"wanb", "2001:db8:a::2", false},
		{"wanb", "fe80::1", true},
		{"wanb", "2001:db8:b::2", true},
		{"lan0", "2001:db8:a::2", true},
	} {
		t.Run(fmt.Sprintf("%s from %s", tc.out, tc.src), func(t *testing.T) {
			p := packet{out: tc.out, src: tc.src, dst: "2001:db8:ffff::100", state: "NEW", dir: "ORIGINAL", origDst: "2001:db8:ffff::100", replDst: tc.src}
			if got := trace(t, ts, p); got.accepted != tc.accepted {
				t.Errorf("accepted %v, want %v; rules:\n%s", got.accepted, tc.accepted, strings.Join(got.matchedRuleIDs, "\n"))
			}
		})
	}
}
