package integration

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ifisp/ifisp/internal/lab"
	"github.com/ifisp/ifisp/pkg/ra"
	"github.com/ifisp/ifisp/pkg/watch"
)

// raLab is the lab with IPv6 on the LAN: both ISPs' inet6 stanzas number
// lan0 from their delegated prefixes (isp-lan), ifisp-watch runs and
// advertises them, and the LAN host is a SLAAC host that has configured
// an address from each. It returns the lab, the monitor, and what the LAN
// host hears of advertisements.
func raLab(t testing.TB) (*lab.Lab, *lab.Watch, *lab.RACapture) {
	t.Helper()
	l := lab.New(t)
	l.Install(bin)
	l.Interfaces(lab.Checked(l.WithLAN6(lab.TwoISPs, "isp-rdnss 2001:db8:ffff::53")))
	w, cap := startSLAAC(t, l, []string{"wana", "wanb"}, l.A.LAN6(), l.B.LAN6())
	return l, w, cap
}

// startSLAAC makes the LAN host a SLAAC host, starts the whoami server,
// brings ifaces up, starts the monitor, and waits (10 s at most) until the
// host has an address from each of the prefixes.
func startSLAAC(t testing.TB, l *lab.Lab, ifaces []string, prefixes ...netip.Prefix) (*lab.Watch, *lab.RACapture) {
	t.Helper()
	l.SLAACHost()
	l.Whoami()
	l.MustIfup(ifaces...)
	cap := l.CaptureRAs()
	w := l.StartWatch(bin)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		addrs := l.HostAddrs6()
		missing := slices.ContainsFunc(prefixes, func(p netip.Prefix) bool { return !hostAddr(addrs, p).IsValid() })
		if !missing {
			return w, cap
		}
		if time.Now().After(deadline) {
			t.Fatalf("the LAN host has no SLAAC address from each of %v after 10s: %v\nadvertisements heard: %+v\nifisp-watch:\n%s",
				prefixes, addrs, cap.Since(time.Time{}), w.Log())
		}
	}
}

// hostAddr returns the LAN host's address in p, if it has one.
func hostAddr(addrs map[netip.Addr]bool, p netip.Prefix) netip.Addr {
	for a := range addrs {
		if p.Contains(a) {
			return a
		}
	}
	return netip.Addr{}
}

// lifetimes says what an advertisement announces of p: "-" when it does
// not announce it, else "valid/preferred" in seconds.
func lifetimes(r lab.RA, p netip.Prefix) string {
	o, ok := r.Prefix(p)
	if !ok {
		return "-"
	}
	return fmt.Sprintf("%d/%d", int(o.Valid.Seconds()), int(o.Preferred.Seconds()))
}

var (
	full       = fmt.Sprintf("%d/%d", int(ra.ValidLifetime.Seconds()), int(ra.PreferredLifetime.Seconds()))
	deprecated = fmt.Sprintf("%d/0", int(ra.ValidLifetime.Seconds()))
)

// waitRA waits (timeout at most) for the first advertisement after since
// that says of A's and B's prefixes (pa, pb) what wantA and wantB accept,
// and fails the test with every advertisement heard since when none does.
func waitRA(t *testing.T, w *lab.Watch, cap *lab.RACapture, since time.Time, timeout time.Duration, what string, pa, pb netip.Prefix, wantA, wantB func(string) bool) lab.RA {
	t.Helper()
	r, ok := cap.WaitFor(since, timeout, func(r lab.RA) bool {
		return wantA(lifetimes(r, pa)) && wantB(lifetimes(r, pb))
	})
	if !ok {
		var heard []string
		for _, r := range cap.Since(since) {
			heard = append(heard, fmt.Sprintf("%s from %s: A %s, B %s, router %s", r.At.Format("15:04:05.000"), r.Src, lifetimes(r, pa), lifetimes(r, pb), r.RouterLifetime))
		}
		t.Fatalf("%s: no such advertisement within %s; heard:\n%s\nifisp-watch:\n%s", what, timeout, strings.Join(heard, "\n"), w.Log())
	}
	return r
}

func is(s string) func(string) bool { return func(got string) bool { return got == s } }

// deprecatedNow accepts a deprecated prefix whose valid lifetime may have
// run down since it left the registry.
func deprecatedNow(got string) bool { return strings.HasSuffix(got, "/0") && got != "-" }

