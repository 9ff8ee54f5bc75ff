package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ifisp/ifisp/pkg/lab"
	"github.com/ifisp/ifisp/pkg/watch"
)

// newWatchLab brings both ISPs up, each stanza probing the internet host
// (plus the extra options), and starts ifisp-watch.
func newWatchLab(t *testing.T, extra ...string) (*lab.Lab, *lab.Watch) {
	t.Helper()
	l := lab.New(t)
	l.Install(bin)
	l.Interfaces(lab.Checked(lab.TwoISPs, extra...))
	l.EchoServers()
	l.MustIfup("wana", "wanb")
	return l, l.StartWatch(bin)
}

// defaults returns the router's main-table defaults, both families.
func defaults(l *lab.Lab) string {
	out := l.Must(l.Router, "ip", "-4", "route", "show", "default") + l.Must(l.Router, "ip", "-6", "route", "show", "default")
	return strings.ReplaceAll(out, " \n", "\n") // older iproute2 ends lines with a space
}

// via returns which ISP the LAN's IPv4 packets leave by now: 50 pings in a
// second, counted at each ISP's edge. The monitor's own probes (10 a second
// per link) are counted there too, so the carrier is the ISP that saw at
// least the 50 and the other must have seen fewer than half.
func via(t *testing.T, l *lab.Lab, family int) string {
	t.Helper()
	dst := lab.Internet
	src := l.LAN
	if family == 6 { // the router's own traffic: the LAN has no global IPv6
		dst, src = lab.Internet6, l.Router
	}
	a, b := l.Seen(&l.A, family).Legit, l.Seen(&l.B, family).Legit
	got := l.Ping(src, dst, 50)
	da, db := l.Seen(&l.A, family).Legit-a, l.Seen(&l.B, family).Legit-b
	switch {
	case got < 45:
		return fmt.Sprintf("nowhere (%d of 50 answered)", got)
	case da >= 50 && db < 25:
		return "ispa"
	case db >= 50 && da < 25:
		return "ispb"
	}
	return fmt.Sprintf("ispa %d, ispb %d packets", da, db)
}

// noSpoofing fails the test if an ISP ever dropped a spoofed packet.
func noSpoofing(t *testing.T, l *lab.Lab) {
	t.Helper()
	if n := l.Spoofed(); n != 0 {
		t.Errorf("the ISPs dropped %d spoofed packets, want 0", n)
	}
}

const (
	bothDefaults = `default via 203.0.113.1 dev wanb onlink
default via 198.51.100.1 dev wana proto ifisp metric 1
default via 2001:db8:b::1 dev wanb metric 1 onlink pref medium
default via 2001:db8:a::1 dev wana proto ifisp metric 2 pref medium
`
	onlyA = `default via 198.51.100.1 dev wana proto ifisp metric 1
default via 2001:db8:b::1 dev wanb metric 1 onlink pref medium
default via 2001:db8:a::1 dev wana proto ifisp metric 2 pref medium
`
)

// TestWatchDeadUpstream kills ISP B's upstream behind a modem that keeps
// carrier: the monitor withdraws wanb's IPv4 default, the LAN's ping moves
// to ISP A, and moves back once B's upstream returns. No packet is ever
// spoofed and no flow is left stuck.
func TestWatchDeadUpstream(t *testing.T) {
	l, w := newWatchLab(t)
	assertState(t, "watched", defaults(l), bothDefaults)
	ping := l.StartPing(l.LAN, lab.Internet, 20*time.Millisecond, 500)
	time.Sleep(time.Second)

	died := time.Now()
	l.Upstream(&l.B, 4, 1)
	took := w.WaitFor("wanb", "inet", watch.Down, true, 5*time.Second)
	t.Logf("wanb inet withdrawn %s after its upstream died", took)
	assertState(t, "B's upstream dead", defaults(l), onlyA)
	time.Sleep(time.Second)
	if got := via(t, l, 4); got != "ispa" {
		t.Errorf("B dead: LAN traffic leaves by %s, want ispa", got)
	}

	healed := time.Now()
	l.Upstream(&l.B, 4, 0)
	took = w.WaitFor("wanb", "inet", watch.Up, false, 10*time.Second)
	t.Logf("wanb inet restored %s after its upstream returned", took)
	assertState(t, "B's upstream back", defaults(l), bothDefaults)
	time.Sleep(500 * time.Millisecond)
	ping.Stop()
	gap := ping.Gap(died.Add(-time.Second), healed)
	t.Logf("LAN ping reply gap: %s", gap)
	if gap > 3*time.Second {
		t.Errorf("LAN ping reply gap %s after B's upstream died, want the monitor's ~1s", gap)
	}
	if back := ping.Gap(healed, time.Now()); back > time.Second {
		t.Errorf("LAN ping reply gap %s when B came back, want none", back)
	}
	if got := via(t, l, 4); got != "ispb" {
		t.Errorf("B back: LAN traffic leaves by %s, want ispb", got)
	}
	noSpoofing(t, l)
	if !strings.Contains(w.Log(), "wanb inet: up -> down") || !strings.Contains(w.Log(), "wanb inet: down -> up") {
		t.Errorf("no transition lines in the log:\n%s", w.Log())
	}
	if err := w.Stop(); err != nil {
		t.Error(err)
	}
	assertState(t, "monitor stopped", defaults(l), bothDefaults)
}
