//go:build vmtest

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
	"github.com/ifisp/ifisp/pkg/ra"
	"github.com/ifisp/ifisp/pkg/registry"
	"github.com/ifisp/ifisp/pkg/sixrd"
	"github.com/ifisp/ifisp/pkg/watch"
)

// ISP B renumbers the router: the lease of wanb, 6rd's IPv4 underlay,
// moves from 203.0.113.2 to 203.0.113.3, and the 6rd domain of sixrd_test.go
// (whose border relay takes all of 203.0.0.0/8) delegates another /64.
const (
	renumberRouter = "203.0.113.1"
	renumberFrom   = "203.0.113.2"
	renumberTo     = "203.0.113.3"
	// renumberOption is the same domain as DHCP option 212, as dhclient
	// hands it to its scripts: masklen 8, the /40, the relay.
	renumberOption = "8 40 2001:db8:6000:: 203.0.113.1"
)

// renumberStanzas is ISP B's IPv4 as an `inet manual` stanza whose address
// the test moves by hand, as dhclient-script would (manualWANB), and 6rd
// over it: the tunnel's `local` a placeholder, its embedded address
// 6rd-local's, domain the 6rd-prefix lines; watched (isp-check), so that
// ifisp-watch announces the LAN's /64.
func renumberStanzas(domain string) string {
	return `
iface wanb inet manual
	up ip addr add ` + renumberFrom + `/24 dev wanb
	up ip route add default via ` + renumberRouter + ` dev wanb
	isp-table ispb
	snat-from 10.1.0.0/24

iface sixrd inet6 v4tunnel
	endpoint any
	local 192.0.2.1
	ttl 64
	isp-table ispb
	isp-metric 1
	isp-check ` + lab.Internet6 + `
` + domain + `	6rd-local wanb
	6rd-lan lan0
`
}

