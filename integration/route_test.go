package integration

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/ifisp/ifisp/internal/lab"
)

// newRouteLab builds a lab with ifisp's hooks installed and twoISPs written.
func newRouteLab(t *testing.T) *lab.Lab {
	l := lab.New(t)
	l.Install(bin)
	l.RecordHookEnv()
	l.Interfaces(lab.TwoISPs)
	return l
}

// adminState is what the administrator has on the router before ifisp runs:
// a rule before ifisp's, one between them, and a route in an ISP table.
func adminState(l *lab.Lab) {
	l.Must(l.Router, "ip", "rule", "add", "from", "10.1.0.0/24", "to", "10.9.0.0/16", "lookup", "main", "pref", "9000")
	l.Must(l.Router, "ip", "rule", "add", "from", "192.0.2.99", "lookup", "ispa", "pref", "10050")
	l.Must(l.Router, "ip", "rule", "add", "fwmark", "0x5/0xff", "lookup", "main", "pref", "10150")
	l.Must(l.Router, "ip", "route", "add", "unreachable", "192.0.2.99", "table", "ispa")
	l.Must(l.Router, "ip", "-6", "route", "add", "unreachable", "2001:db8:99::/48", "table", "ispb")
}

// routingState prints the router's rules, ISP tables and main-table
// defaults, the way an operator would look at them.
func routingState(l *lab.Lab) string {
	var b strings.Builder
	for _, cmd := range [][]string{
		{"ip", "-4", "rule"},
		{"ip", "-6", "rule"},
		{"ip", "-4", "route", "show", "table", "ispa"},
		{"ip", "-4", "route", "show", "table", "ispb"},
		{"ip", "-6", "route", "show", "table", "ispa"},
		{"ip", "-6", "route", "show", "table", "ispb"},
		{"ip", "-4", "route", "show", "default"},
		{"ip", "-6", "route", "show", "default"},
	} {
		b.WriteString("# " + strings.Join(cmd, " ") + "\n")
		out, _ := l.Exec(l.Router, cmd...)
		b.WriteString(out)
	}
	return b.String()
}

const stateUp = `# ip -4 rule
0:	from all lookup local
9000:	from 10.1.0.0/24 to 10.9.0.0/16 lookup main
10000:	from 198.51.100.2 lookup ispa proto ifisp
10000:	from 203.0.113.2 lookup ispb proto ifisp
10050:	from 192.0.2.99 lookup ispa
10100:	from 198.51.100.64/28 lookup ispa proto ifisp
10150:	from all fwmark 0x5/0xff lookup main
10200:	from all fwmark 0xe4000000/0xff000000 lookup ispa proto ifisp
10200:	from all fwmark 0xe5000000/0xff000000 lookup ispb proto ifisp
32766:	from all lookup main
32767:	from all lookup default
# ip -6 rule
0:	from all lookup local
10000:	from 2001:db8:a::2 lookup ispa proto ifisp
10000:	from 2001:db8:b::2 lookup ispb proto ifisp
10200:	from all fwmark 0xe4000000/0xff000000 lookup ispa proto ifisp
10200:	from all fwmark 0xe5000000/0xff000000 lookup ispb proto ifisp
32766:	from all lookup main
# ip -4 route show table ispa
default via 198.51.100.1 dev wana proto ifisp
throw 10.0.0.0/8 proto ifisp
throw 172.16.0.0/12 proto ifisp
unreachable 192.0.2.99
throw 192.168.0.0/16 proto ifisp
# ip -4 route show table ispb
default via 203.0.113.1 dev wanb proto ifisp
throw 10.0.0.0/8 proto ifisp
throw 172.16.0.0/12 proto ifisp
throw 192.168.0.0/16 proto ifisp
# ip -6 route show table ispa
throw fc00::/7 dev lo proto ifisp metric 1024 pref medium
default via 2001:db8:a::1 dev wana proto ifisp metric 1024 pref medium
# ip -6 route show table ispb
unreachable 2001:db8:99::/48 dev lo metric 1024 pref medium
throw fc00::/7 dev lo proto ifisp metric 1024 pref medium
default via 2001:db8:b::1 dev wanb proto ifisp metric 1024 pref medium
# ip -4 route show default
default via 203.0.113.1 dev wanb onlink
default via 198.51.100.1 dev wana proto ifisp metric 1
# ip -6 route show default
default via 2001:db8:b::1 dev wanb metric 1 onlink pref medium
default via 2001:db8:a::1 dev wana proto ifisp metric 2 pref medium
`

