package integration

import (
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ifisp/ifisp/internal/lab"
	"github.com/ifisp/ifisp/pkg/ra"
)

// lan64 is the /64 isp-lan lan0 numbers from a delegated prefix (subnet
// 0), and lanAddr the router's address there, ::1.
func lan64(p netip.Prefix) netip.Prefix { return netip.PrefixFrom(p.Addr(), 64) }

func lanAddr(p netip.Prefix) netip.Prefix { return netip.PrefixFrom(p.Addr().Next(), 64) }

// fromRule names the rule from p to isp's table, as `ip rule` shows it.
func fromRule(p netip.Prefix, isp *lab.ISP) string {
	return fmt.Sprintf("from %s lookup %s", p, isp.Name)
}

// v6Token matches what may be an IPv6 address or prefix in a line.
var v6Token = regexp.MustCompile(`[0-9A-Fa-f]*:[0-9A-Fa-f:.]*(/[0-9]+)?`)

// namesPrefix returns the lines of out that name an address or prefix
// inside p, each after what.
func namesPrefix(what, out string, p netip.Prefix) []string {
	var found []string
	for _, line := range strings.Split(out, "\n") {
		for _, tok := range v6Token.FindAllString(line, -1) {
			s, _, _ := strings.Cut(tok, "/")
			if a, err := netip.ParseAddr(s); err == nil && p.Contains(a) {
				found = append(found, what+": "+strings.TrimSpace(line))
				break
			}
		}
	}
	return found
}

// leftovers6 returns what in the router still names p: IPv6 policy
// rules, routes of any table, lan0's addresses, ip6tables-save lines and
// the registry's records.
func leftovers6(t *testing.T, l *lab.Lab, p netip.Prefix) []string {
	t.Helper()
	var found []string
	found = append(found, namesPrefix("ip -6 rule", l.Must(l.Router, "ip", "-6", "rule"), p)...)
	found = append(found, namesPrefix("ip -6 route", l.Must(l.Router, "ip", "-6", "route", "show", "table", "all"), p)...)
	found = append(found, namesPrefix("lan0", l.Must(l.Router, "ip", "-6", "addr", "show", "dev", "lan0"), p)...)
	found = append(found, namesPrefix("ip6tables-save", l.Must(l.Router, "ip6tables-save"), p)...)
	for _, r := range l.State().Registry {
		found = append(found, namesPrefix("registry", r, p)...)
	}
	return found
}

// waitHostAddr waits until the LAN host has an address in p that is not
// deprecated, and returns when it saw it and the address.
func waitHostAddr(t *testing.T, l *lab.Lab, p netip.Prefix, timeout time.Duration, what string) (time.Time, netip.Addr) {
	t.Helper()
	for deadline := time.Now().Add(timeout); ; time.Sleep(5 * time.Millisecond) {
		addrs := l.HostAddrs6()
		if a := hostAddr(addrs, p); a.IsValid() && !addrs[a] {
			return time.Now(), a
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: the LAN host has no preferred address in %s after %s: %v", what, p, timeout, addrs)
		}
	}
}

// msec is a duration as the figures quote it.
func msec(d time.Duration) string { return d.Round(time.Millisecond).String() }

// pdLab is the lab of the DHCPv6 prefix delegation tests: ISP B's dhcpd -6
// delegating from PDPoolB1 to wanb (lab.PDTwoISPs, checked), a SLAAC LAN
// host opening new connections to the internet host (dialer), the router's
// kernel watched, the LAN's advertisements captured, wana up and
// ifisp-watch running; wanb is not up yet.
type pdLab struct {
	*lab.Lab
	srv    *lab.DHCP6Server
	kernel *lab.NetWatch
	cap    *lab.RACapture
	w      *lab.Watch
	dialer *lab.Dialer
	// fail ends the test with what the clients, the kernel, the monitor
	// and the server did.
	fail func(format string, args ...any)
}

