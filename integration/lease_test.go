package integration

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ifisp/ifisp/internal/lab"
	"github.com/ifisp/ifisp/pkg/registry"
	"github.com/ifisp/ifisp/pkg/sixrd"
)

// The addresses of these tests: ISP B's DHCP server reserves oldB for the
// router, then newB; wana keeps wanaAddr.
const (
	oldB     = "203.0.113.2"
	newB     = "203.0.113.3"
	wanaAddr = "198.51.100.2"
)

// dhcpLab builds a lab whose wanb gets its IPv4 address from a real DHCP
// server at ISP B (dnsmasq, reserving oldB for the router), by the real
// ifupdown and dhclient, with ifisp's hooks and its dhclient exit hook
// installed (and the lab's recorders of dhclient-script's runs), and
// brings wana and wanb up. clientConf are lines for the router's
// dhclient.conf. It returns with wanb bound to oldB, and the watch of the
// router's kernel it started before ifup.
func dhcpLab(t *testing.T, clientConf ...string) (*lab.Lab, *lab.DHCPServer, *lab.NetWatch) {
	t.Helper()
	l := lab.New(t)
	l.Install(bin)
	l.InstallDHCPHook(bin)
	if len(clientConf) > 0 {
		l.DHCPClientConfig(clientConf...)
	}
	l.RecordDHCPRuns()
	srv := l.StartDHCP(&l.B)
	l.Interfaces(lab.DHCPTwoISPs)
	l.Whoami()
	kernel := l.WatchNet()
	up := time.Now()
	l.MustIfup("wana", "wanb")
	if _, ok := kernel.WaitAddr(up, "wanb", oldB+"/24", true, 2*time.Second); !ok {
		t.Fatalf("ifup wanb: wanb has not %s/24:\n%s\n%s\ndnsmasq:\n%s", oldB, l.Must(l.Router, "ip", "-4", "addr", "show", "dev", "wanb"), kernel, srv.Log())
	}
	l.WaitScriptRun(up, 2*time.Second, "BOUND to "+oldB, bound(oldB))
	return l, srv, kernel
}

// bound matches dhclient's event that binds the lease of addr, after
// which the exit hooks of that run, ifisp's first, have returned.
func bound(addr string) func(lab.ScriptRun) bool {
	return func(e lab.ScriptRun) bool {
		switch e.Reason() {
		case "BOUND", "RENEW", "REBIND", "REBOOT":
			return e.Env["new_ip_address"] == addr
		}
		return false
	}
}

// namesAddr matches a line that names addr (not a longer address that
// begins with it).
func namesAddr(addr string) *regexp.Regexp {
	return regexp.MustCompile(`(^|[^0-9.])` + regexp.QuoteMeta(addr) + `([^0-9]|$)`)
}

