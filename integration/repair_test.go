package integration

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ifisp/ifisp/internal/lab"
	"github.com/ifisp/ifisp/pkg/status"
)

// deletion is something another tool does to the router's kernel state
// that takes pieces of ifisp's links' plans away.
type deletion struct {
	name    string
	nftOnly bool     // nft's own tool: iptables-legacy's tables are not its
	script  string   // run by sh in the router
	missing []string // what `ifisp status` must name, each a substring of a line
	// undo takes back what the tool added of its own, so that the state
	// compares with the one before (the operator's ssh rule).
	undo string
}

// rulesV4 is an operator's /etc/iptables/rules.v4, as netfilter-persistent
// restores it: all three tables, their policies, one rule of their own.
const rulesV4 = `*mangle
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT
COMMIT
`

// nftablesConf is Debian's shipped /etc/nftables.conf.
const nftablesConf = `#!/usr/sbin/nft -f

flush ruleset

table inet filter {
	chain input {
		type filter hook input priority filter;
	}
	chain forward {
		type filter hook forward priority filter;
	}
	chain output {
		type filter hook output priority filter;
	}
}
`

// deletions are the seven of the issue: three reloads by other tools, and
// four single deletions an operator might make by hand.
var deletions = []deletion{
	{name: "netfilter-persistent reload", script: "iptables-restore <$FILES/rules.v4",
		missing: []string{"wana inet: missing iptables -t nat -N IFISP-SNAT-wana", "wanb inet: missing iptables -t filter -A FORWARD -m comment --comment ifisp -j IFISP-GUARD"},
		undo:    "iptables -D INPUT -p tcp -m tcp --dport 22 -j ACCEPT"},
	{name: "nftables.service flush ruleset", nftOnly: true, script: "nft -f $FILES/nftables.conf",
		missing: []string{"wana inet: missing iptables -t mangle -N IFISP-ARRIVE", "wana inet6: missing iptables -t filter -N IFISP-GUARD-wana"},
		undo:    "nft delete table inet filter"},
	{name: "flush POSTROUTING and FORWARD", script: "iptables -t nat -F POSTROUTING; iptables -F FORWARD",
		missing: []string{"wana inet: missing iptables -t nat -A POSTROUTING -m comment --comment ifisp -j IFISP-SNAT", "wanb inet: missing iptables -t filter -A FORWARD -m comment --comment ifisp -j IFISP-GUARD"}},
	{name: "ip rule del from", script: "ip rule del from 198.51.100.2 lookup ispa pref 10000",
		missing: []string{"wana inet: missing rule from 198.51.100.2 lookup 100 pref 10000"}},
	{name: "ip route flush table", script: "ip route flush table ispa",
		missing: []string{"wana inet: missing route default via 198.51.100.1 dev wana table 100", "wana inet: missing route throw 10.0.0.0/8 table 100"}},
	{name: "SNAT jump deleted", script: "iptables -t nat -D POSTROUTING -m comment --comment ifisp -j IFISP-SNAT",
		missing: []string{"wana inet: missing iptables -t nat -A POSTROUTING -m comment --comment ifisp -j IFISP-SNAT"}},
	{name: "one guard rule deleted", script: "iptables -D IFISP-GUARD-wanb -m comment --comment \"ifisp: wanb egress guard\" -j DROP",
		missing: []string{`wanb inet: missing iptables -t filter -A IFISP-GUARD-wanb -m comment --comment "ifisp: wanb egress guard" -j DROP`}},
}

func TestRepairNft(t *testing.T)    { testRepair(t, false) }
func TestRepairLegacy(t *testing.T) { testRepair(t, true) }