// TestRAFailover is the IPv6 story end to end: a SLAAC host on
// the LAN numbered from both ISPs, B preferred. B's upstream dies (carrier
// up): B's prefix is deprecated in the very next advertisement, and new
// connections leave by A with A's prefix; B heals: full lifetimes, B again.
// ifdown of B: the same, its prefix deprecated with the valid lifetime
// running down. Both upstreams dead: nothing deprecated. No packet leaves
// by an ISP with the other's prefix (the ISPs' spoof filters count them).
func TestRAFailover(t *testing.T) {
	l, w, cap := raLab(t)
	pa, pb := l.A.LAN6(), l.B.LAN6()

	// What ifup made of isp-lan: the router's ::1 of each /64 on lan0, and
	// the throw route that keeps the LAN's /64 out of the ISP table.
	lan0 := l.Must(l.Router, "ip", "-6", "addr", "show", "dev", "lan0", "scope", "global")
	for _, isp := range l.ISPs() {
		want := netip.PrefixFrom(isp.LAN6().Addr().Next(), 64).String()
		if !strings.Contains(lan0, "inet6 "+want+" ") {
			t.Errorf("lan0 lacks %s:\n%s", want, lan0)
		}
		table := l.Must(l.Router, "ip", "-6", "route", "show", "table", isp.Name)
		if !strings.Contains(table, "throw "+isp.LAN6().String()+" dev lo proto ifisp") {
			t.Errorf("table %s lacks the throw route of %s:\n%s", isp.Name, isp.LAN6(), table)
		}
	}
	// Both announced with full lifetimes, B's (the preferred ISP's) last,
	// the resolver with them, the router a default router.
	r := waitRA(t, w, cap, time.Time{}, 5*time.Second, "both ISPs up", pa, pb, is(full), is(full))
	if r.Prefixes[len(r.Prefixes)-1].Prefix != pb || r.RouterLifetime != ra.RouterLifetime {
		t.Errorf("first advertisement: prefixes %+v, router lifetime %s; want B's last, %s", r.Prefixes, r.RouterLifetime, ra.RouterLifetime)
	}
	if len(r.RDNSS) != 1 || r.RDNSS[0].Lifetime != ra.RDNSSLifetime || len(r.RDNSS[0].Servers) != 1 || r.RDNSS[0].Servers[0] != netip.MustParseAddr("2001:db8:ffff::53") {
		t.Errorf("first advertisement's RDNSS: %+v, want 2001:db8:ffff::53 for %s", r.RDNSS, ra.RDNSSLifetime)
	}

	d := l.StartDialer(4000) // 80 s of new connections at most
	defer d.Stop()
	start := time.Now()
	answered(t, d, start, pb, 5*time.Second, "both up")

	// B's upstream dies behind a modem that keeps carrier.
	l.Upstream(&l.B, 6, 0)
	cut := time.Now()
	l.Upstream(&l.B, 6, 1)
	w.WaitFor("wanb", "inet6", watch.Down, true, 10*time.Second)
	waitRA(t, w, cap, cut, 3*time.Second, "B's upstream cut", pa, pb, is(full), is(deprecated))
	viaA := answered(t, d, cut, pa, 5*time.Second, "B's upstream cut").Done
	t.Logf("B's upstream cut: first new connection via A answered %s after the cut", viaA.Sub(cut).Round(time.Millisecond))
	if addrs := l.HostAddrs6(); !addrs[hostAddr(addrs, pb)] || addrs[hostAddr(addrs, pa)] {
		t.Errorf("after the cut the LAN host's addresses are (address: deprecated) %v, want B's deprecated and A's not", addrs)
	}

	healed := time.Now()
	l.Upstream(&l.B, 6, 0)
	w.WaitFor("wanb", "inet6", watch.Up, false, 10*time.Second)
	back := waitRA(t, w, cap, healed, 3*time.Second, "B healed", pa, pb, is(full), is(full))
	answered(t, d, back.At, pb, 5*time.Second, "B healed")

	// ifdown of B: its stanzas leave the registry, its prefix is announced
	// deprecated at once, and A carries the new connections.
	down := time.Now()
	l.MustIfdown("wanb")
	waitRA(t, w, cap, down, 3*time.Second, "ifdown wanb", pa, pb, is(full), deprecatedNow)
	answered(t, d, down, pa, 5*time.Second, "ifdown wanb")

	up := time.Now()
	l.MustIfup("wanb")
	back = waitRA(t, w, cap, up, 3*time.Second, "ifup wanb", pa, pb, is(full), is(full))
	answered(t, d, back.At, pb, 5*time.Second, "ifup wanb")

	// Both upstreams dead: the last resort deprecates neither.
	l.Upstream(&l.A, 6, 0)
	l.Upstream(&l.A, 6, 1)
	l.Upstream(&l.B, 6, 1)
	w.WaitFor("wana", "inet6", watch.Down, false, 10*time.Second)
	w.WaitFor("wanb", "inet6", watch.Down, false, 10*time.Second)
	bothDown := time.Now()
	// The last transition's advertisement is repeated a second later.
	waitRA(t, w, cap, bothDown, 3*time.Second, "both upstreams dead", pa, pb, is(full), is(full))
	if addrs := l.HostAddrs6(); addrs[hostAddr(addrs, pa)] || addrs[hostAddr(addrs, pb)] {
		t.Errorf("with both upstreams dead the LAN host's addresses are (address: deprecated) %v, want neither deprecated", addrs)
	}
	noSpoofing(t, l)
}