// leftovers returns what in the router still names addr: IPv4 policy
// rules, routes in any table, iptables-save lines, registry files of the
// lab's run directory, and conntrack entries NATed to it (whose reply
// goes to addr although their original source is another).
func leftovers(t *testing.T, l *lab.Lab, addr string) []string {
	t.Helper()
	re := namesAddr(addr)
	var found []string
	add := func(what, out string) {
		for _, line := range strings.Split(out, "\n") {
			if re.MatchString(line) {
				found = append(found, what+": "+strings.TrimSpace(line))
			}
		}
	}
	add("ip rule", l.Must(l.Router, "ip", "-4", "rule"))
	add("ip route", l.Must(l.Router, "ip", "-4", "route", "show", "table", "all"))
	add("iptables-save", l.Must(l.Router, "iptables-save"))
	files, _ := filepath.Glob(filepath.Join(l.RunDir, "links", "*.json"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		add("registry "+filepath.Base(f), string(b))
	}
	for _, e := range natedTo(l.Must(l.Router, "conntrack", "-L", "-f", "ipv4"), addr) {
		found = append(found, "conntrack: "+e)
	}
	return found
}

// natedTo returns the lines of `conntrack -L` output whose flow is NATed
// to addr: the reply tuple's destination is addr, the original source is
// not (the router's own flows from addr, dhclient's renewals, are not
// NATed).
func natedTo(out, addr string) []string {
	var nated []string
	for _, line := range strings.Split(out, "\n") {
		var src, dst []string
		for _, f := range strings.Fields(line) {
			if v, ok := strings.CutPrefix(f, "src="); ok {
				src = append(src, v)
			}
			if v, ok := strings.CutPrefix(f, "dst="); ok {
				dst = append(dst, v)
			}
		}
		if len(src) >= 2 && len(dst) >= 2 && dst[1] == addr && src[0] != addr {
			nated = append(nated, strings.Join(strings.Fields(line), " "))
		}
	}
	return nated
}

// wanaNames are what names wana (ISP A) in a line of the router's state:
// the interface, its addresses, its table.
var wanaNames = []string{"wana", "198.51.100.", "2001:db8:a:", "ispa"}

// wanaPart is the part of the router's state that is wana's: every line
// naming it.
func wanaPart(s lab.State) lab.State {
	return lab.State{
		Rules4: mentioning(s.Rules4, wanaNames...), Rules6: mentioning(s.Rules6, wanaNames...),
		Routes4: mentioning(s.Routes4, wanaNames...), Routes6: mentioning(s.Routes6, wanaNames...),
		IPTables: mentioning(s.IPTables, wanaNames...), IP6Tables: mentioning(s.IP6Tables, wanaNames...),
		Links: mentioning(s.Links, wanaNames...), Registry: mentioning(s.Registry, wanaNames...),
	}
}

// wanaKept fails the test unless wana's part of the router's state is
// before, its wanaPart then; when says with what wanb did meanwhile.
func wanaKept(t *testing.T, l *lab.Lab, before lab.State, when string) {
	t.Helper()
	if diff := lab.StateDiff(before, wanaPart(l.State())); diff != "" {
		t.Errorf("wana's rules, routes, chains or record changed %s (-before +after):\n%s", when, diff)
	}
}

// baseline is what a test of wanb's lease compares the router with once
// the lease changed, taken before: wana's part of its state, the spoofed
// packets the ISPs had dropped, in all and by ISP and family, and a count
// of those from oldB reaching ISP B from then on.
type baseline struct {
	wana      lab.State
	spoofed   int
	spoofedBy map[string]int
	fromOld   func() int
}

func takeBaseline(l *lab.Lab) baseline {
	return baseline{wanaPart(l.State()), l.Spoofed(), spoofedBy(l), l.CountFrom(&l.B, oldB)}
}

// offOld waits until the LAN is on p for good, 25 new connections from
// from on answered from it (settle), and fails the test if a packet from
// oldB reached ISP B meanwhile: after says what from is, after which
// none may. It returns settle's time.
func (b baseline) offOld(t *testing.T, d *lab.Dialer, from time.Time, p netip.Prefix, after string) time.Time {
	t.Helper()
	before := b.fromOld()
	settled := settle(t, d, from, p, 25, 5*time.Second)
	if n := b.fromOld() - before; n != 0 {
		t.Errorf("%d packets from %s reached ISP B after %s (%d from the baseline to then)", n, oldB, after, before)
	}
	return settled
}

// present fails the test unless out has a line matching each of want.
func present(t *testing.T, what, out string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !regexp.MustCompile("(?m)" + w).MatchString(out) {
			t.Errorf("%s has no line matching %q:\n%s", what, w, out)
		}
	}
}

// scriptRuns lists the runs of the router's client scripts that ended at
// or after from, one a line.
func scriptRuns(l *lab.Lab, from time.Time) string {
	var lines []string
	for _, r := range l.ScriptRuns() {
		if !r.At.Before(from) {
			lines = append(lines, r.String())
		}
	}
	return strings.Join(lines, "\n")
}

