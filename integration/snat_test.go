package integration

import (
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ifisp/ifisp/internal/lab"
)

// natUp is ifisp's part of iptables-save after `ifup wana wanb`, IPv4
// then IPv6, exactly as an operator would read it. The connection marks'
// chains (marksUp) are the same in both families.
const natUp = `*filter
:IFISP-GUARD - [0:0]
:IFISP-GUARD-wana - [0:0]
:IFISP-GUARD-wanb - [0:0]
-A FORWARD -m comment --comment ifisp -j IFISP-GUARD
-A OUTPUT -m comment --comment ifisp -j IFISP-GUARD
-A IFISP-GUARD -o wana -m comment --comment "ifisp: wana" -j IFISP-GUARD-wana
-A IFISP-GUARD -o wanb -m comment --comment "ifisp: wanb" -j IFISP-GUARD-wanb
-A IFISP-GUARD-wana -m conntrack --ctrepldst 198.51.100.2 --ctdir ORIGINAL -m comment --comment "ifisp: wana" -j RETURN
-A IFISP-GUARD-wana -m conntrack --ctorigdst 198.51.100.2 --ctdir REPLY -m comment --comment "ifisp: wana" -j RETURN
-A IFISP-GUARD-wana -m conntrack --ctrepldst 198.51.100.64/28 --ctdir ORIGINAL -m comment --comment "ifisp: wana" -j RETURN
-A IFISP-GUARD-wana -m conntrack --ctorigdst 198.51.100.64/28 --ctdir REPLY -m comment --comment "ifisp: wana" -j RETURN
-A IFISP-GUARD-wana -s 10.1.0.0/24 -m conntrack ! --ctstatus CONFIRMED -m comment --comment "ifisp: wana new flow, SNAT follows" -j RETURN
-A IFISP-GUARD-wana -m comment --comment "ifisp: wana egress guard" -j DROP
-A IFISP-GUARD-wanb -m conntrack --ctrepldst 203.0.113.2 --ctdir ORIGINAL -m comment --comment "ifisp: wanb" -j RETURN
-A IFISP-GUARD-wanb -m conntrack --ctorigdst 203.0.113.2 --ctdir REPLY -m comment --comment "ifisp: wanb" -j RETURN
-A IFISP-GUARD-wanb -s 10.1.0.0/24 -m conntrack ! --ctstatus CONFIRMED -m comment --comment "ifisp: wanb new flow, SNAT follows" -j RETURN
-A IFISP-GUARD-wanb -m comment --comment "ifisp: wanb egress guard" -j DROP
*mangle
` + marksUp + `*nat
:IFISP-SNAT - [0:0]
:IFISP-SNAT-wana - [0:0]
:IFISP-SNAT-wanb - [0:0]
-A POSTROUTING -m comment --comment ifisp -j IFISP-SNAT
-A IFISP-SNAT -o wana -m comment --comment "ifisp: wana" -j IFISP-SNAT-wana
-A IFISP-SNAT -o wanb -m comment --comment "ifisp: wanb" -j IFISP-SNAT-wanb
-A IFISP-SNAT-wana -s 10.1.0.0/24 -o wana -m comment --comment "ifisp: wana snat" -j SNAT --to-source 198.51.100.2
-A IFISP-SNAT-wanb -s 10.1.0.0/24 -o wanb -m comment --comment "ifisp: wanb snat" -j SNAT --to-source 203.0.113.2
*filter
:IFISP-GUARD - [0:0]
:IFISP-GUARD-wana - [0:0]
:IFISP-GUARD-wanb - [0:0]
-A FORWARD -m comment --comment ifisp -j IFISP-GUARD
-A OUTPUT -m comment --comment ifisp -j IFISP-GUARD
-A IFISP-GUARD -o wana -m comment --comment "ifisp: wana" -j IFISP-GUARD-wana
-A IFISP-GUARD -o wanb -m comment --comment "ifisp: wanb" -j IFISP-GUARD-wanb
-A IFISP-GUARD-wana -s fe80::/10 -m comment --comment "ifisp: wana" -j RETURN
-A IFISP-GUARD-wana -s ::/128 -m comment --comment "ifisp: wana" -j RETURN
-A IFISP-GUARD-wana -s 2001:db8:a::2/128 -m comment --comment "ifisp: wana" -j RETURN
-A IFISP-GUARD-wana -m conntrack --ctorigdst 2001:db8:a::2 --ctdir REPLY -m comment --comment "ifisp: wana" -j RETURN
-A IFISP-GUARD-wana -m comment --comment "ifisp: wana egress guard" -j DROP
-A IFISP-GUARD-wanb -s fe80::/10 -m comment --comment "ifisp: wanb" -j RETURN
-A IFISP-GUARD-wanb -s ::/128 -m comment --comment "ifisp: wanb" -j RETURN
-A IFISP-GUARD-wanb -s 2001:db8:b::2/128 -m comment --comment "ifisp: wanb" -j RETURN
-A IFISP-GUARD-wanb -m conntrack --ctorigdst 2001:db8:b::2 --ctdir REPLY -m comment --comment "ifisp: wanb" -j RETURN
-A IFISP-GUARD-wanb -m comment --comment "ifisp: wanb egress guard" -j DROP
*mangle
` + marksUp