func newPDLab(t *testing.T) *pdLab {
	t.Helper()
	l := lab.New(t)
	l.Install(bin)
	l.InstallDHCP6Hook(bin)
	l.RecordDHCPRuns()
	p := &pdLab{Lab: l, srv: l.StartDHCPv6(&l.B, lab.PDPoolB1)}
	l.Interfaces(lab.Checked(lab.PDTwoISPs))
	l.SLAACHost()
	l.Whoami()
	p.kernel, p.cap = l.WatchNet(), l.CaptureRAs()
	l.MustIfup("wana")
	p.w = l.StartWatch(bin)
	p.dialer = l.StartDialer(10000) // 200 s of new connections at most
	t.Cleanup(p.dialer.Stop)
	p.fail = func(format string, args ...any) {
		t.Helper()
		t.Fatalf(format+"\ndhclient-script ran:\n%s\nkernel:\n%s\nifisp-watch:\n%s\ndhcpd:\n%s",
			append(args, scriptRuns(l, time.Time{}), p.kernel, p.w.Log(), p.srv.Log())...)
	}
	return p
}

// TestDHCPv6PD: ISP B delegates the router a /56 by DHCPv6 (a real
// isc-dhcp-server, dhcpd -6, and the real ifupdown and dhclient -6 -P,
// with ifisp's dhclient exit hook), and gives it its default by router
// advertisement, which the test sends when it chooses.
//
//   - ifup wanb before any advertisement succeeds: the link's record
//     waits ("lost") with the delegated prefix.
//   - The advertisement comes: ifisp-watch brings the link up, with the
//     `from` rule of the /56 and lan0's ::1 of its first /64, announces
//     that /64 (lifetimes no longer than the delegation's, RFC 9096),
//     and the LAN host numbers itself from it and reaches the internet
//     host from it.
//   - The server comes back with no bindings and another pool: at the
//     router's Rebind it takes the old prefix back (lifetimes 0) and
//     delegates a new one. Within a second of dhclient handing over the
//     new prefix: its rule, lan0's new ::1, an advertisement of the old
//     /64 deprecated (valid for no longer than its delegation had left)
//     beside the new one (no longer than its delegation), and
//     a new LAN connection answered from the new prefix; nothing of the
//     old /56 is left in the router, no ISP sees a spoofed packet, ISP B
//     no packet from the old /56, and nothing of wana's changes.
func TestDHCPv6PD(t *testing.T) {
	p := newPDLab(t)
	l, srv, kernel, cap, dialer, fail := p.Lab, p.srv, p.kernel, p.cap, p.dialer, p.fail

	// a. ifup wanb, both families, before any router advertisement.
	up := time.Now()
	if out, err := l.Ifup("wanb"); err != nil {
		fail("ifup wanb before any router advertisement: %v\n%s", err, out)
	}
	upTook := time.Since(up)
	bound := l.WaitScriptRun(up, 5*time.Second, "delegating a prefix", func(r lab.ScriptRun) bool {
		_, ok := r.NewPrefix()
		return ok
	})
	old, _ := bound.NewPrefix()
	if given, ok := srv.Delegated(); !ok || given != old {
		t.Errorf("dhcpd's lease file delegates %v (%v), dhclient's %s says %s", given, ok, bound.Reason(), old)
	}
	if !lab.PDPoolB1.Contains(old.Addr()) || old.Bits() != lab.DelegatedBits {
		t.Errorf("delegated %s, want a /%d of %s", old, lab.DelegatedBits, lab.PDPoolB1)
	}
	rec, text := l.LinkRecord("wanb", "inet6")
	if rec == nil || !rec.Lost || rec.Complete() || rec.Delegated != old {
		fail("after ifup wanb, before any router advertisement, links/wanb.inet6.json is not waiting (\"lost\": true) with \"delegated\": %q:\n%s", old, text)
	}
	if kernel.HasRule(old, l.B.Table) {
		t.Errorf("before any router advertisement the router has the rule %s", fromRule(old, &l.B))
	}
	t.Logf("ifup wanb before any router advertisement: exit 0 in %s; %s delegated (dhclient's %s, hooks done %s after ifup began); links/wanb.inet6.json waits: %s",
		msec(upTook), old, bound.Reason(), msec(bound.At.Sub(up)), strings.TrimSpace(text))
	t.Logf("dhclient -6 at ifup:\n%s", scriptRuns(l, up))

	// A renewal while the link waits leaves it waiting, with its prefix.
	renewed := l.WaitScriptRun(bound.At, 3*lab.DHCP6Renew, "renewing "+old.String(), func(r lab.ScriptRun) bool {
		p, ok := r.NewPrefix()
		return ok && p == old && r.Reason() == "RENEW6"
	})
	if rec, text := l.LinkRecord("wanb", "inet6"); rec == nil || !rec.Lost || rec.Complete() || rec.Delegated != old {
		fail("after dhclient's RENEW6 of %s, before any router advertisement, links/wanb.inet6.json is not waiting with it:\n%s", old, text)
	}
	t.Logf("renewed while waiting (%s after the BOUND6); still waiting:\n%s", msec(renewed.At.Sub(bound.At)), scriptRuns(l, bound.At.Add(time.Nanosecond)))

	// b. ISP B's router advertisement: the default comes.
	wanaBefore := wanaPart(l.State())
	spoofedB := l.Seen(&l.B, 6).Spoofed
	sent := l.AdvertiseDefault(&l.B, 30*time.Minute)
	rule, ok := kernel.WaitRule(sent, old, l.B.Table, true, 5*time.Second)
	if !ok {
		fail("no rule %s within 5s of ISP B's router advertisement", fromRule(old, &l.B))
	}
	defAt := "not seen"
	if e, ok := kernel.FindRoute(sent, func(e lab.RouteEvent) bool {
		return e.Added && e.Dst == netip.MustParsePrefix("::/0") && e.Gw.IsLinkLocalUnicast() && e.Iface == "wanb" && e.Table == 254
	}); ok {
		defAt = msec(e.At.Sub(sent))
	}
	lanUp, lanOK := kernel.WaitAddr(sent, "lan0", lanAddr(old).String(), true, 5*time.Second)
	if !lanOK {
		fail("lan0 has no %s within 5s of ISP B's router advertisement", lanAddr(old))
	}
	heard, heardOK := cap.WaitFor(sent, 10*time.Second, func(r lab.RA) bool {
		o, ok := r.Prefix(lan64(old))
		return ok && o.Preferred > 0 && r.RouterLifetime > 0
	})
	if !heardOK {
		fail("the LAN host heard no advertisement of %s within 10s of ISP B's", lan64(old))
	}
	delegation(t, heard, lan64(old), "the first advertisement of the delegated prefix")
	hostAt, host := waitHostAddr(t, l, lan64(old), 5*time.Second, "after ISP B's router advertisement")
	first := answered(t, dialer, sent, lan64(old), 10*time.Second, "after ISP B's router advertisement")
	t.Logf("ISP B's router advertisement sent: the router's RA default %s after, rule %s %s after, lan0 %s %s after, the LAN host heard %s (%s) %s after and had %s %s after, first new connection answered from it %s after (started %s after)",
		defAt, fromRule(old, &l.B), msec(rule.At.Sub(sent)), lanAddr(old), msec(lanUp.At.Sub(sent)), lan64(old), lifetimes(heard, lan64(old)), msec(heard.At.Sub(sent)),
		host, msec(hostAt.Sub(sent)), msec(first.Done.Sub(sent)), msec(first.Start.Sub(sent)))
	if rec, text := l.LinkRecord("wanb", "inet6"); rec == nil || rec.Lost || !rec.Complete() || rec.Delegated != old || rec.LAN == nil || rec.LAN.Prefix != lan64(old) {
		t.Errorf("after the router advertisement, links/wanb.inet6.json is not up with %s and lan0's %s:\n%s", old, lan64(old), text)
	}
	settle(t, dialer, first.Done, lan64(old), 25, 5*time.Second)
	if code, out := statusCode(l); code != 0 {
		t.Errorf("ifisp status with wanb up on %s: exit %d, want 0:\n%s", old, code, out)
	}
	if n := l.Seen(&l.B, 6).Spoofed - spoofedB; n != 0 {
		t.Errorf("ISP B dropped %d spoofed IPv6 packets once its advertisement brought wanb up", n)
	}

	// c. The server loses its bindings and delegates from another pool.
	spoofed, spoofedBefore := l.Spoofed(), spoofedBy(l)
	fromOld := l.CountFrom6(&l.B, old)
	changed := time.Now()
	srv.Restart(lab.PDPoolB2)
	restarted := time.Now()
	took := l.WaitScriptRun(changed, 4*lab.DHCP6Rebind, "taking "+old.String()+" back", func(r lab.ScriptRun) bool {
		return r.Env["new_ip6_prefix"] == old.String() && r.Env["new_max_life"] == "0"
	})
	oldAtTaken := fromOld() // within 10 ms of that run's end
	brought := l.WaitScriptRun(changed, 4*lab.DHCP6Rebind, "delegating a prefix of "+lab.PDPoolB2.String(), func(r lab.ScriptRun) bool {
		p, ok := r.NewPrefix()
		return ok && lab.PDPoolB2.Contains(p.Addr())
	})
	now, _ := brought.NewPrefix()
	at := brought.Start // dhclient hands the new prefix to dhclient-script
	if at.IsZero() {
		fail("the run of dhclient-script that brought %s has no recorded start", now)
	}
	var reply time.Time
	for _, r := range srv.Replies() {
		if r.Prefix == now && !r.At.Before(restarted) {
			reply = r.At
			break
		}
	}
	newRule, ok := kernel.WaitRule(changed, now, l.B.Table, true, 5*time.Second)
	if !ok {
		fail("no rule %s within 5s of dhclient's %s", fromRule(now, &l.B), brought.Reason())
	}
	oldRule, _ := kernel.WaitRule(changed, old, l.B.Table, false, 5*time.Second)
	newLAN, ok := kernel.WaitAddr(changed, "lan0", lanAddr(now).String(), true, 5*time.Second)
	if !ok {
		fail("lan0 has no %s within 5s of dhclient's %s", lanAddr(now), brought.Reason())
	}
	oldLAN, _ := kernel.WaitAddr(changed, "lan0", lanAddr(old).String(), false, 5*time.Second)
	both, ok := cap.WaitFor(changed, 5*time.Second, func(r lab.RA) bool {
		o, oldOK := r.Prefix(lan64(old))
		n, newOK := r.Prefix(lan64(now))
		return oldOK && newOK && o.Preferred == 0 && o.Valid > 0 && o.Valid <= ra.ValidLifetime && n.Preferred > 0 && r.RouterLifetime > 0
	})
	if !ok {
		var heard []string
		for _, r := range cap.Since(changed) {
			heard = append(heard, fmt.Sprintf("%s: old %s, new %s, router %s", r.At.Format("15:04:05.000"), lifetimes(r, lan64(old)), lifetimes(r, lan64(now)), r.RouterLifetime))
		}
		fail("no advertisement of %s deprecated (valid at most %s) beside %s preferred within 5s; heard:\n%s", lan64(old), ra.ValidLifetime, lan64(now), strings.Join(heard, "\n"))
	}
	delegation(t, both, lan64(old), "the advertisement of the old prefix beside the new")
	delegation(t, both, lan64(now), "the first advertisement of the new prefix")
	hostNewAt, hostNew := waitHostAddr(t, l, lan64(now), 5*time.Second, "after the new prefix")
	conn := answered(t, dialer, at, lan64(now), 10*time.Second, "after the new prefix")
	expired := l.WaitScriptRun(changed, 5*time.Second, "ending "+old.String(), func(r lab.ScriptRun) bool {
		return r.Reason() == "EXPIRE6" && r.Env["old_ip6_prefix"] == old.String()
	})

	t.Logf("dhcpd restarted with %s (%s after it was told to); dhclient's REBIND6 took %s back (run %s-%s), the server's Reply of %s came %s after the restart; dhclient began the run that brought it %s after the Reply",
		lab.PDPoolB2, msec(restarted.Sub(changed)), old, took.Start.Format("15:04:05.000"), took.At.Format("15:04:05.000"), now, msec(reply.Sub(restarted)), msec(at.Sub(reply)))
	t.Logf("from dhclient's %s of %s (the run began; its exit hooks, ifisp's first, were done %s after): rule %s %s, lan0 %s %s, advertisement of %s %s beside %s %s heard %s, the LAN host had %s %s, first new connection answered from it %s (started %s); "+
		"%s's rule went %s and lan0's %s %s (both after the take-back began, %s before the new prefix's run)",
		brought.Reason(), now, msec(brought.At.Sub(at)), fromRule(now, &l.B), msec(newRule.At.Sub(at)), lanAddr(now), msec(newLAN.At.Sub(at)),
		lan64(old), lifetimes(both, lan64(old)), lan64(now), lifetimes(both, lan64(now)), msec(both.At.Sub(at)),
		hostNew, msec(hostNewAt.Sub(at)), msec(conn.Done.Sub(at)), msec(conn.Start.Sub(at)),
		old, msec(oldRule.At.Sub(took.Start)), lanAddr(old), msec(oldLAN.At.Sub(took.Start)), msec(at.Sub(took.Start)))
	t.Logf("from the server's Reply of %s: rule %s, lan0 %s, advertisement %s, first new connection answered %s",
		now, msec(newRule.At.Sub(reply)), msec(newLAN.At.Sub(reply)), msec(both.At.Sub(reply)), msec(conn.Done.Sub(reply)))
	t.Logf("dhclient -6 at the prefix change:\n%s", scriptRuns(l, changed))
	var between []string
	for _, r := range cap.Since(took.Start) {
		if !r.At.After(both.At) {
			between = append(between, fmt.Sprintf("%s after the take-back began: %s %s, %s %s, router lifetime %s", msec(r.At.Sub(took.Start)), lan64(old), lifetimes(r, lan64(old)), lan64(now), lifetimes(r, lan64(now)), r.RouterLifetime))
		}
	}
	t.Logf("advertisements the LAN host heard from the take-back to the new prefix's:\n%s", strings.Join(between, "\n"))
	for what, d := range map[string]time.Duration{
		"the rule " + fromRule(now, &l.B):                                   newRule.At.Sub(at),
		"lan0's " + lanAddr(now).String():                                   newLAN.At.Sub(at),
		"the advertisement of the old /64 deprecated, the new preferred":    both.At.Sub(at),
		"the first new LAN connection answered from " + lan64(now).String(): conn.Done.Sub(at),
	} {
		if d > time.Second {
			t.Errorf("%s came %s after dhclient's %s of %s, want within 1s", what, msec(d), brought.Reason(), now)
		}
	}

	// dhclient's runs for this Reply are done (the EXPIRE6 of the old
	// prefix is its last): nothing of the old /56 may be left.
	if left := leftovers6(t, l, old); len(left) > 0 {
		t.Errorf("after dhclient's %s of %s and %s of %s, the router still names %s:\n%s", brought.Reason(), now, expired.Reason(), old, old, strings.Join(left, "\n"))
	}
	if rec, text := l.LinkRecord("wanb", "inet6"); rec == nil || !rec.Complete() || rec.Delegated != now || rec.LAN == nil || rec.LAN.Prefix != lan64(now) {
		t.Errorf("after the new prefix, links/wanb.inet6.json is not up with %s and lan0's %s:\n%s", now, lan64(now), text)
	}
	settled := settle(t, dialer, conn.Done, lan64(now), 25, 5*time.Second)
	if n := fromOld() - oldAtTaken; n != 0 {
		t.Errorf("%d packets from %s reached ISP B after dhclient's run that took it back (%d between the restart and then)", n, old, oldAtTaken)
	}
	for _, d := range dialer.Answered(brought.At, settled) {
		if !lan64(now).Contains(d.Src) {
			t.Errorf("a LAN connection started %s after the new prefix's run was answered from %s, want %s", msec(d.Start.Sub(brought.At)), d.Src, lan64(now))
		}
	}
	if n := l.Spoofed() - spoofed; n != 0 {
		t.Errorf("the ISPs dropped %d spoofed packets after the server restarted (by ISP and family: before %v, now %v)", n, spoofedBefore, spoofedBy(l))
	}
	if code, out := statusCode(l); code != 0 {
		t.Errorf("ifisp status after the new prefix: exit %d, want 0:\n%s", code, out)
	}
	wanaKept(t, l, wanaBefore, "with wanb's prefix")
	if err := kernel.Err(); err != nil {
		t.Errorf("reading the router's rules and routes: %v", err)
	}
	noSpoofing(t, l)
}

// delegation fails the test when the advertisement r promises p for
// longer than the lab's delegation gives it (RFC 9096 L-15).
func delegation(t *testing.T, r lab.RA, p netip.Prefix, what string) {
	t.Helper()
	o, ok := r.Prefix(p)
	if !ok || o.Valid > lab.DHCP6Valid || o.Preferred > lab.DHCP6Preferred || o.Preferred > o.Valid {
		t.Errorf("%s says %s %s; the server delegates for %s, preferred %s: want no longer, preferred no longer than valid",
			what, p, lifetimes(r, p), lab.DHCP6Valid, lab.DHCP6Preferred)
	}
}