// renewals checks the lab's premise: dhclient renews oldB every few
// seconds, and a renewal that keeps the address leaves the router's state
// as it was (ifisp's hook runs at each one). It returns the renewal
// periods dnsmasq's ACKs show.
func renewals(t *testing.T, l *lab.Lab, srv *lab.DHCPServer) []time.Duration {
	t.Helper()
	renewed := func(from time.Time) lab.ScriptRun {
		t.Helper()
		return l.WaitScriptRun(from, 3*lab.DHCPRenew, "RENEW of "+oldB, func(e lab.ScriptRun) bool {
			return e.Reason() == "RENEW" && e.Env["new_ip_address"] == oldB && e.Env["old_ip_address"] == oldB
		})
	}
	first := renewed(time.Now())
	l.WaitLinkWatch(5 * time.Second)
	before := l.State()
	renewed(first.At.Add(time.Nanosecond))
	if diff := lab.StateDiff(before, l.State()); diff != "" {
		t.Errorf("a renewal of the same address changed the router's state (-before +after):\n%s", diff)
	}
	var acks []time.Time
	for _, r := range srv.Replies() {
		if r.Kind == "DHCPACK" && r.Addr == oldB {
			acks = append(acks, r.At)
		}
	}
	var periods []time.Duration
	for i := 1; i < len(acks); i++ {
		p := acks[i].Sub(acks[i-1])
		periods = append(periods, p.Round(10*time.Millisecond))
		if p > 2*lab.DHCPRenew {
			t.Errorf("dhclient renewed %v after the previous ACK, want at most %v (T1 is %v)", p, 2*lab.DHCPRenew, lab.DHCPRenew)
		}
	}
	return periods
}

// TestDHCPv4AddressChange moves the DHCP server's reservation for the
// router from oldB to newB while a LAN host opens a new IPv4 connection
// every 20 ms: at its next renewal the router gets a DHCPNAK, drops oldB
// (dhclient's EXPIRE), starts over and is bound to newB (BOUND), and
// ifisp-lease, run by the exit hook each time, must move wanb's `from`
// rule, ISP table routes, SNAT and egress guard, and registry record to
// newB and delete the flows NATed to oldB. The LAN must be NATed to newB
// within a second of the router having it, no ISP may see a spoofed
// packet, and nothing of ISP A's may change.
func TestDHCPv4AddressChange(t *testing.T) {
	l, srv, kernel := dhcpLab(t)
	dialer := l.StartDialerTo(lab.Internet, 3000) // 60 s at most
	defer dialer.Stop()
	answered(t, dialer, time.Now(), host(oldB), 10*time.Second, "after ifup")
	periods := renewals(t, l, srv)
	t.Logf("dhclient renews every %v (dnsmasq's ACKs; T1 %v)", periods, lab.DHCPRenew)
	if code, out := statusCode(l); code != 0 {
		t.Errorf("ifisp status before the change: exit %d, want 0:\n%s", code, out)
	}

	base := takeBaseline(l)
	changed := time.Now()
	srv.Reserve(newB)
	moved, ok := kernel.WaitAddr(changed, "wanb", newB+"/24", true, 3*lab.DHCPRenew)
	if !ok {
		t.Fatalf("wanb has not %s/24 %v after the reservation moved; dhclient ran:\n%s\naddresses:\n%s\ndnsmasq:\n%s",
			newB, 3*lab.DHCPRenew, scriptRuns(l, changed), kernel, srv.Log())
	}
	atAddr := spoofedBy(l)
	first := answered(t, dialer, moved.At, host(newB), 10*time.Second, "after the router got it")
	atFirst := spoofedBy(l)
	done := l.WaitScriptRun(changed, 10*time.Second, "BOUND to "+newB, bound(newB))

	var nak time.Time
	for _, r := range srv.Replies() {
		if r.Kind == "DHCPNAK" && r.Addr == oldB && !r.At.Before(changed) {
			nak = r.At
			break
		}
	}
	gone, _ := kernel.WaitAddr(changed, "wanb", oldB+"/24", false, 0) // before moved: recorded
	natDelay := first.Done.Sub(moved.At)
	t.Logf("LAN NATed to %s %v after wanb got it (that connection started %v after); ifisp's hook done %v after; "+
		"DHCPNAK %v after the reservation moved, %s gone %v before %s came",
		newB, natDelay.Round(time.Millisecond), first.Start.Sub(moved.At).Round(time.Millisecond), done.At.Sub(moved.At).Round(time.Millisecond),
		nak.Sub(changed).Round(time.Millisecond), oldB, moved.At.Sub(gone.At).Round(time.Millisecond), newB)
	t.Logf("dhclient's events after the move:\n%s", scriptRuns(l, changed))
	if natDelay > time.Second {
		t.Errorf("the LAN was NATed to %s %v after wanb got it, want within 1s", newB, natDelay)
	}

	// The hooks of the BOUND run have returned: nothing may name oldB.
	if left := leftovers(t, l, oldB); len(left) > 0 {
		t.Errorf("after the BOUND to %s, the router still names %s:\n%s", newB, oldB, strings.Join(left, "\n"))
	}
	present(t, "ip -4 rule", l.Must(l.Router, "ip", "-4", "rule"), `from `+regexp.QuoteMeta(newB)+` lookup ispb`)
	present(t, "ip route show table ispb", l.Must(l.Router, "ip", "-4", "route", "show", "table", "ispb"), `^default via 203\.0\.113\.1 dev wanb`)
	present(t, "iptables-save", l.Must(l.Router, "iptables-save"), `-j SNAT --to-source `+regexp.QuoteMeta(newB)+`\b`)
	if b, err := os.ReadFile(filepath.Join(l.RunDir, "links", "wanb.inet.json")); err != nil || !namesAddr(newB).Match(b) {
		t.Errorf("the registry's wanb.inet.json does not name %s (%v):\n%s", newB, err, b)
	}
	if code, out := statusCode(l); code != 0 {
		t.Errorf("ifisp status after the change: exit %d, want 0:\n%s", code, out)
	}

	// No packet from oldB reaches ISP B once the hook has returned,
	// counted until 25 new connections after it were answered from newB,
	// and every connection started after it is NATed to newB.
	settled := base.offOld(t, dialer, done.At, host(newB), "ifisp's hook for the BOUND to "+newB+" returned")
	for _, d := range dialer.Answered(done.At, settled) {
		if d.Src.String() != newB {
			t.Errorf("a LAN connection started %v after the hook returned was answered from %s, want %s", d.Start.Sub(done.At), d.Src, newB)
		}
	}
	if n := l.Spoofed() - base.spoofed; n != 0 {
		t.Errorf("the ISPs dropped %d spoofed packets after the reservation moved (by ISP and family: before %v, when wanb got %s %v, at the first connection from it %v, now %v)",
			n, base.spoofedBy, newB, atAddr, atFirst, spoofedBy(l))
	}
	wanaKept(t, l, base.wana, "with wanb's lease")
}