// marksUp is ifisp's mangle table after `ifup wana wanb`, either family.
const marksUp = `:IFISP-ARRIVE - [0:0]
:IFISP-ARRIVE-wana - [0:0]
:IFISP-ARRIVE-wanb - [0:0]
:IFISP-LEAVE - [0:0]
:IFISP-LEAVE-wana - [0:0]
:IFISP-LEAVE-wanb - [0:0]
-A PREROUTING -m comment --comment ifisp -j IFISP-ARRIVE
-A POSTROUTING -m comment --comment ifisp -j IFISP-LEAVE
-A IFISP-ARRIVE -m connmark --mark 0x80000000/0x80000000 -m conntrack --ctdir REPLY -m comment --comment "ifisp: replies of inbound connections" -j CONNMARK --restore-mark --nfmask 0xff000000 --ctmask 0xff000000
-A IFISP-ARRIVE -m connmark --mark 0x0/0x80000000 -m conntrack --ctdir ORIGINAL -m comment --comment "ifisp: outbound flows, for isp-sticky" -j CONNMARK --restore-mark --nfmask 0xff000000 --ctmask 0xff000000
-A IFISP-ARRIVE -m conntrack ! --ctstate NEW -m comment --comment "ifisp: marks are set on the first packet only" -j RETURN
-A IFISP-ARRIVE -i wana -m comment --comment "ifisp: wana" -j IFISP-ARRIVE-wana
-A IFISP-ARRIVE -i wanb -m comment --comment "ifisp: wanb" -j IFISP-ARRIVE-wanb
-A IFISP-ARRIVE-wana -m connmark --mark 0x0/0xff000000 -m comment --comment "ifisp: wana inbound" -j CONNMARK --set-xmark 0xe4000000/0xff000000
-A IFISP-ARRIVE-wanb -m connmark --mark 0x0/0xff000000 -m comment --comment "ifisp: wanb inbound" -j CONNMARK --set-xmark 0xe5000000/0xff000000
-A IFISP-LEAVE -m conntrack ! --ctstate NEW -m comment --comment "ifisp: marks are set on the first packet only" -j RETURN
-A IFISP-LEAVE -o wana -m comment --comment "ifisp: wana" -j IFISP-LEAVE-wana
-A IFISP-LEAVE -o wanb -m comment --comment "ifisp: wanb" -j IFISP-LEAVE-wanb
-A IFISP-LEAVE-wana -m connmark --mark 0x0/0xff000000 -m comment --comment "ifisp: wana outbound" -j CONNMARK --set-xmark 0x64000000/0xff000000
-A IFISP-LEAVE-wanb -m connmark --mark 0x0/0xff000000 -m comment --comment "ifisp: wanb outbound" -j CONNMARK --set-xmark 0x65000000/0xff000000
`

// adminNAT is the administrator's own iptables state, which ifisp must
// never touch.
var adminNAT = [][]string{
	{"-t", "nat", "-N", "MYNAT"},
	{"-t", "nat", "-A", "MYNAT", "-s", "10.2.0.0/24", "-j", "MASQUERADE"},
	{"-t", "nat", "-A", "POSTROUTING", "-j", "MYNAT"},
	{"-t", "filter", "-A", "FORWARD", "-i", "lan0", "-j", "ACCEPT"},
	// Marks of the administrator's own, in bits outside ifisp's mask.
	{"-t", "mangle", "-A", "PREROUTING", "-i", "lan0", "-j", "CONNMARK", "--set-xmark", "0x5/0xff"},
}