// stateDown is the administrator's state alone: what must be left after
// ifdown.
const stateDown = `# ip -4 rule
0:	from all lookup local
9000:	from 10.1.0.0/24 to 10.9.0.0/16 lookup main
10050:	from 192.0.2.99 lookup ispa
10150:	from all fwmark 0x5/0xff lookup main
32766:	from all lookup main
32767:	from all lookup default
# ip -6 rule
0:	from all lookup local
32766:	from all lookup main
# ip -4 route show table ispa
unreachable 192.0.2.99
# ip -4 route show table ispb
# ip -6 route show table ispa
# ip -6 route show table ispb
unreachable 2001:db8:99::/48 dev lo metric 1024 pref medium
# ip -4 route show default
# ip -6 route show default
`

func TestRouteUpDown(t *testing.T) {
	l := newRouteLab(t)
	adminState(l)
	l.MustIfup("wana", "wanb")
	assertState(t, "after ifup", routingState(l), stateUp)

	t.Run("traffic from each address leaves by its own link", func(t *testing.T) {
		for _, isp := range l.ISPs() {
			for _, f := range []struct {
				family   int
				src, dst string
			}{{4, isp.Router, lab.Internet}, {6, isp.Router6, lab.Internet6}} {
				other := &l.A
				if isp == &l.A {
					other = &l.B
				}
				before, otherBefore := l.Seen(isp, f.family), l.Seen(other, f.family)
				if got := l.Ping(l.Router, f.dst, 5, "-I", f.src); got != 5 {
					t.Errorf("ping %s from %s: %d of 5 answered", f.dst, f.src, got)
				}
				after, otherAfter := l.Seen(isp, f.family), l.Seen(other, f.family)
				if d := after.Legit - before.Legit; d < 5 {
					t.Errorf("from %s: %s saw %d packets, want >= 5", f.src, isp.Name, d)
				}
				if d := otherAfter.Legit - otherBefore.Legit; d != 0 {
					t.Errorf("from %s: %s saw %d packets, want 0", f.src, other.Name, d)
				}
			}
		}
		noSpoofing(t, l)
	})

	t.Run("up hooks twice change nothing", func(t *testing.T) {
		for _, iface := range []string{"wana", "wanb"} {
			for _, fam := range []string{"inet", "inet6"} {
				if out, err := l.RunHook(binary("ifisp-route"), l.HookEnv(iface, fam, "post-up")); err != nil {
					t.Fatal(err, out)
				}
			}
		}
		assertState(t, "after the up hooks ran again", routingState(l), stateUp)
	})

	l.MustIfdown("wana", "wanb")
	assertState(t, "after ifdown", routingState(l), stateDown)

	t.Run("down hooks twice succeed", func(t *testing.T) {
		for _, phase := range []string{"pre-down", "post-down"} {
			if out, err := l.RunHook(binary("ifisp-route"), l.HookEnv("wana", "inet", phase)); err != nil {
				t.Fatal(err, out)
			}
		}
		assertState(t, "after the down hooks ran again", routingState(l), stateDown)
	})
}