// leaseTime is the lease TestDHCPv4LeaseLost's dhclient believes it has:
// dnsmasq gives none shorter than 2 minutes, and dhclient applies a
// `supersede dhcp-lease-time` of its dhclient.conf to every lease it
// receives, its timers included (and the environment of its script, and
// the address's valid_lft that dhclient-script gives the kernel). The
// server's T1 and T2, shorter, stay the server's.
const leaseTime = 20 * time.Second

// TestDHCPv4LeaseLost kills ISP B's DHCP server while the LAN host opens
// a new IPv4 connection every 20 ms: dhclient's renewals and rebinds go
// unanswered, and when the lease runs out (leaseTime) dhclient-script
// drops oldB (EXPIRE; the kernel drops it too, at the end of its
// valid_lft, whichever comes first). The LAN must be NATed to wana within
// a second of oldB going, nothing may name oldB after ifisp's hook for the
// EXPIRE returned, `ifisp status` must find the kernel as the plans say,
// no ISP may see a spoofed packet, and nothing of ISP A's may change. When
// the server comes back, dhclient (which keeps asking) is bound to oldB
// again, and the LAN must be NATed to it within a second.
func TestDHCPv4LeaseLost(t *testing.T) {
	l, srv, kernel := dhcpLab(t, fmt.Sprintf("supersede dhcp-lease-time %d;", int(leaseTime.Seconds())))
	dialer := l.StartDialerTo(lab.Internet, 5000) // 100 s at most
	defer dialer.Stop()
	answered(t, dialer, time.Now(), host(oldB), 10*time.Second, "after ifup")
	if code, out := statusCode(l); code != 0 {
		t.Errorf("ifisp status before the server stops: exit %d, want 0:\n%s", code, out)
	}
	base := takeBaseline(l)

	stopped := time.Now()
	srv.Stop()
	gone, ok := kernel.WaitAddr(stopped, "wanb", oldB+"/24", false, leaseTime+10*time.Second)
	if !ok {
		t.Fatalf("wanb still has %s %v after the server stopped; dhclient ran:\n%s\naddresses:\n%s", oldB, leaseTime+10*time.Second, scriptRuns(l, stopped), kernel)
	}
	first := answered(t, dialer, gone.At, host(wanaAddr), 10*time.Second, "after the lease ran out")
	expired := l.WaitScriptRun(stopped, 10*time.Second, "EXPIRE of "+oldB, func(e lab.ScriptRun) bool {
		return e.Reason() == "EXPIRE" && e.Env["old_ip_address"] == oldB
	})
	delay := first.Done.Sub(gone.At)
	t.Logf("%s gone %v after the server stopped, dhclient's EXPIRE hooks done %v after that; LAN NATed to wana %v after %s went (that connection started %v after)",
		oldB, gone.At.Sub(stopped).Round(time.Millisecond), expired.At.Sub(gone.At).Round(time.Millisecond), delay.Round(time.Millisecond), oldB, first.Start.Sub(gone.At).Round(time.Millisecond))
	t.Logf("dhclient's events after the server stopped:\n%s", scriptRuns(l, stopped))
	if delay > time.Second {
		t.Errorf("the LAN was NATed to wana %v after the lease ran out, want within 1s", delay)
	}
	if left := leftovers(t, l, oldB); len(left) > 0 {
		t.Errorf("after the EXPIRE, the router still names %s:\n%s", oldB, strings.Join(left, "\n"))
	}
	// A plan the kernel does not match is one ifisp-watch would repair:
	// it would put oldB's rules back.
	if code, out := statusCode(l); code != 0 {
		t.Errorf("ifisp status after the lease ran out: exit %d, want 0:\n%s", code, out)
	}
	settled := base.offOld(t, dialer, expired.At, host(wanaAddr), "ifisp's hook for the EXPIRE returned")
	atExpired := spoofedBy(l)
	wanaKept(t, l, base.wana, "when wanb's lease ran out")

	// The server comes back; dhclient, in INIT since the EXPIRE, sends
	// a DISCOVER at least every 15 s (backoff-cutoff) for 60 s (timeout)
	// before it would give up for 5 minutes (retry): this is well
	// within.
	restarted := time.Now()
	srv.Start()
	back, ok := kernel.WaitAddr(restarted, "wanb", oldB+"/24", true, 30*time.Second)
	if !ok {
		t.Fatalf("wanb has not %s again 30s after the server came back; dhclient ran:\n%s\ndnsmasq:\n%s", oldB, scriptRuns(l, settled), srv.Log())
	}
	again := answered(t, dialer, back.At, host(oldB), 10*time.Second, "after the server came back")
	done := l.WaitScriptRun(restarted, 10*time.Second, "BOUND to "+oldB, bound(oldB))
	delay = again.Done.Sub(back.At)
	t.Logf("%s back %v after the server came back; LAN NATed to it %v after (ifisp's hook done %v after)",
		oldB, back.At.Sub(restarted).Round(time.Millisecond), delay.Round(time.Millisecond), done.At.Sub(back.At).Round(time.Millisecond))
	if delay > time.Second {
		t.Errorf("the LAN was NATed to %s %v after wanb had it again, want within 1s", oldB, delay)
	}
	settle(t, dialer, done.At, host(oldB), 25, 5*time.Second)
	if code, out := statusCode(l); code != 0 {
		t.Errorf("ifisp status after the lease came back: exit %d, want 0:\n%s", code, out)
	}
	if n := l.Spoofed() - base.spoofed; n != 0 {
		t.Errorf("the ISPs dropped %d spoofed packets after the server stopped (by ISP and family: before %v, after the EXPIRE %v, now %v)", n, base.spoofedBy, atExpired, spoofedBy(l))
	}
	wanaKept(t, l, base.wana, "when wanb's lease came back")
}