// testRepair brings both ISPs up with real ifupdown, then makes each
// deletion twice: first with no monitor, where `ifisp status` must name
// what is missing and exit 3 and `ifisp sync` must put it back; then with
// ifisp-watch running and a LAN host opening a new IPv4 connection every
// 20 ms, where the monitor must put it back by itself. After each repair
// the rules, routes and iptables rules equal those before, and no packet
// with a wrong source reaches an ISP.
func testRepair(t *testing.T, legacy bool) {
	l := lab.New(t)
	if legacy {
		l.UseIptablesLegacy()
	}
	l.Install(bin)
	l.Interfaces(lab.TwoISPs)
	// Outside the namespace's /etc: ip netns exec binds what is there
	// over the host's /etc, and complains of what the host lacks.
	files := t.TempDir()
	for name, content := range map[string]string{"rules.v4": rulesV4, "nftables.conf": nftablesConf} {
		if err := os.WriteFile(filepath.Join(files, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	l.Whoami()
	l.MustIfup("wana", "wanb")
	before := l.State()
	if code, out := statusCode(l); code != 0 {
		t.Fatalf("ifisp status after ifup: exit %d, want 0:\n%s", code, out)
	}
	backend := "nft"
	if legacy {
		backend = "legacy"
	}
	do := func(t *testing.T, script string) {
		t.Helper()
		if _, err := l.Exec(l.Router, "env", "FILES="+files, "sh", "-c", script); err != nil {
			t.Fatal(err)
		}
	}
	cases := deletions[:0:0]
	for _, d := range deletions {
		if !d.nftOnly || !legacy {
			cases = append(cases, d)
		}
	}

	for _, d := range cases {
		t.Run("sync/"+d.name, func(t *testing.T) {
			do(t, d.script)
			code, out := statusCode(l)
			if code != 3 {
				t.Errorf("ifisp status after %s: exit %d, want 3:\n%s", d.name, code, out)
			}
			lines := statusLines(t, l)
			for _, m := range d.missing {
				if !containsLine(lines, m) {
					t.Errorf("ifisp status --json does not list %q; it lists:\n%s", m, strings.Join(lines, "\n"))
				}
			}
			t.Logf("%s %s: status exit %d, %d differences", backend, d.name, code, len(lines))
			do(t, binary("ifisp")+" sync")
			if d.undo != "" {
				do(t, d.undo)
			}
			if diff := lab.StateDiff(before, l.State()); diff != "" {
				t.Errorf("after ifisp sync, the state differs from before %s (-before +after):\n%s", d.name, diff)
			}
			if code, out := statusCode(l); code != 0 {
				t.Errorf("ifisp status after ifisp sync: exit %d, want 0:\n%s", code, out)
			}
		})
	}

	w := l.StartWatch(bin)
	dialer := l.StartDialerTo(lab.Internet, 5000) // 100 s at most
	defer dialer.Stop()
	wans := []netip.Prefix{netip.MustParsePrefix("198.51.100.2/32"), netip.MustParsePrefix("203.0.113.2/32")}
	natted := func(from time.Time) (lab.Dial, bool) {
		var first lab.Dial
		for _, p := range wans {
			if d, ok := dialer.FirstFrom(from, p); ok && (first.Done.IsZero() || d.Done.Before(first.Done)) {
				first = d
			}
		}
		return first, !first.Done.IsZero()
	}
	waitDial := func(from time.Time, what string) lab.Dial {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			if d, ok := natted(from); ok {
				return d
			}
			if time.Now().After(deadline) {
				t.Fatalf("no new LAN connection answered %s", what)
			}
		}
	}
	waitDial(time.Now(), "before the deletions")

	for _, d := range cases {
		t.Run("watch/"+d.name, func(t *testing.T) {
			repairs := w.Repairs()
			spoofed := l.Spoofed()
			deleted := time.Now()
			do(t, d.script)
			repaired := w.WaitRepaired(repairs, 10*time.Second)
			first := waitDial(deleted, "after the deletion")
			leakedBefore := l.Spoofed() - spoofed
			atRepair := spoofedBy(l)
			// Leaks after the repair: none, counted once 25 new
			// connections made after it were answered.
			settled := repaired
			for range 25 {
				settled = waitDial(settled, "after the repair").Start.Add(time.Nanosecond)
			}
			if n := l.Spoofed() - spoofed - leakedBefore; n != 0 {
				t.Errorf("%d packets with a wrong source reached an ISP after the repair (by ISP and family, at the repair %v, now %v)", n, atRepair, spoofedBy(l))
			}
			t.Logf("%s %s: repaired %v after the deletion, first new LAN connection answered %v after it (started %v after), %d leaked before the repair",
				backend, d.name, repaired.Sub(deleted).Round(time.Millisecond), first.Done.Sub(deleted).Round(time.Millisecond),
				first.Start.Sub(deleted).Round(time.Millisecond), leakedBefore)
			if d.undo != "" {
				do(t, d.undo)
			}
			if diff := lab.StateDiff(before, l.State()); diff != "" {
				t.Errorf("after the monitor's repair, the state differs from before %s (-before +after):\n%s", d.name, diff)
			}
		})
	}

	t.Run("watch/back-off", func(t *testing.T) {
		pid := w.Pid()
		cpu0, err := cpuTime(pid)
		if err != nil {
			t.Fatal(err)
		}
		repairs := w.Repairs()
		start := time.Now()
		// Another tool that deletes the SNAT jump every 100 ms for 10 s.
		do(t, "i=0; while [ $i -lt 100 ]; do iptables -t nat -D POSTROUTING -m comment --comment ifisp -j IFISP-SNAT 2>/dev/null; sleep 0.1; i=$((i+1)); done")
		elapsed := time.Since(start)
		cpu1, err := cpuTime(pid)
		if err != nil {
			t.Fatal(err)
		}
		n := w.Repairs() - repairs
		share := float64(cpu1-cpu0) / float64(elapsed)
		t.Logf("%s back-off: %d repairs in %v of deletions every 100 ms, ifisp-watch used %v of CPU (%.1f%% of a core)", backend, n, elapsed.Round(time.Millisecond), cpu1-cpu0, 100*share)
		if share > 0.05 {
			t.Errorf("ifisp-watch used %.1f%% of a core while something kept deleting its rules, want under 5%%", 100*share)
		}
		if n > 20 {
			t.Errorf("ifisp-watch repaired %d times in %v: it does not back off", n, elapsed)
		}
		if !strings.Contains(w.Log(), "backing off") {
			t.Errorf("ifisp-watch did not say it backs off:\n%s", w.Log())
		}
		// Once the deleting stops, the next repair (at most the
		// longest back-off later) brings the state back.
		for deadline := time.Now().Add(40 * time.Second); lab.StateDiff(before, l.State()) != ""; time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("the state is not back 40s after the deleting stopped:\n%s", lab.StateDiff(before, l.State()))
			}
		}
	})
	noFailedRepairs(t, w)
}

