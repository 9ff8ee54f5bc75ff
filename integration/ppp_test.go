//go:build vmtest

package integration

import (
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ifisp/ifisp/internal/lab"
)

// TestPPPoE is ISP B by PPPoE, end to end on a kernel with PPP (the VM
// tier's): ifupdown's `inet ppp` stanza dsl runs pon, ifisp's hooks only
// record the stanza (pppd is still dialling), and pppd's ip-up brings the
// session's link, ppp0, up through ifisp-lease: the LAN NATed to the
// session's address, the `from` rule, the ISP table's default via the
// peer, the SNAT chain. The ISP then gives the next session another
// address: pppd dials again by itself (persist), the link moves to it,
// nothing of the old address stays and nothing is spoofed. ifdown dsl
// leaves nothing of the session's or the stanza's, and wana as it was.
func TestPPPoE(t *testing.T) {
	if os.Getenv("IFISP_VM") != "1" {
		t.Skip("runs only in the VM guest (vm/run.sh sets IFISP_VM=1): this kernel may have no PPP, and the lab reads syslog at /dev/log, which a host's syslog daemon owns")
	}
	const first, second = "203.0.113.2", "203.0.113.3"
	l := lab.New(t)
	logs := l.ListenSyslog()
	t.Cleanup(func() {
		// Before the lab and the listener go (cleanups run last first).
		if t.Failed() {
			t.Logf("syslog (pppd, pppoe-server, ifisp-lease), debug included:\n%s", logs.String(true))
		}
	})
	l.Install(bin)
	l.RecordHookLinks()
	server := l.StartPPPoE(first)
	l.InstallPPP(bin)
	l.Interfaces(lab.PPPoEStanzas)
	l.Whoami()
	kernel := l.WatchNet()
	defer func() {
		if t.Failed() {
			t.Logf("the router's address, route and rule changes:\n%s", kernel)
		}
	}()
	dialer := l.StartDialerTo(lab.Internet, 30000) // 10 min at most
	defer dialer.Stop()
	// Under emulation a new session's first connections take a while.
	const patience = 30 * time.Second
	// settled waits until 25 new connections after d were answered from
	// p: the LAN is on it for good.
	settled := func(d lab.Dial, p netip.Prefix) {
		t.Helper()
		settle(t, dialer, d.Start.Add(time.Nanosecond), p, 25, patience)
	}
	spoofed := func() (a, b int) { return l.Seen(&l.A, 4).Spoofed, l.Seen(&l.B, 4).Spoofed }
	// timeline logs what happened after the session's address came (at):
	// the routes through ppp0, ifisp-lease's line, the first new LAN
	// connection NATed to addr.
	timeline := func(what, addr string, at time.Time, nat lab.Dial) {
		t.Helper()
		since := func(e time.Time) string { return e.Sub(at).Round(time.Millisecond).String() }
		parts := []string{"ppp0 got " + addr}
		for _, r := range []struct {
			name  string
			table int
		}{{"the main table's default via ppp0", 254}, {"table ispb's default via ppp0", l.B.Table}} {
			if e, ok := kernel.FindRoute(at, func(e lab.RouteEvent) bool {
				return e.Added && e.Iface == "ppp0" && e.Table == r.table && e.Dst == netip.MustParsePrefix("0.0.0.0/0")
			}); ok {
				parts = append(parts, r.name+" +"+since(e.At))
			}
		}
		for _, line := range logs.Matching("ifisp-lease", "up on "+addr) {
			if !line.At.Before(at) {
				parts = append(parts, "ifisp-lease's line +"+since(line.At))
				break
			}
		}
		parts = append(parts, "the first LAN connection NATed to it answered +"+since(nat.Done))
		t.Logf("%s: %s; ISP B's spoofed packets so far: %s", what, strings.Join(parts, ", "), l.SpoofedKinds())
	}
	wanaState := func() []string {
		s := l.State()
		var lines []string
		for _, part := range [][]string{s.Rules4, s.Rules6, s.Routes4, s.Routes6, s.IPTables, s.IP6Tables, s.Registry} {
			lines = append(lines, mentioning(part, wanaNames...)...)
		}
		return lines
	}

	// ---- connect ----------------------------------------------------------
	start := time.Now()
	if out, err := l.Ifup("wana", "dsl"); err != nil {
		t.Fatal(err, out)
	}
	ifupDone := time.Now()
	// ifupdown ran dsl's if-up.d once pon had returned: pppd, detached,
	// was still dialling (ppp0 may exist already, without an address).
	atIfup := l.HookLinks("dsl", "inet", "post-up")
	t.Logf("the interfaces when ifupdown ran dsl's if-up.d:\n%s", atIfup)
	if strings.Contains(atIfup, "203.0.113.") {
		t.Errorf("ifupdown ran dsl's if-up.d with the session up already")
	}
	anchor, err := os.ReadFile(filepath.Join(l.RunDir, "links", "dsl.inet.json"))
	if err != nil || !strings.Contains(string(anchor), `"lost": true`) {
		t.Errorf("after ifup, the anchor record dsl.inet.json (lost, the stanza): %s, %v", anchor, err)
	}
	got, ok := kernel.WaitAddr(start, "ppp0", first, true, 2*time.Minute)
	if !ok {
		t.Fatalf("ppp0 has no %s 2 min after ifup", first)
	}
	rule, ok := kernel.WaitRule(start, host(first), l.B.Table, true, time.Minute)
	if !ok {
		t.Fatalf("no rule from %s to table ispb a minute after ppp0 had the address", first)
	}
	up := l.WaitScriptRun(start, time.Minute, "ip-up for "+first, func(e lab.ScriptRun) bool {
		return e.Script == "ip-up" && e.Env["PPP_LOCAL"] == first
	})
	nat := answered(t, dialer, got.At, host(first), patience, "after the session came up")
	t.Logf("connect: ifup wana dsl returned in %v; ppp0 had %s %v after ifup began; ifisp's rule %v after that; ip-up.d done %v after; the first new LAN connection NATed to it answered %v after ppp0 got the address",
		ifupDone.Sub(start).Round(time.Millisecond), first, got.At.Sub(start).Round(time.Millisecond),
		rule.At.Sub(got.At).Round(time.Millisecond), up.At.Sub(got.At).Round(time.Millisecond), nat.Done.Sub(got.At).Round(time.Millisecond))
	t.Logf("what pppd's ip-up gives ip-up.d:\n%s", envLines(up.Env))
	for k, want := range map[string]string{"PPP_IFACE": "ppp0", "PPP_LOCAL": first, "PPP_REMOTE": l.B.Gate, "PPP_IPPARAM": lab.PPPProvider} {
		if up.Env[k] != want {
			t.Errorf("ip-up's %s = %q, want %q", k, up.Env[k], want)
		}
	}
	timeline("connect", first, got.At, nat)
	settled(nat, host(first))
	sessionUp(t, l, first)
	wana := wanaState()
	sa, sb := spoofed()
	t.Logf("connect: spoofed packets dropped by ISP A %d, by ISP B %d", sa, sb)
	if sa+sb != 0 {
		t.Errorf("the ISPs dropped %d (A) and %d (B) spoofed packets while the session came up, want 0", sa, sb)
	}

	// ---- reconnect with another address ------------------------------------
	restarted := time.Now()
	server.Restart(second)
	ended := l.WaitScriptRun(restarted, time.Minute, "ip-down of the first session", func(e lab.ScriptRun) bool {
		return e.Script == "ip-down" && e.Env["PPP_LOCAL"] == first
	})
	got2, ok := kernel.WaitAddr(restarted, "ppp0", second, true, 2*time.Minute)
	if !ok {
		t.Fatalf("ppp0 has no %s 2 min after the server's restart", second)
	}
	a2, b2 := spoofed()
	nat2 := answered(t, dialer, got2.At, host(second), patience, "after the session came back")
	up2 := l.WaitScriptRun(restarted, time.Minute, "ip-up for "+second, func(e lab.ScriptRun) bool {
		return e.Script == "ip-up" && e.Env["PPP_LOCAL"] == second
	})
	t.Logf("reconnect: the first session's ip-down.d done %v after the server's restart; ppp0 had %s %v after the restart; ip-up.d done %v after that; the first new LAN connection NATed to %s answered %v after ppp0 got the address",
		ended.At.Sub(restarted).Round(time.Millisecond), second, got2.At.Sub(restarted).Round(time.Millisecond),
		up2.At.Sub(got2.At).Round(time.Millisecond), second, nat2.Done.Sub(got2.At).Round(time.Millisecond))
	t.Logf("what pppd's ip-down gives ip-down.d:\n%s", envLines(ended.Env))
	timeline("reconnect", second, got2.At, nat2)
	settled(nat2, host(second))
	a3, b3 := spoofed()
	// Read once ppp0 had the address (the read takes a while under
	// emulation): what ISP B dropped until then came before the
	// session's routes, or just after.
	t.Logf("reconnect: spoofed packets dropped by ISP A %d, by ISP B %d until just after ppp0 had %s; %d and %d after", a2-sa, b2-sb, second, a3-a2, b3-b2)
	if a3 != sa || b3 != sb {
		t.Errorf("from the server's restart on, ISP A dropped %d spoofed packets and ISP B %d (%d of them after ppp0 had %s was read), want 0", a3-sa, b3-sb, b3-b2, second)
	}
	sessionUp(t, l, second)
	after := l.State()
	for _, line := range leftOf(after, oldAddr) {
		t.Errorf("left of the first session's address: %s", line)
	}
	if out := l.Must(l.Router, "conntrack", "-L", "-n", "-f", "ipv4"); oldAddr.MatchString(out) {
		t.Errorf("conntrack entries of the first session's address are left:\n%s", out)
	}
	if now := wanaState(); !slices.Equal(now, wana) {
		t.Errorf("wana's state changed when the session moved:\nbefore:\n%s\nafter:\n%s", strings.Join(wana, "\n"), strings.Join(now, "\n"))
	}

	// ---- ifdown -----------------------------------------------------------
	downAt := time.Now()
	l.MustIfdown("dsl")
	ifdownDone := time.Now()
	l.WaitNoRouterPPPD(30 * time.Second)
	waitFor(t, 30*time.Second, "ppp0 to go", func() bool {
		_, err := l.Exec(l.Router, "ip", "link", "show", "dev", "ppp0")
		return err != nil
	})
	last := l.WaitScriptRun(downAt, time.Minute, "ip-down at ifdown", func(e lab.ScriptRun) bool { return e.Script == "ip-down" })
	byWana := answered(t, dialer, ifdownDone, host(l.A.Router), patience, "by wana after ifdown dsl")
	t.Logf("ifdown dsl returned in %v; pppd's ip-down.d done %v after it; the first new LAN connection by wana answered %v after ifdown returned",
		ifdownDone.Sub(downAt).Round(time.Millisecond), last.At.Sub(ifdownDone).Round(time.Millisecond), byWana.Done.Sub(ifdownDone).Round(time.Millisecond))
	settled(byWana, host(l.A.Router))
	down := l.State()
	for _, part := range [][]string{down.Rules4, down.Routes4, down.IPTables, down.Registry} {
		for _, line := range part {
			if strings.Contains(line, "ppp0") || strings.Contains(line, "ispb") || strings.Contains(line, "203.0.113.") || strings.Contains(line, "dsl") {
				t.Errorf("left of the session or the stanza after ifdown dsl: %s", line)
			}
		}
	}
	for _, f := range []string{"ppp0.inet.json", "dsl.inet.json"} {
		if _, err := os.Stat(filepath.Join(l.RunDir, "links", f)); err == nil {
			t.Errorf("ifdown dsl left the record %s", f)
		}
	}
	if now := wanaState(); !slices.Equal(now, wana) {
		t.Errorf("wana's state changed at ifdown dsl:\nbefore:\n%s\nafter:\n%s", strings.Join(wana, "\n"), strings.Join(now, "\n"))
	}
	if code, out := statusCode(l); code != 0 {
		t.Errorf("ifisp status after ifdown dsl: exit %d:\n%s", code, out)
	}
	a4, b4 := spoofed()
	t.Logf("ifdown: spoofed packets dropped by ISP A %d, by ISP B %d", a4-a3, b4-b3)
	if a4 != a3 || b4 != b3 {
		t.Errorf("at ifdown dsl the ISPs dropped %d (A) and %d (B) spoofed packets, want 0", a4-a3, b4-b3)
	}
	for _, line := range logs.Matching("ifisp-lease") {
		t.Logf("%s %s", line.At.Format("15:04:05.000"), line.Text)
	}
}