// TestRouteWithdrawFirst checks the if-down.d half: the main-table
// defaults through the link go, ifisp's and ifupdown's, while the ISP
// table and the rules stay for the address's last packets.
func TestRouteWithdrawFirst(t *testing.T) {
	l := newRouteLab(t)
	l.MustIfup("wana", "wanb")
	l.MustIfdown("wana", "wanb")
	l.MustIfup("wana", "wanb")
	for _, iface := range []string{"wana", "wanb"} {
		for _, fam := range []string{"inet", "inet6"} {
			if out, err := l.RunHook(binary("ifisp-route"), l.HookEnv(iface, fam, "pre-down")); err != nil {
				t.Fatal(err, out)
			}
		}
	}
	got := routingState(l)
	want := stateUp[:strings.Index(stateUp, "# ip -4 route show default")] + "# ip -4 route show default\n# ip -6 route show default\n"
	want = strings.ReplaceAll(want, "9000:\tfrom 10.1.0.0/24 to 10.9.0.0/16 lookup main\n", "")
	want = strings.ReplaceAll(want, "10050:\tfrom 192.0.2.99 lookup ispa\n", "")
	want = strings.ReplaceAll(want, "10150:\tfrom all fwmark 0x5/0xff lookup main\n", "")
	want = strings.ReplaceAll(want, "unreachable 192.0.2.99\n", "")
	want = strings.ReplaceAll(want, "unreachable 2001:db8:99::/48 dev lo metric 1024 pref medium\n", "")
	assertState(t, "after the if-down.d hooks", got, want)
	// ifupdown then deletes the `gateway` route ifisp already withdrew,
	// prints "RTNETLINK answers: No such process", and still succeeds.
	l.MustIfdown("wana", "wanb")
}

// TestRouteRecovers checks a first boot after a crash: state of ifisp's
// half there, and stale (a gateway that changed), converges on ifup; and
// that post-down succeeds when the interface is already gone.
func TestRouteRecovers(t *testing.T) {
	l := newRouteLab(t)
	adminState(l)
	// What a crash mid-way might leave: one rule, a stale default in the
	// ISP table and a stale rule for an old address.
	l.Must(l.Router, "ip", "rule", "add", "from", "198.51.100.2", "lookup", "ispa", "pref", "10000", "proto", "ifisp")
	l.Must(l.Router, "ip", "rule", "add", "from", "198.51.100.9", "lookup", "ispa", "pref", "10000", "proto", "ifisp")
	l.Must(l.Router, "ip", "route", "add", "throw", "10.0.0.0/8", "table", "ispa", "proto", "ifisp")
	l.Must(l.Router, "ip", "route", "add", "throw", "100.64.0.0/10", "table", "ispa", "proto", "ifisp")
	l.MustIfup("wana", "wanb")
	assertState(t, "after ifup over a crash's leftovers", routingState(l), stateUp)

	// The interface vanishes (a USB modem unplugged) before ifdown.
	l.Must(l.Router, "ip", "link", "del", "wana")
	for _, phase := range []string{"pre-down", "post-down"} {
		for _, fam := range []string{"inet", "inet6"} {
			env := l.HookEnv("wana", fam, "post-up")
			env = append(env, "PHASE="+phase, "MODE=stop")
			if out, err := l.RunHook(binary("ifisp-route"), env); err != nil {
				t.Fatalf("%s with the interface gone: %v %s", phase, err, out)
			}
		}
	}
	out := l.Must(l.Router, "ip", "rule")
	if strings.Contains(out, "198.51.100") {
		t.Errorf("rules of the vanished wana are left:\n%s", out)
	}
	assertState(t, "of table ispa after the vanished wana's post-down", l.Must(l.Router, "ip", "route", "show", "table", "ispa"), "unreachable 192.0.2.99\n")
}

