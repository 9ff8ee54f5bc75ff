package integration

import (
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ifisp/ifisp/internal/lab"
	"github.com/ifisp/ifisp/pkg/watch"
)

// wanAddrs returns wanb's global IPv6 addresses: those usable as a new
// connection's source, and all, each with its prefix length.
func wanAddrs(t *testing.T, l *lab.Lab) (usable []netip.Addr, all map[netip.Addr]string) {
	t.Helper()
	all = map[netip.Addr]string{}
	re := regexp.MustCompile(`inet6 (\S+) scope global(.*)`)
	for _, m := range re.FindAllStringSubmatch(l.Must(l.Router, "ip", "-6", "-o", "addr", "show", "dev", "wanb"), -1) {
		p := netip.MustParsePrefix(m[1])
		all[p.Addr()] = m[1]
		if !strings.Contains(m[2], "deprecated") && !strings.Contains(m[2], "tentative") {
			usable = append(usable, p.Addr())
		}
	}
	return usable, all
}

// TestSLAACFollow gives wanb (an `inet6 dhcp` stanza with its default by
// router advertisement) a SLAAC address beside its DHCPv6 one, then takes
// its own address (the record's) away as a renumbering ISP would, first
// by deprecating it, then by deleting the one it moved to. No client runs
// a hook for SLAAC, so ifisp-watch must move the link's plan: within a
// second the `from` rule of the new address and the record's address, the
// old address's rule gone, the link never down, and the monitor's probes,
// now from the new address, answered.
func TestSLAACFollow(t *testing.T) {
	l := lab.New(t)
	l.Install(bin)
	l.InstallDHCP6Hook(bin)
	srv := l.StartDHCPv6(&l.B, lab.PDPoolB1)
	l.Interfaces(lab.Checked(lab.PDTwoISPs))
	kernel := l.WatchNet()
	l.MustIfup("wana")
	w := l.StartWatch(bin, "--metrics-interval", "200ms")
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf(format+"\nkernel:\n%s\nifisp-watch:\n%s\ndhcpd:\n%s", append(args, kernel, w.Log(), srv.Log())...)
	}
	if out, err := l.Ifup("wanb"); err != nil {
		fail("ifup wanb: %v\n%s", err, out)
	}
	slaac := netip.PrefixFrom(netip.MustParseAddr(l.B.Gate6), 64).Masked()
	l.AdvertiseSLAAC(&l.B, 30*time.Minute, lab.PIO{Prefix: slaac, Valid: time.Hour, Preferred: time.Hour})
	w.WaitFor("wanb", "inet6", watch.Up, false, 10*time.Second)
	// Both addresses there and past duplicate address detection.
	var usable []netip.Addr
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if usable, _ = wanAddrs(t, l); len(usable) >= 2 {
			break
		}
		if time.Now().After(deadline) {
			fail("wanb has not two usable global addresses (DHCPv6's and SLAAC's) within 5s: %v", usable)
		}
	}
	transitions := w.Link("wanb", "inet6").Probes
	move := func(what string, do func(own netip.Addr, prefix string)) {
		t.Helper()
		rec, text := l.LinkRecord("wanb", "inet6")
		if rec == nil || !rec.Complete() {
			fail("links/wanb.inet6.json is not up:\n%s", text)
		}
		own := rec.Address
		_, all := wanAddrs(t, l)
		if all[own] == "" {
			fail("wanb's own address %s (the record's) is not on wanb: %v", own, all)
		}
		at := time.Now()
		do(own, all[own])
		var to netip.Addr
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			if r, _ := l.LinkRecord("wanb", "inet6"); r != nil && r.Address != own {
				to = r.Address
				break
			}
			if time.Now().After(deadline) {
				fail("%s %s: the record's address did not move within 5s", what, own)
			}
		}
		added, ok := kernel.WaitRule(at, netip.PrefixFrom(to, 128), l.B.Table, true, 5*time.Second)
		if !ok {
			fail("%s %s: no rule from %s within 5s", what, own, to)
		}
		removed, ok := kernel.WaitRule(at, netip.PrefixFrom(own, 128), l.B.Table, false, 5*time.Second)
		if !ok {
			fail("%s %s: its rule is still there 5s after", what, own)
		}
		t.Logf("%s %s: moved to %s; its rule %s after, the old one gone %s after", what, own, to, msec(added.At.Sub(at)), msec(removed.At.Sub(at)))
		for _, d := range []time.Duration{added.At.Sub(at), removed.At.Sub(at)} {
			if d > time.Second {
				t.Errorf("%s %s: the plan moved %s after, want within 1s", what, own, msec(d))
			}
		}
		// The probes go from the new address now, and are answered.
		w.WaitAnswered(w.Fresh(5*time.Second), 3, 10*time.Second, "wanb inet6")
		if s := w.Link("wanb", "inet6"); s.State != watch.Up || s.Withdrawn || s.Probes.Transitions != transitions.Transitions {
			t.Errorf("%s %s: the monitor took wanb inet6 for down (%+v; transitions before %d)", what, own, s, transitions.Transitions)
		}
	}
	move("deprecating", func(own netip.Addr, prefix string) {
		l.Must(l.Router, "ip", "-6", "addr", "change", prefix, "dev", "wanb", "valid_lft", "600", "preferred_lft", "0")
	})
	move("deleting", func(own netip.Addr, prefix string) {
		l.Must(l.Router, "ip", "-6", "addr", "del", prefix, "dev", "wanb")
	})
	if code, out := statusCode(l); code != 0 {
		t.Errorf("ifisp status after the moves: exit %d, want 0:\n%s", code, out)
	}
	if err := kernel.Err(); err != nil {
		t.Errorf("reading the router's rules and routes: %v", err)
	}
	noSpoofing(t, l)
}