// noFailedRepairs checks that the monitor logged no failed repair.
func noFailedRepairs(t *testing.T, w *lab.Watch) {
	t.Helper()
	if log := w.Log(); strings.Contains(log, "; and failed:") || strings.Contains(log, "comparing the links' plans with the kernel:") {
		t.Errorf("a repair failed:\n%s", w.Log())
	}
}

// statusCode runs `ifisp status` in the router and returns its exit code
// and output.
func statusCode(l *lab.Lab) (int, string) {
	return ran(exec.Command("ip", "netns", "exec", l.Router, binary("ifisp"), "status", "--no-flows").CombinedOutput())
}

// statusJSON runs `ifisp status --json` in the router and returns what it
// printed, parsed, its exit code and its output.
func statusJSON(t *testing.T, l *lab.Lab) (status.Status, int, string) {
	t.Helper()
	code, out := ran(exec.Command("ip", "netns", "exec", l.Router, binary("ifisp"), "status", "--json").Output())
	var s status.Status
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("ifisp status --json (exit %d): %v:\n%s", code, err, out)
	}
	return s, code, out
}

// ran is a command's exit status (exitCode) and its output.
func ran(out []byte, err error) (int, string) { return exitCode(err), string(out) }

// statusLines returns the differences `ifisp status --json` lists, one
// "LINK: missing|foreign KIND WHAT" line each.
func statusLines(t *testing.T, l *lab.Lab) []string {
	t.Helper()
	s, _, _ := statusJSON(t, l)
	var lines []string
	for _, link := range s.Links {
		for _, p := range link.Differences {
			lines = append(lines, p.String())
		}
	}
	return lines
}

// spoofedBy is what each ISP's spoof filter dropped, by family:
// "ispa/4" and so on.
func spoofedBy(l *lab.Lab) map[string]int {
	m := map[string]int{}
	for _, isp := range l.ISPs() {
		for _, f := range []int{4, 6} {
			m[fmt.Sprintf("%s/%d", isp.Name, f)] = l.Seen(isp, f).Spoofed
		}
	}
	return m
}

func containsLine(lines []string, want string) bool {
	for _, l := range lines {
		if strings.Contains(l, want) {
			return true
		}
	}
	return false
}

// cpuTime is the user and system time process pid has used.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The fields after the command's ")": utime is the 12th, stime 13th.
	_, rest, _ := strings.Cut(string(b), ") ")
	f := strings.Fields(rest)
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: too short", pid)
	}
	u, _ := strconv.ParseUint(f[11], 10, 64)
	s, _ := strconv.ParseUint(f[12], 10, 64)
	const hz = 100 // USER_HZ, 100 on every Linux port
	return time.Duration(u+s) * time.Second / hz, nil
}