// backends are the iptables the test runs with: the nf_tables one Debian
// installs, and iptables-legacy. Both must be there: a missing one fails
// the test, naming the binary, rather than leave its backend untested.
func backends(t *testing.T) map[string]string {
	t.Helper()
	b := map[string]string{"nft": "", "legacy": "-legacy"}
	for _, suffix := range b {
		for _, cmd := range []string{"iptables", "ip6tables", "iptables-save", "ip6tables-save"} {
			name := strings.Replace(cmd, "tables", "tables"+suffix, 1)
			if _, err := exec.LookPath(name); err != nil {
				t.Fatalf("%s not found: the test runs with both iptables backends (Debian: apt-get install iptables)", name)
			}
		}
	}
	return b
}

// ifispRules returns ifisp's lines of iptables-save (both families), each
// table's under its header, tables in a fixed order (iptables-legacy-save
// prints them in the order they were first used), and the administrator's
// rules and chains; counters are zeroed.
func ifispRules(l *lab.Lab, suffix string) (ours, theirs string) {
	var o, r strings.Builder
	for _, save := range []string{"iptables" + suffix + "-save", "ip6tables" + suffix + "-save"} {
		tables := map[string][]string{}
		table := ""
		for _, line := range strings.Split(l.Must(l.Router, save), "\n") {
			line = counters.ReplaceAllString(line, "[0:0]")
			switch {
			case strings.HasPrefix(line, "#"), line == "COMMIT", line == "":
			case strings.HasPrefix(line, "*"):
				table = line
			case strings.Contains(line, "IFISP") || strings.Contains(line, "ifisp"):
				tables[table] = append(tables[table], line)
			case strings.HasPrefix(line, "-A"), strings.HasSuffix(line, " - [0:0]"):
				// Rules and user chains; a built-in chain's policy line
				// comes with the table, whoever made it.
				r.WriteString(save + " " + line + "\n")
			}
		}
		for _, t := range []string{"*filter", "*mangle", "*nat"} {
			if lines := tables[t]; len(lines) > 0 {
				o.WriteString(t + "\n" + strings.Join(lines, "\n") + "\n")
			}
		}
	}
	return o.String(), r.String()
}

var counters = regexp.MustCompile(`\[\d+:\d+\]`)

func TestSNATChains(t *testing.T) {
	for name, suffix := range backends(t) {
		t.Run(name, func(t *testing.T) {
			l := newRouteLab(t)
			if suffix != "" {
				l.UseIptablesLegacy()
			}
			for _, rule := range adminNAT {
				l.Must(l.Router, append([]string{"iptables" + suffix}, rule...)...)
			}
			_, adminBefore := ifispRules(l, suffix)

			l.MustIfup("wana", "wanb")
			ours, admin := ifispRules(l, suffix)
			if ours != natUp {
				t.Errorf("ifisp's iptables after ifup:\n--- want\n%s--- got\n%s", natUp, ours)
			}
			if !strings.Contains(admin, "-A MYNAT -s 10.2.0.0/24 -j MASQUERADE") {
				t.Errorf("the administrator's nat chain is gone:\n%s", admin)
			}

			// The up hooks again, as ifupdown ran them: nothing changes.
			for _, iface := range []string{"wana", "wanb"} {
				for _, fam := range []string{"inet", "inet6"} {
					for _, phase := range []string{"pre-up", "post-up"} {
						if out, err := l.RunHook(binary("ifisp-snat"), l.HookEnv(iface, fam, phase)); err != nil {
							t.Fatal(err, out)
						}
					}
				}
			}
			if again, _ := ifispRules(l, suffix); again != ours {
				t.Errorf("the up hooks run twice changed iptables:\n%s", again)
			}

			// Another tool deleted wana's SNAT jump: the tables are not
			// what the records say, and ifdown wana reads them and
			// removes all of wana's, nothing of wanb's.
			l.Must(l.Router, "iptables"+suffix, "-t", "nat", "-D", "IFISP-SNAT", "-o", "wana", "-m", "comment", "--comment", "ifisp: wana", "-j", "IFISP-SNAT-wana")
			l.MustIfdown("wana")
			var wanbAlone []string
			for _, line := range strings.SplitAfter(natUp, "\n") {
				if !strings.Contains(line, "wana") {
					wanbAlone = append(wanbAlone, line)
				}
			}
			if ours, _ = ifispRules(l, suffix); ours != strings.Join(wanbAlone, "") {
				t.Errorf("ifisp's iptables after ifdown wana, its SNAT jump deleted before:\n--- want\n%s--- got\n%s", strings.Join(wanbAlone, ""), ours)
			}

			l.MustIfdown("wanb")
			ours, admin = ifispRules(l, suffix)
			if ours != "" {
				t.Errorf("ifisp's chains are left after both links went down:\n%s", ours)
			}
			if admin != adminBefore {
				t.Errorf("the administrator's iptables changed:\n--- before\n%s--- after\n%s", adminBefore, admin)
			}
		})
	}
}

