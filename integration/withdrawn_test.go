package integration

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/ifisp/ifisp/internal/lab"
	"github.com/ifisp/ifisp/pkg/watch"
)

// TestDHCPv6PDWithdrawn runs ISP B's delegated prefix while ifisp-watch
// has wanb's IPv6 default withdrawn (B's upstream dead, its router alive):
//
//   - ISP B's router advertises again: the kernel adds its default again,
//     and the monitor must withdraw it within a second;
//   - the server delegates another prefix: the re-run must move the `from`
//     rule and lan0's address to it, keep the default withdrawn (and the
//     record's, to restore), and the LAN must hear the new /64 (not
//     deprecated: no other ISP numbers lan0, the last resort);
//   - B's upstream heals: the default comes back, and new LAN connections
//     leave from the new prefix.
func TestDHCPv6PDWithdrawn(t *testing.T) {
	p := newPDLab(t)
	l, srv, kernel, cap, w, dialer, fail := p.Lab, p.srv, p.kernel, p.cap, p.w, p.dialer, p.fail
	wanbDefaults := func() string {
		return strings.TrimSpace(l.Must(l.Router, "ip", "-6", "route", "show", "default", "dev", "wanb"))
	}

	up := time.Now()
	if out, err := l.Ifup("wanb"); err != nil {
		fail("ifup wanb: %v\n%s", err, out)
	}
	bound := l.WaitScriptRun(up, 5*time.Second, "delegating a prefix", func(r lab.ScriptRun) bool {
		_, ok := r.NewPrefix()
		return ok
	})
	old, _ := bound.NewPrefix()
	sent := l.AdvertiseDefault(&l.B, 30*time.Minute)
	if _, ok := kernel.WaitRule(sent, old, l.B.Table, true, 5*time.Second); !ok {
		fail("no rule %s within 5s of ISP B's router advertisement", fromRule(old, &l.B))
	}
	w.WaitFor("wanb", "inet6", watch.Up, false, 10*time.Second)
	answered(t, dialer, sent, lan64(old), 10*time.Second, "with wanb up")

	// B's upstream dies: the monitor withdraws wanb's default.
	l.Upstream(&l.B, 6, 1)
	took := w.WaitFor("wanb", "inet6", watch.Down, true, 10*time.Second)
	if d := wanbDefaults(); d != "" {
		fail("wanb inet6 withdrawn, yet the main table has:\n%s", d)
	}
	rec, text := l.LinkRecord("wanb", "inet6")
	if rec == nil || !rec.Withdrawn || len(rec.Defaults) == 0 {
		fail("wanb inet6 withdrawn: links/wanb.inet6.json does not say so (\"withdrawn\": true, its defaults kept):\n%s", text)
	}
	t.Logf("wanb inet6 withdrawn %s after B's upstream died", msec(took))

	// ISP B's router, alive, advertises again: the kernel adds the default
	// back, and the monitor withdraws it again.
	again := l.AdvertiseDefault(&l.B, 30*time.Minute)
	isDefault := func(added bool) func(lab.RouteEvent) bool {
		return func(e lab.RouteEvent) bool {
			return e.Added == added && e.Dst == netip.MustParsePrefix("::/0") && e.Iface == "wanb" && e.Table == 254
		}
	}
	back, ok := kernel.FindRoute(again, isDefault(true))
	for deadline := time.Now().Add(5 * time.Second); !ok && time.Now().Before(deadline); back, ok = kernel.FindRoute(again, isDefault(true)) {
		time.Sleep(10 * time.Millisecond)
	}
	if !ok {
		fail("ISP B's second router advertisement added no default (the test's premise)")
	}
	var gone lab.RouteEvent
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if gone, ok = kernel.FindRoute(back.At, isDefault(false)); ok {
			break
		}
	}
	if !ok {
		fail("the default ISP B's advertisement put back while B is down was not withdrawn again within 5s; main table:\n%s", wanbDefaults())
	}
	t.Logf("B's advertisement put the default back %s after it was sent; withdrawn again %s after that", msec(back.At.Sub(again)), msec(gone.At.Sub(back.At)))
	if d := gone.At.Sub(back.At); d > time.Second {
		t.Errorf("the default that came back was withdrawn again %s after, want within 1s", msec(d))
	}

	// The server delegates another prefix while wanb is down.
	changed := time.Now()
	srv.Restart(lab.PDPoolB2)
	brought := l.WaitScriptRun(changed, 4*lab.DHCP6Rebind, "delegating a prefix of "+lab.PDPoolB2.String(), func(r lab.ScriptRun) bool {
		p, ok := r.NewPrefix()
		return ok && lab.PDPoolB2.Contains(p.Addr())
	})
	now, _ := brought.NewPrefix()
	if _, ok := kernel.WaitRule(changed, now, l.B.Table, true, 5*time.Second); !ok {
		fail("no rule %s within 5s of dhclient's %s while wanb is withdrawn", fromRule(now, &l.B), brought.Reason())
	}
	if _, ok := kernel.WaitAddr(changed, "lan0", lanAddr(now).String(), true, 5*time.Second); !ok {
		fail("lan0 has no %s within 5s of dhclient's %s while wanb is withdrawn", lanAddr(now), brought.Reason())
	}
	if d := wanbDefaults(); d != "" {
		t.Errorf("after the re-run for %s, wanb (down) has main-table defaults again:\n%s", now, d)
	}
	if rec, text := l.LinkRecord("wanb", "inet6"); rec == nil || !rec.Complete() || !rec.Withdrawn || len(rec.Defaults) == 0 || rec.Delegated != now {
		t.Errorf("after the re-run for %s, links/wanb.inet6.json is not up, withdrawn, with its defaults and the new prefix:\n%s", now, text)
	}
	if _, ok := cap.WaitFor(brought.Start, 5*time.Second, func(r lab.RA) bool {
		o, ok := r.Prefix(lan64(now))
		return ok && o.Valid > 0
	}); !ok {
		t.Errorf("the LAN heard no advertisement of %s within 5s of the re-run", lan64(now))
	}
	if s := w.Link("wanb", "inet6"); s == nil || s.State != watch.Down || !s.Withdrawn {
		t.Errorf("after the re-run, the monitor says wanb inet6 is %+v, want down and withdrawn", s)
	}

	// B heals: the default comes back, and the LAN leaves from the new
	// prefix.
	healed := time.Now()
	l.Upstream(&l.B, 6, 0)
	took = w.WaitFor("wanb", "inet6", watch.Up, false, 15*time.Second)
	if d := wanbDefaults(); !strings.Contains(d, "default via fe80:") {
		t.Errorf("wanb inet6 restored, yet its main-table default is not back:\n%q", d)
	}
	first := answered(t, dialer, healed, lan64(now), 10*time.Second, "after B healed")
	t.Logf("B healed: restored %s after, first new connection answered from %s %s after", msec(took), lan64(now), msec(first.Done.Sub(healed)))
	if rec, text := l.LinkRecord("wanb", "inet6"); rec == nil || rec.Withdrawn {
		t.Errorf("wanb inet6 restored: links/wanb.inet6.json still says withdrawn:\n%s", text)
	}
	if err := kernel.Err(); err != nil {
		t.Errorf("reading the router's rules and routes: %v", err)
	}
	noSpoofing(t, l)
}
