package integration

import (
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ifisp/ifisp/internal/lab"
)

// manualWANB is TwoISPs with wanb's IPv4 address and default added by
// `up` lines of an `inet manual` stanza: an address ifisp reads from the
// kernel, as it does a lease's, that the test can move by hand and then
// tell ifisp-lease about, as dhclient-script would.
var manualWANB = lab.Replace(lab.TwoISPs, "wanb", "inet", `iface wanb inet manual
	isp-table ispb
	snat-from 10.1.0.0/24
	up ip addr add 203.0.113.2/24 dev wanb
	up ip route add default via 203.0.113.1 dev wanb
`)

// leaseHook runs ifisp's dhclient exit hook as dhclient-script does: it
// sources the fragment in a shell whose environment is only dhclient's
// variables, then runs what comes after it. It returns the shell's
// output and whether the script got past the hook with status 0.
func leaseHook(t *testing.T, l *lab.Lab, hook string, env ...string) (string, bool) {
	t.Helper()
	args := append([]string{"env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"}, env...)
	args = append(args, "sh", "-c", `. "$0"; echo "after the hook: $?"`, hook)
	out, _ := l.Exec(l.Router, args...)
	return out, strings.Contains(out, "after the hook: 0")
}

// TestLeaseHook: the dhclient exit hook moves a dynamic link to its new
// address (rules, routes, SNAT, record, the LAN's new connections), and
// input from the network that is not what it must be changes nothing,
// never runs as shell, and never fails dhclient-script.
func TestLeaseHook(t *testing.T) {
	l := lab.New(t)
	l.Install(bin)
	l.Interfaces(manualWANB)
	hook := l.DhclientExitHook(bin)
	l.Whoami()
	l.MustIfup("wana", "wanb")
	// wanb is preferred (its default has ifupdown's metric 0).
	dialer := l.StartDialerTo(lab.Internet, 3000)
	defer dialer.Stop()
	old, moved := host("203.0.113.2"), host("203.0.113.3")
	first := func(from time.Time, p netip.Prefix, what string) lab.Dial {
		t.Helper()
		return answered(t, dialer, from, p, 10*time.Second, what)
	}
	first(time.Now(), old, "before the move")
	before := l.State()

	bad := filepath.Join(t.TempDir(), "pwned")
	renew := []string{"reason=RENEW", "interface=wanb", "new_ip_address=203.0.113.2", "new_routers=203.0.113.1", "old_ip_address=203.0.113.2"}
	for _, tc := range []struct{ name, key, value string }{
		{"no router", "new_routers", ""},
		{"command substitution", "new_ip_address", "$(touch " + bad + ")"},
		{"backquotes", "new_routers", "`touch " + bad + "`"},
		{"a newline", "new_ip_address", "203.0.113.3\ntouch " + bad},
		{"10 000 bytes", "new_routers", strings.Repeat("9", 10000)},
		{"an interface that is a path", "interface", "../wanb"},
	} {
		t.Run("bad input/"+tc.name, func(t *testing.T) {
			var env []string
			for _, kv := range renew {
				if k, _, _ := strings.Cut(kv, "="); k == tc.key {
					kv = k + "=" + tc.value
				}
				env = append(env, kv)
			}
			out, ok := leaseHook(t, l, hook, env...)
			if !ok {
				t.Errorf("dhclient-script did not get past the hook with status 0:\n%s", out)
			}
			if n := strings.Count(out, "ifisp-lease: "); n != 1 {
				t.Errorf("ifisp-lease wrote %d lines, want 1:\n%s", n, out)
			}
			if _, err := os.Stat(bad); err == nil {
				t.Fatalf("a value from the network ran as a command: %s exists", bad)
			}
			if diff := lab.StateDiff(before, l.State()); diff != "" {
				t.Errorf("the state changed (-before +after):\n%s", diff)
			}
		})
	}

	t.Run("renew, unchanged", func(t *testing.T) {
		out, ok := leaseHook(t, l, hook, renew...)
		if !ok || !strings.Contains(out, "unchanged") {
			t.Errorf("a renewal of the same lease:\n%s", out)
		}
		if diff := lab.StateDiff(before, l.State()); diff != "" {
			t.Errorf("the state changed (-before +after):\n%s", diff)
		}
	})

	t.Run("new address", func(t *testing.T) {
		spoofed := l.Spoofed()
		l.MoveLease("wanb", "203.0.113.3/24", "203.0.113.1")
		changed := time.Now()
		out, ok := leaseHook(t, l, hook, "reason=RENEW", "interface=wanb", "new_ip_address=203.0.113.3", "new_routers=203.0.113.1", "old_ip_address=203.0.113.2")
		if !ok {
			t.Fatalf("the hook failed:\n%s", out)
		}
		d := first(changed, moved, "after the move")
		t.Logf("the first new LAN connection from 203.0.113.3 was answered %v after the address changed (%s)", d.Done.Sub(changed).Round(time.Millisecond), strings.TrimSpace(out))
		settle(t, dialer, d.Start.Add(time.Nanosecond), moved, 25, 10*time.Second)
		if n := l.Spoofed() - spoofed; n != 0 {
			t.Errorf("%d packets with a wrong source reached an ISP", n)
		}
		after := l.State()
		for _, line := range leftOf(after, oldAddr) {
			t.Errorf("left of the old address: %s", line)
		}
		if !containsLine(after.Rules4, "from 203.0.113.3 lookup ispb") {
			t.Errorf("no rule for the new address:\n%s", strings.Join(after.Rules4, "\n"))
		}
		if out := l.Must(l.Router, "conntrack", "-L", "-n", "-f", "ipv4"); strings.Contains(out, "dst=203.0.113.2 ") {
			t.Errorf("flows NATed to the old address are left:\n%s", out)
		}
		// wana's own pieces are as they were.
		for _, pair := range [][2][]string{{before.Rules4, after.Rules4}, {before.Routes4, after.Routes4}, {before.IPTables, after.IPTables}} {
			if w, a := mentioning(pair[0], wanaNames...), mentioning(pair[1], wanaNames...); strings.Join(w, "\n") != strings.Join(a, "\n") {
				t.Errorf("wana's state changed:\nbefore:\n%s\nafter:\n%s", strings.Join(w, "\n"), strings.Join(a, "\n"))
			}
		}
		if code, out := statusCode(l); code != 0 {
			t.Errorf("ifisp status after the move: exit %d:\n%s", code, out)
		}
	})

	// The lease expires: dhclient-script removes the address, and the
	// link counts as down; a new lease brings it back as it was.
	t.Run("expired, then bound again", func(t *testing.T) {
		moved := l.State()
		l.Must(l.Router, "ip", "addr", "flush", "dev", "wanb", "scope", "global")
		lost := time.Now()
		if out, ok := leaseHook(t, l, hook, "reason=EXPIRE", "interface=wanb", "old_ip_address=203.0.113.3", "old_routers=203.0.113.1"); !ok || !strings.Contains(out, "down") {
			t.Fatalf("the hook on EXPIRE:\n%s", out)
		}
		d := first(lost, host("198.51.100.2"), "by wana after the lease expired")
		t.Logf("the first new LAN connection by wana was answered %v after the lease expired", d.Done.Sub(lost).Round(time.Millisecond))
		down := l.State()
		for _, line := range down.Rules4 {
			if strings.Contains(line, "203.0.113.") || strings.Contains(line, "lookup ispb") {
				t.Errorf("left of wanb's lease: %s", line)
			}
		}
		// Of wanb's chains only a closed guard stays: the next lease's
		// address and default come before its hook runs.
		closed := []string{
			":IFISP-GUARD-wanb - [0:0]",
			`-A IFISP-GUARD -o wanb -m comment --comment "ifisp: wanb" -j IFISP-GUARD-wanb`,
			`-A IFISP-GUARD-wanb -m comment --comment "ifisp: wanb no lease: egress guard" -j DROP`,
		}
		if got := mentioning(down.IPTables, "wanb", "203.0.113."); strings.Join(got, "\n") != strings.Join(closed, "\n") {
			t.Errorf("wanb's iptables rules with its lease lost:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(closed, "\n"))
		}
		if !containsLine(down.Registry, `"lost":true`) {
			t.Errorf("wanb's record does not say its lease is lost:\n%s", strings.Join(down.Registry, "\n"))
		}
		st, code, out := statusJSON(t, l)
		if code != 0 {
			t.Errorf("ifisp status with wanb's lease lost: exit %d:\n%s", code, out)
		}
		if len(st.Waiting) != 1 || st.Waiting[0].Iface != "wanb" || st.Waiting[0].Family != "inet" {
			t.Errorf("ifisp status does not show wanb waiting for its lease: %+v", st.Waiting)
		}
		l.Must(l.Router, "sh", "-c", "ip addr add 203.0.113.3/24 dev wanb && ip route add default via 203.0.113.1 dev wanb")
		if out, ok := leaseHook(t, l, hook, "reason=BOUND", "interface=wanb", "new_ip_address=203.0.113.3", "new_routers=203.0.113.1"); !ok {
			t.Fatalf("the hook on BOUND:\n%s", out)
		}
		if diff := lab.StateDiff(moved, l.State()); diff != "" {
			t.Errorf("after a new lease, the state differs from before it expired (-before +after):\n%s", diff)
		}
	})
}

// oldAddr is 203.0.113.2, not the start of 203.0.113.255.
var oldAddr = regexp.MustCompile(`203\.0\.113\.2\b`)

// leftOf returns the lines of s's IPv4 rules and routes, iptables rules
// and records that old matches: what a link moved off an address left.
func leftOf(s lab.State, old *regexp.Regexp) []string {
	var left []string
	for _, lines := range [][]string{s.Rules4, s.Routes4, s.IPTables, s.Registry} {
		for _, line := range lines {
			if old.MatchString(line) {
				left = append(left, line)
			}
		}
	}
	return left
}

// mentioning is the lines of lines that mention any of subs.
func mentioning(lines []string, subs ...string) []string {
	var m []string
	for _, l := range lines {
		for _, s := range subs {
			if strings.Contains(l, s) {
				m = append(m, l)
				break
			}
		}
	}
	return m
}