// TestSNATBadStanza: a bad snat-from or snat-to is refused in if-pre-up.d,
// one line, nothing changed.
func TestSNATBadStanza(t *testing.T) {
	for _, tc := range []struct{ option, want string }{
		{"snat-from 10.1.0.0/33", `ifisp-snat: wana: snat-from "10.1.0.0/33": 10.1.0.0/33: not a CIDR prefix`},
		{"snat-from fd00::/8", `ifisp-snat: wana: snat-from "fd00::/8": fd00::/8: an inet6 prefix on an inet stanza`},
		{"snat-to lan0", `ifisp-snat: wana: snat-to "lan0": not an IP address`},
	} {
		l := newRouteLab(t)
		l.Interfaces("iface wana inet static\n\taddress 198.51.100.2/24\n\tisp-table ispa\n\tisp-gateway 198.51.100.1\n\t" + tc.option + "\n")
		out, err := l.Ifup("wana")
		if err == nil || !strings.Contains(out, tc.want+"\n") {
			t.Errorf("%s: ifup said (%v):\n%s\nwant the line %q", tc.option, err, out, tc.want)
		}
		if ours, _ := ifispRules(l, ""); ours != "" {
			t.Errorf("%s: refused, yet iptables changed:\n%s", tc.option, ours)
		}
	}
}

// TestGuardDrops moves a flow NATed to wanb onto wana behind ifisp's back
// (no reconcile runs): the guard drops its packets at the router and ISP A
// sees not one spoofed packet. Without the guard, the same move makes ISP
// A count them: the test can tell.
func TestGuardDrops(t *testing.T) {
	l := newFailoverLab(t)
	// Long enough to outlast both halves on a slow machine; Stop ends it.
	start := time.Now()
	p := l.StartPing(l.LAN, lab.Internet, 20*time.Millisecond, 1000)
	defer p.Stop()
	// The flow is NATed to wanb once it is answered.
	for _, got := p.Count(start, time.Now()); got == 0; _, got = p.Count(start, time.Now()) {
		if time.Since(start) > 5*time.Second {
			t.Fatal("the LAN ping was not answered in 5s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	l.Must(l.Router, "ip", "route", "del", "default", "via", l.B.Gate, "dev", "wanb")
	time.Sleep(time.Second)
	if n := l.Seen(&l.A, 4).Spoofed; n != 0 {
		t.Errorf("with the guard, ISP A dropped %d spoofed packets, want 0", n)
	}
	if n := guardDrops(t, l, "wana"); n == 0 {
		t.Error("the guard on wana dropped nothing, yet the flow NATed to wanb was routed there")
	}

	l.Must(l.Router, "iptables", "-D", "FORWARD", "-m", "comment", "--comment", "ifisp", "-j", "IFISP-GUARD")
	for deadline := time.Now().Add(3 * time.Second); l.Seen(&l.A, 4).Spoofed == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("without the guard ISP A saw no spoofed packet in 3s: the test proves nothing")
		}
	}
}

// guardDrops returns the packets the egress guard of iface dropped.
func guardDrops(t *testing.T, l *lab.Lab, iface string) int {
	t.Helper()
	out := l.Must(l.Router, "iptables", "-nvxL", "IFISP-GUARD-"+iface)
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 2 && f[2] == "DROP" {
			n, _ := strconv.Atoi(f[0])
			return n
		}
	}
	t.Fatalf("no DROP rule in IFISP-GUARD-%s:\n%s", iface, out)
	return 0
}