// delegated6rd is the /64 the lab's 6rd domain delegates to v4.
func delegated6rd(t *testing.T, v4 string) netip.Prefix {
	t.Helper()
	p, err := sixrd.Delegated(netip.MustParsePrefix(sixrdPrefix), 8, netip.MustParseAddr(v4))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestSixRDRenumber: ISP B's DHCP lease moves the router to another IPv4
// address, and dhclient's exit hook (sourced as dhclient-script does, with
// reason=RENEW) moves 6rd along: the tunnel's local address, the delegated
// /64 on the LAN, its rule and ISP-table routes, the recorded prefix; the
// LAN host hears the old /64 deprecated and the new one preferred, numbers
// itself from it, and reaches the IPv6 internet host through the relay
// from it. With `6rd-prefix dhcp` the domain comes from option 212 of
// wanb's lease: no ifup of the tunnel before it, and a bad one refused.
func TestSixRDRenumber(t *testing.T) {
	if os.Getenv("IFISP_VM") != "1" {
		t.Skip("runs only in the VM guest (vm/run.sh sets IFISP_VM=1): this kernel may have no sit")
	}
	t.Run("static", func(t *testing.T) {
		l, hook := renumberLab(t, "\t6rd-prefix "+sixrdPrefix+"\n\t6rd-ipv4-masklen 8\n\t6rd-relay "+renumberRouter+"\n")
		w, cap := startSLAAC(t, l, []string{"wanb", "sixrd"}, delegated6rd(t, renumberFrom))
		renumber(t, l, w, cap, hook)
	})

	t.Run("dhcp", func(t *testing.T) {
		l, hook := renumberLab(t, "\t6rd-prefix dhcp\n")
		l.MustIfup("wanb")
		// No lease has given option 212 yet: pre-up refuses the stanza,
		// and ifupdown never makes the tunnel.
		before := l.State()
		out, err := l.Ifup("sixrd")
		want := "ifisp-6rd: sixrd: 6rd-prefix \"dhcp\": wanb's DHCP lease has no option 212 (yet): is `also request option-6rd;` in dhclient.conf, and is wanb up?\n"
		if err == nil || !strings.Contains(out, want) {
			t.Errorf("ifup sixrd before any option 212 said (%v):\n%s\nwant the line %q", err, out, want)
		}
		if out, err := l.Exec(l.Router, "ip", "link", "show", "sixrd"); err == nil {
			t.Errorf("refused, yet the tunnel is there:\n%s", out)
		}
		if d := lab.StateDiff(before, l.State()); d != "" {
			t.Errorf("refused, yet the state changed (-before +after):\n%s", d)
		}

		// The lease as dhclient binds it, the same address, with the
		// option: recorded with wanb, which does not move.
		out, ok := leaseHook(t, l, hook, "reason=BOUND", "interface=wanb", "new_ip_address="+renumberFrom,
			"new_routers="+renumberRouter, "new_option_6rd="+renumberOption)
		if !ok || !strings.Contains(out, "unchanged") {
			t.Fatalf("BOUND with option 212:\n%s", out)
		}
		if o := option212(t, l); o == nil || o.Prefix.String() != sixrdPrefix || o.IPv4MaskLen != 8 || o.Relay.String() != renumberRouter {
			t.Fatalf("wanb's record holds option 212 %+v, want %s", o, renumberOption)
		}
		w, cap := startSLAAC(t, l, []string{"sixrd"}, delegated6rd(t, renumberFrom))
		renumber(t, l, w, cap, hook, "new_option_6rd="+renumberOption)

		// A /84 is no domain: the lease is refused in one line, the
		// state stays, and dhclient-script goes on.
		before = l.State()
		out, ok = leaseHook(t, l, hook, "reason=RENEW", "interface=wanb", "new_ip_address="+renumberTo,
			"new_routers="+renumberRouter, "old_ip_address="+renumberTo, "new_option_6rd=8 60 2001:db8:6000:: "+renumberRouter)
		if !ok {
			t.Errorf("a bad option 212 failed dhclient-script:\n%s", out)
		}
		if n := strings.Count(out, "ifisp-lease: "); n != 1 || !strings.Contains(out, "ignored, the link keeps what it has: new_option_6rd:") || !strings.Contains(out, "give a /84") {
			t.Errorf("a bad option 212: ifisp-lease said\n%s\nwant one line refusing the option's /84", out)
		}
		if d := lab.StateDiff(before, l.State()); d != "" {
			t.Errorf("a bad option 212 changed the state (-before +after):\n%s", d)
		}
		if got := l.TunnelLocal("sixrd"); got != renumberTo {
			t.Errorf("after a bad option 212 the tunnel's local address is %q, want %s", got, renumberTo)
		}
		if o := option212(t, l); o == nil || o.Prefix.String() != sixrdPrefix {
			t.Errorf("after a bad option 212 wanb's record holds %+v, want the last good one, %s", o, renumberOption)
		}
	})
}

// renumberLease is the lease time of the RENEW that moves wanb: the 6rd
// prefix numbered from its address is announced for no longer.
const renumberLease = 600 * time.Second

// renumberLab is the lab with ISP B's border relay and renumberStanzas,
// the hooks installed, and dhclient's exit hook fragment written.
func renumberLab(t *testing.T, domain string) (*lab.Lab, string) {
	l := lab.New(t)
	borderRelay(l)
	l.Install(bin)
	l.Interfaces(renumberStanzas(domain))
	return l, l.DhclientExitHook(bin)
}

// renumber runs the move: wanb and sixrd up on renumberFrom, the LAN host
// numbered from its /64; then wanb moved to renumberTo and announced by
// the exit hook with reason=RENEW (and env), and everything checked and
// timed against what the LAN host sees.
func renumber(t *testing.T, l *lab.Lab, w *lab.Watch, cap *lab.RACapture, hook string, env ...string) {
	t.Helper()
	oldP, newP := delegated6rd(t, renumberFrom), delegated6rd(t, renumberTo)
	sixrdOn(t, l, renumberFrom, oldP, netip.Prefix{})
	oldHost := hostAddr(l.HostAddrs6(), oldP)
	pingVia6rd(t, l, oldHost)
	d := l.StartDialer(1500) // 30 s at most
	defer d.Stop()
	answered(t, d, time.Now(), oldP, 10*time.Second, "before the move")

	kernel := l.WatchNet()
	logged := len(w.Log())
	l.MoveLease("wanb", renumberTo+"/24", renumberRouter)
	renewed := time.Now()
	renew := func(old string) []string {
		return append([]string{"reason=RENEW", "interface=wanb", "new_ip_address=" + renumberTo,
			"new_routers=" + renumberRouter, "old_ip_address=" + old, fmt.Sprintf("new_dhcp_lease_time=%d", int(renumberLease.Seconds()))}, env...)
	}
	out, ok := leaseHook(t, l, hook, renew(renumberFrom)...)
	hookDone := time.Now()
	if !ok || !strings.Contains(out, "sixrd follows it") {
		t.Fatalf("the RENEW hook:\n%s", out)
	}
	// Announced: the old /64 deprecated, its valid lifetime running out,
	// the new one preferred, for no longer than wanb's lease (RFC 9096).
	r, heard := cap.WaitFor(renewed, 10*time.Second, func(r lab.RA) bool {
		o, oldOK := r.Prefix(oldP)
		n, newOK := r.Prefix(newP)
		return oldOK && newOK && o.Preferred == 0 && o.Valid > 0 && o.Valid <= ra.ValidLifetime && n.Preferred > 0
	})
	if !heard {
		var seen []string
		for _, r := range cap.Since(renewed) {
			seen = append(seen, r.At.Format("15:04:05.000")+": old "+lifetimes(r, oldP)+", new "+lifetimes(r, newP))
		}
		t.Fatalf("no advertisement of %s deprecated and %s preferred within 10s of the RENEW; heard (valid/preferred):\n%s\nifisp-watch:\n%s",
			oldP, newP, strings.Join(seen, "\n"), w.Log())
	}
	if n, _ := r.Prefix(newP); n.Valid > renumberLease || n.Preferred > n.Valid {
		t.Errorf("the advertisement says %s %s (valid/preferred s): want no longer than wanb's lease of %s", newP, lifetimes(r, newP), renumberLease)
	}
	reply := answered(t, d, renewed, newP, 15*time.Second, "after the move").Done
	since := func(at time.Time) time.Duration { return at.Sub(renewed).Round(time.Millisecond) }
	oldLAN, newLAN := netip.PrefixFrom(oldP.Addr().Next(), 64).String(), netip.PrefixFrom(newP.Addr().Next(), 64).String()
	gone, okGone := kernel.WaitAddr(renewed, "lan0", oldLAN, false, time.Second)
	came, okCame := kernel.WaitAddr(renewed, "lan0", newLAN, true, time.Second)
	if !okGone || !okCame {
		t.Errorf("lan0's addresses since the RENEW: want %s removed and %s added:\n%s", oldLAN, newLAN, kernel)
	}
	t.Logf("RENEW hook run at 0 (%s): lan0's %s removed %v, %s added %v; hook done %v; advertisement (old %s, new %s valid/preferred s) %v; first answer from %s %v",
		strings.TrimSpace(out), oldLAN, since(gone.At), newLAN, since(came.At), since(hookDone),
		lifetimes(r, oldP), lifetimes(r, newP), since(r.At), newP, since(reply))
	// What the monitor did meanwhile: the address moved by hand is a
	// change it may repair (under the lock the hook then waits for).
	t.Logf("ifisp-watch since the address moved:\n%s", w.Log()[logged:])

	sixrdOn(t, l, renumberTo, newP, oldP)
	host := l.HostAddrs6()
	newHost := hostAddr(host, newP)
	if !newHost.IsValid() || host[newHost] || !host[oldHost] {
		t.Errorf("the LAN host's addresses (address: deprecated) %v: want %s's deprecated, one from %s preferred", host, oldHost, newP)
	}
	pingVia6rd(t, l, newHost)
	noSpoofing(t, l)
	if code, out := statusCode(l); code != 0 {
		t.Errorf("ifisp status after the move: exit %d:\n%s", code, out)
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", w.Pid())); err != nil || strings.Contains(string(b), ") Z ") {
		t.Fatalf("ifisp-watch has exited since it started:\n%s", w.Log())
	}
	// Both links watched and up on their new plans: a link the move made
	// the monitor take for down (its probes' source gone) is up again.
	w.WaitFor("wanb", "inet", watch.Up, false, 10*time.Second)
	w.WaitFor("sixrd", "inet6", watch.Up, false, 10*time.Second)
	t.Logf("ifisp-watch's transitions: %q", w.Transitions())

	// The same lease again (dhclient's next renewal): nothing changes.
	before := l.State()
	again := time.Now()
	if out, ok := leaseHook(t, l, hook, renew(renumberTo)...); !ok || !strings.Contains(out, "unchanged") || strings.Contains(out, "follows") {
		t.Errorf("the same lease renewed again:\n%s", out)
	}
	t.Logf("the same lease renewed again: hook done in %v", time.Since(again).Round(time.Millisecond))
	if diff := lab.StateDiff(before, l.State()); diff != "" {
		t.Errorf("the same lease renewed again changed the state (-before +after):\n%s", diff)
	}
}