// TestRouteBadStanza checks that a bad stanza is refused with one line per
// problem, naming binary, interface, option and value, and changes nothing.
func TestRouteBadStanza(t *testing.T) {
	l := newRouteLab(t)
	adminState(l)
	before := routingState(l)
	l.Interfaces(`
iface wana inet static
	address 198.51.100.2/24
	isp-table main
	isp-gateway 198.51.100.1
	isp-metric $(reboot)
`)
	out, err := l.Ifup("wana")
	if err == nil {
		t.Fatalf("ifup with a bad stanza succeeded:\n%s", out)
	}
	for _, want := range []string{
		// The first hook to run refuses it, in if-pre-up.d, before
		// ifupdown even adds the address; each line names the hook
		// that owns the option.
		`ifisp-route: wana: isp-table "main": reserved table (0, 253, 254, 255 are refused)`,
		`ifisp-route: wana: isp-metric "$(reboot)": not a metric (a number from 0 to 4294967295)`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("ifup output lacks %q:\n%s", want, out)
		}
	}
	after := routingState(l)
	if d := routingDiff(parseRouting(before), parseRouting(after)); strings.Contains(after, "proto ifisp") || d != "" {
		t.Errorf("a refused stanza changed the routing state (-before +after):\n%s", d)
	}
	if out := l.Must(l.Router, "ip", "-4", "addr", "show", "dev", "wana"); strings.Contains(out, "inet ") {
		t.Errorf("wana got its address although the stanza was refused:\n%s", out)
	}
	if out := l.Must(l.Router, "iptables-save"); strings.Contains(out, "IFISP") {
		t.Errorf("a refused stanza left iptables rules:\n%s", out)
	}
}

// assertState compares routing state, as ip prints it (routingState's
// output, the output of ip commands, or a golden of either), with a golden
// of it, parsed (see parseRouting): what differs shows as the rules or
// routes that one has and the other lacks, under the command that printed
// them.
func assertState(t *testing.T, when, got, want string) {
	t.Helper()
	if d := routingDiff(parseRouting(want), parseRouting(got)); d != "" {
		t.Errorf("routing state %s (-want +got):\n%s", when, d)
	}
}

// routingDiff returns the difference of two parsed routing states as
// cmp.Diff prints it, "" when they are equal: under each command whose
// part differs, the rules or routes one has and the other lacks, amid the
// lines around them. A part with no lines is empty however it was made.
func routingDiff(want, got routingParts) string {
	return cmp.Diff(want, got, cmpopts.EquateEmpty())
}

// routingParts is routing state parsed: by the command that printed each
// part of it (its "# ip ..." header; "" for lines before any), the part's
// rules as lab.NormRules has them or its routes as lab.NormRoutes does.
type routingParts map[string][]string

// parseRouting parses ip's output, or a golden of it, into its parts, one
// per "# ip ..." header: a command ending in "rule" printed rules, any
// other (and lines before any header) routes. Two parsed states are equal
// whatever blanks iproute2 puts between and after fields (older versions
// end route lines with a space; a rule's priority is followed by a tab)
// and in whatever order the kernel lists the rules of one priority or the
// routes of a table, which carries no meaning. Each command shows one
// table, which ip does not repeat on its lines: NormRoutes's "main: " in
// front of them is dropped, and only a route ip names a table for keeps
// one.
func parseRouting(s string) routingParts {
	parts := map[string]string{}
	cmd := ""
	for _, line := range strings.Split(s, "\n") {
		if h, ok := strings.CutPrefix(line, "# "); ok {
			cmd = strings.Join(strings.Fields(h), " ")
			parts[cmd] += ""
			continue
		}
		if strings.TrimSpace(line) != "" {
			parts[cmd] += line + "\n"
		}
	}
	r := routingParts{}
	for cmd, out := range parts {
		if strings.HasSuffix(cmd, " rule") {
			r[cmd] = lab.NormRules(out)
			continue
		}
		var routes []string
		for _, route := range lab.NormRoutes(out) {
			routes = append(routes, strings.TrimPrefix(route, "main: "))
		}
		r[cmd] = routes
	}
	return r
}