// TestRAQuietBesideAnotherRouter: once another router on the LAN announces
// one of ifisp's prefixes, ifisp-watch sends no advertisement there, not
// even for a failover: two senders of one prefix would contradict each
// other's lifetimes.
func TestRAQuietBesideAnotherRouter(t *testing.T) {
	l, w, cap := raLab(t)
	router := cap.Since(time.Time{})[0].Src
	l.AnnounceFromHost(l.B.LAN6())
	// The foreign advertisement reaches the router in well under this.
	time.Sleep(200 * time.Millisecond)
	quiet := time.Now()
	l.Upstream(&l.B, 6, 1)
	w.WaitFor("wanb", "inet6", watch.Down, true, 10*time.Second)
	time.Sleep(2500 * time.Millisecond) // past the change's two repeats
	for _, r := range cap.Since(quiet) {
		if r.Src == router {
			t.Errorf("ifisp-watch advertised at %s, after another router announced %s: A %s, B %s", r.At.Format("15:04:05.000"), l.B.LAN6(), lifetimes(r, l.A.LAN6()), lifetimes(r, l.B.LAN6()))
		}
	}
}

// TestRASolicited: a host that comes onto the LAN solicits, and ifisp-watch
// answers it by unicast (RFC 7772) with what it announces, long before its
// next periodic advertisement (200 to 600 s away).
func TestRASolicited(t *testing.T) {
	l, w, cap := raLab(t)
	pa, pb := l.A.LAN6(), l.B.LAN6()
	// Past the first advertisement and its two repeats.
	waitRA(t, w, cap, time.Time{}, 5*time.Second, "the first advertisements", pa, pb, is(full), is(full))
	time.Sleep(2500 * time.Millisecond)
	// Down and up again: the host loses its IPv6 addresses and solicits
	// (net.ipv6.conf.eth0.router_solicitation_delay, a second, after it
	// comes up).
	up := time.Now()
	l.Must(l.LAN, "ip", "link", "set", "eth0", "down")
	l.Must(l.LAN, "ip", "link", "set", "eth0", "up")
	var ll netip.Addr
	for _, line := range strings.Split(l.Must(l.LAN, "ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "link"), "\n") {
		if f := strings.Fields(line); len(f) >= 4 && f[2] == "inet6" {
			ll = netip.MustParsePrefix(f[3]).Addr()
		}
	}
	if !ll.IsLinkLocalUnicast() {
		t.Fatalf("the LAN host has no link-local address after coming up")
	}
	r, ok := cap.WaitFor(up, 5*time.Second, func(r lab.RA) bool { return r.Dst == ll })
	if !ok {
		t.Fatalf("no advertisement to the host's %s within 5s of its coming up; heard since: %+v\nifisp-watch:\n%s", ll, cap.Since(up), w.Log())
	}
	if lifetimes(r, pa) != full || lifetimes(r, pb) != full || r.RouterLifetime != ra.RouterLifetime {
		t.Errorf("the answer to the solicitation: A %s, B %s, router %s; want %s, %s, %s", lifetimes(r, pa), lifetimes(r, pb), r.RouterLifetime, full, full, ra.RouterLifetime)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		addrs := l.HostAddrs6()
		if hostAddr(addrs, pa).IsValid() && hostAddr(addrs, pb).IsValid() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the LAN host did not number itself again from the answer: %v", addrs)
		}
	}
}

// TestLANAddressTheirs: ifdown takes away the LAN address ifup added, and
// leaves one that was there before ifisp (the LAN stanza's own).
func TestLANAddressTheirs(t *testing.T) {
	l := lab.New(t)
	l.Install(bin)
	l.RecordHookEnv()
	l.Interfaces(l.WithLAN6(lab.TwoISPs))
	addrA := netip.PrefixFrom(l.A.LAN6().Addr().Next(), 64).String()
	addrB := netip.PrefixFrom(l.B.LAN6().Addr().Next(), 64).String()
	l.Must(l.Router, "ip", "-6", "addr", "add", addrB, "dev", "lan0")
	l.MustIfup("wana", "wanb")
	lan0 := l.Must(l.Router, "ip", "-6", "addr", "show", "dev", "lan0")
	for _, a := range []string{addrA, addrB} {
		if !strings.Contains(lan0, "inet6 "+a+" ") {
			t.Fatalf("after ifup, lan0 lacks %s:\n%s", a, lan0)
		}
	}
	// The up hook again, as ifupdown ran it: a re-run takes neither
	// ifisp's address for theirs nor theirs for ifisp's.
	for _, iface := range []string{"wana", "wanb"} {
		if out, err := l.RunHook(binary("ifisp-route"), l.HookEnv(iface, "inet6", "post-up")); err != nil {
			t.Fatal(err, out)
		}
	}
	l.MustIfdown("wana", "wanb")
	lan0 = l.Must(l.Router, "ip", "-6", "addr", "show", "dev", "lan0")
	if strings.Contains(lan0, "inet6 "+addrA+" ") {
		t.Errorf("after ifdown, lan0 keeps ifisp's %s:\n%s", addrA, lan0)
	}
	if !strings.Contains(lan0, "inet6 "+addrB+" ") {
		t.Errorf("after ifdown, lan0 lost %s, which was there before ifup:\n%s", addrB, lan0)
	}
}