// sessionUp checks the router's state for a PPP session on ppp0 with
// address addr: its `from` rule, ISP B's table's default via the peer, the
// main-table default of isp-metric 0 preferred for the LAN over wana's
// (metric 1), the SNAT chain, the records, `ifisp status` clean.
func sessionUp(t *testing.T, l *lab.Lab, addr string) {
	t.Helper()
	local, peer := l.PPPAddr("ppp0")
	if local.String() != addr || peer.String() != l.B.Gate {
		t.Errorf("ppp0: %v peer %v, want %s peer %s", local, peer, addr, l.B.Gate)
	}
	if out := l.Must(l.Router, "ip", "-4", "rule"); !strings.Contains(out, "from "+addr+" lookup ispb proto ifisp") {
		t.Errorf("no rule from %s:\n%s", addr, out)
	}
	if out := l.Must(l.Router, "ip", "-4", "route", "show", "table", "ispb"); !strings.Contains(out, "default via "+l.B.Gate+" dev ppp0 proto ifisp") {
		t.Errorf("table ispb has no default via %s dev ppp0:\n%s", l.B.Gate, out)
	}
	defaults := l.Must(l.Router, "ip", "-4", "route", "show", "default")
	// Metric 0 is the one ip does not print.
	if !slices.ContainsFunc(strings.Split(defaults, "\n"), func(line string) bool {
		return strings.Join(strings.Fields(line), " ") == "default via "+l.B.Gate+" dev ppp0 proto ifisp"
	}) {
		t.Errorf("the main table has no default via ppp0 at metric 0:\n%s", defaults)
	}
	if route := l.Must(l.Router, "ip", "-4", "route", "get", lab.Internet, "from", lab.LANHost, "iif", "lan0"); !strings.Contains(route, "dev ppp0") {
		t.Errorf("the LAN's route to the internet is not by ppp0 (main-table defaults:\n%s):\n%s", defaults, route)
	}
	save := l.Must(l.Router, "iptables-save")
	if !strings.Contains(save, ":IFISP-SNAT-ppp0 ") || !regexp.MustCompile(`(?m)^-A IFISP-SNAT-ppp0 -s 10\.1\.0\.0/24 -o ppp0 .*-j SNAT --to-source `+regexp.QuoteMeta(addr)+`$`).MatchString(save) {
		t.Errorf("no SNAT chain for ppp0 to %s:\n%s", addr, save)
	}
	rec, err := os.ReadFile(filepath.Join(l.RunDir, "links", "ppp0.inet.json"))
	if err != nil || !strings.Contains(string(rec), `"address": "`+addr+`"`) {
		t.Errorf("ppp0's record (address %s): %s, %v", addr, rec, err)
	}
	if anchor, err := os.ReadFile(filepath.Join(l.RunDir, "links", "dsl.inet.json")); err != nil || !strings.Contains(string(anchor), `"lost": true`) {
		t.Errorf("the anchor dsl.inet.json (lost): %s, %v", anchor, err)
	}
	if code, out := statusCode(l); code != 0 {
		t.Errorf("ifisp status with the session on %s: exit %d:\n%s", addr, code, out)
	}
}

// waitFor polls ok until it holds and returns when it first did; it fails
// the test after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, ok func() bool) time.Time {
	t.Helper()
	for deadline := time.Now().Add(timeout); ; time.Sleep(10 * time.Millisecond) {
		if ok() {
			return time.Now()
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s", timeout, what)
		}
	}
}

// envLines is an environment, one sorted "KEY=value" a line.
func envLines(env map[string]string) string {
	var lines []string
	for k, v := range env {
		lines = append(lines, k+"="+v)
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}