// pingVia6rd pings the internet host from the LAN host's src, and checks
// that ISP B's edge saw the echo requests as 6rd (IPv4) packets.
func pingVia6rd(t *testing.T, l *lab.Lab, src netip.Addr) {
	t.Helper()
	if !src.IsValid() {
		t.Fatalf("the LAN host has no address to ping from: %v", l.HostAddrs6())
	}
	before := l.Seen(&l.B, 4).Legit
	if got := l.Ping(l.LAN, lab.Internet6, 5, "-I", src.String()); got != 5 {
		t.Errorf("LAN host %s to %s: %d of 5 answered", src, lab.Internet6, got)
	}
	if n := l.Seen(&l.B, 4).Legit - before; n < 5 {
		t.Errorf("from %s: ISP B's edge saw %d IPv4 (6rd) packets from the router, want >= 5", src, n)
	}
}

// sixrdOn checks that 6rd runs on the IPv4 address v4, the delegated /64
// p, and that nothing is left of gone (when valid), the /64 of the
// address before: the tunnel's local address, lan0's address, the rules,
// ISP B's table, the registry.
func sixrdOn(t *testing.T, l *lab.Lab, v4 string, p, gone netip.Prefix) {
	t.Helper()
	if got := l.TunnelLocal("sixrd"); got != v4 {
		t.Errorf("the tunnel's local address is %q, want %s:\n%s", got, v4, l.Must(l.Router, "ip", "-d", "link", "show", "sixrd"))
	}
	lanAddr := netip.PrefixFrom(p.Addr().Next(), 64).String()
	checks := []struct {
		what  string
		out   string
		wants []string
	}{
		{"lan0's addresses", l.Must(l.Router, "ip", "-6", "addr", "show", "dev", "lan0", "scope", "global"), []string{"inet6 " + lanAddr + " "}},
		{"the IPv6 rules", l.Must(l.Router, "ip", "-6", "rule"), []string{"from " + p.String() + " lookup ispb proto ifisp"}},
		{"table ispb (IPv6)", l.Must(l.Router, "ip", "-6", "route", "show", "table", "ispb"),
			[]string{"default via ::" + renumberRouter + " dev sixrd proto ifisp", "throw " + p.String() + " dev lo proto ifisp"}},
		{"the IPv4 rules", l.Must(l.Router, "ip", "-4", "rule"), []string{"from " + v4 + " lookup ispb proto ifisp"}},
		{"table ispb (IPv4)", l.Must(l.Router, "ip", "-4", "route", "show", "table", "ispb"), []string{"default via " + renumberRouter + " dev wanb"}},
	}
	for _, c := range checks {
		for _, want := range c.wants {
			if !strings.Contains(c.out, want) {
				t.Errorf("%s lack %q:\n%s", c.what, want, c.out)
			}
		}
	}
	var rec registry.Link
	b, err := os.ReadFile(filepath.Join(l.RunDir, registry.Folder, "sixrd.inet6.json"))
	if err == nil {
		err = json.Unmarshal(b, &rec)
	}
	if err != nil || rec.LANAddress == nil || rec.LANAddress.Prefix != p || rec.LAN == nil || rec.LAN.Prefix != p {
		t.Errorf("the tunnel's record: lan_address and lan want %s: %v\n%s", p, err, b)
	}
	if !gone.IsValid() {
		return
	}
	// Nothing of the old address or /64, anywhere ifisp writes.
	oldNet := regexp.MustCompile(regexp.QuoteMeta(strings.TrimSuffix(gone.Addr().String(), "::")) + ":")
	s := l.State()
	for _, lines := range [][]string{s.Rules4, s.Rules6, s.Routes4, s.Routes6, s.IPTables, s.IP6Tables, s.Links, s.Registry} {
		for _, line := range lines {
			if oldAddr.MatchString(line) || oldNet.MatchString(line) {
				t.Errorf("left of %s or %s: %s", renumberFrom, gone, line)
			}
		}
	}
}

// option212 is option 212 as wanb's record holds it.
func option212(t *testing.T, l *lab.Lab) *sixrd.Option {
	t.Helper()
	var rec registry.Link
	b, err := os.ReadFile(filepath.Join(l.RunDir, registry.Folder, "wanb.inet.json"))
	if err == nil {
		err = json.Unmarshal(b, &rec)
	}
	if err != nil {
		t.Fatalf("wanb's record: %v\n%s", err, b)
	}
	return rec.Option6RD
}