// TestDHCPv4Option6RD: option 212 from a real server, with the shipped
// dhclient.conf lines, is recorded with wanb's link for `6rd-prefix dhcp`;
// an option 212 no 6rd domain can be, and a lease without a router, are
// refused: the record and the kernel keep what they had, and dhclient
// keeps renewing its lease.
func TestDHCPv4Option6RD(t *testing.T) {
	conf, err := os.ReadFile(filepath.Join(lab.Root(), "examples/dhclient-6rd.conf"))
	if err != nil {
		t.Fatal(err)
	}
	l, srv, _ := dhcpLab(t, string(conf))
	record := func() string {
		b, err := os.ReadFile(filepath.Join(l.RunDir, "links/wanb.inet.json"))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	// MASKLEN 8, PREFIXLEN 40, 2001:db8:6000::, relay 203.0.113.1.
	good := "212,08:28:20:01:0d:b8:60:00:00:00:00:00:00:00:00:00:00:00:cb:00:71:01"
	renewedWith := func(from time.Time, what string, ok func(lab.ScriptRun) bool) lab.ScriptRun {
		t.Helper()
		return l.WaitScriptRun(from, 4*lab.DHCPRenew, what, ok)
	}
	at := time.Now()
	srv.SetOptions(lab.DHCPOptions{Forced: []string{good}})
	renewedWith(at, "a renewal with option 212", func(e lab.ScriptRun) bool { return e.Env["new_option_6rd"] == "8 40 2001:db8:6000:: 203.0.113.1" })
	var rec registry.Link
	if err := json.Unmarshal([]byte(record()), &rec); err != nil {
		t.Fatal(err)
	}
	want := sixrd.Option{IPv4MaskLen: 8, Prefix: netip.MustParsePrefix("2001:db8:6000::/40"), Relay: netip.MustParseAddr("203.0.113.1")}
	if rec.Option6RD == nil || *rec.Option6RD != want {
		t.Fatalf("wanb's record holds option 212 %+v, want %+v:\n%s", rec.Option6RD, want, record())
	}
	before, recBefore := l.State(), record()

	for _, tc := range []struct {
		name string
		opts lab.DHCPOptions
		ok   func(lab.ScriptRun) bool
	}{
		{"option 212 giving a /84", lab.DHCPOptions{Forced: []string{"212,08:3c:20:01:0d:b8:60:00:00:00:00:00:00:00:00:00:00:00:cb:00:71:01"}},
			func(e lab.ScriptRun) bool { return e.Env["new_option_6rd"] == "8 60 2001:db8:6000:: 203.0.113.1" }},
		{"option 212 with a mask length of 40", lab.DHCPOptions{Forced: []string{"212,28:28:20:01:0d:b8:60:00:00:00:00:00:00:00:00:00:00:00:cb:00:71:01"}},
			func(e lab.ScriptRun) bool { return strings.HasPrefix(e.Env["new_option_6rd"], "40 ") }},
		{"no router", lab.DHCPOptions{NoRouter: true, Forced: []string{good}},
			func(e lab.ScriptRun) bool { _, has := e.Env["new_routers"]; return e.Reason() == "RENEW" && !has }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			at := time.Now()
			srv.SetOptions(tc.opts)
			renewedWith(at, tc.name, tc.ok)
			if rec := record(); rec != recBefore {
				t.Errorf("wanb's record changed:\n%s\nwas:\n%s", rec, recBefore)
			}
			if diff := lab.StateDiff(before, l.State()); diff != "" {
				t.Errorf("the state changed (-before +after):\n%s", diff)
			}
			// dhclient goes on: its next renewal of the same lease.
			next := time.Now()
			renewedWith(next, "the next renewal", bound(oldB))
		})
	}
}
