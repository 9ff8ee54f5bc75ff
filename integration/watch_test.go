package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ifisp/ifisp/internal/lab"
	"github.com/ifisp/ifisp/pkg/stanza"
	"github.com/ifisp/ifisp/pkg/watch"
)

// newWatchLab brings both ISPs up, each stanza probing the internet host
// (plus the extra options), and starts ifisp-watch with its defaults.
func newWatchLab(t testing.TB, extra ...string) (*lab.Lab, *lab.Watch) {
	t.Helper()
	return watchLab(t, nil, extra...)
}

// counting are ifisp-watch's arguments for a test that waits for its probe
// rounds (lab.Watch.WaitRounds): watch.json's probe figures rewritten each
// round (100 ms, the default isp-check-interval), not every 5 s.
var counting = []string{"--metrics-interval", "100ms"}

// newCountingWatchLab is newWatchLab with the monitor started with
// counting.
func newCountingWatchLab(t *testing.T, extra ...string) (*lab.Lab, *lab.Watch) {
	t.Helper()
	return watchLab(t, counting, extra...)
}

func watchLab(t testing.TB, args []string, extra ...string) (*lab.Lab, *lab.Watch) {
	t.Helper()
	l := lab.New(t)
	l.Install(bin)
	l.Interfaces(lab.Checked(lab.TwoISPs, extra...))
	l.EchoServers()
	l.MustIfup("wana", "wanb")
	return l, l.StartWatch(bin, args...)
}

// defaults returns the router's main-table defaults, both families.
func defaults(l *lab.Lab) string {
	return l.Must(l.Router, "ip", "-4", "route", "show", "default") + l.Must(l.Router, "ip", "-6", "route", "show", "default")
}

// via returns which ISP the LAN's IPv4 packets (family 4), or the
// router's own IPv6 ones (6: the LAN has no global IPv6), leave by now. It
// pings the internet host until 10 requests in a row are answered (5 s at
// most) and counts those requests at each ISP's edge, apart from other
// traffic (the monitor's probes): each must have passed the carrier's edge,
// and not one the other's.
func via(t *testing.T, l *lab.Lab, family int) string {
	t.Helper()
	const run, within = 10, 5 * time.Second
	dst := lab.Internet
	src := l.LAN
	if family == 6 {
		dst, src = lab.Internet6, l.Router
	}
	a, b := l.Seen(&l.A, family).Tracer, l.Seen(&l.B, family).Tracer
	reqs, ok := l.PingRun(src, dst, run, within)
	da, db := l.Seen(&l.A, family).Tracer-a, l.Seen(&l.B, family).Tracer-b
	_, answered := reqs.Count(time.Time{}, time.Now().Add(time.Hour))
	switch {
	case !ok:
		return fmt.Sprintf("nowhere (%d of %d requests answered, never %d in a row in %s)", answered, len(reqs), run, within)
	case da >= answered && db == 0:
		return "ispa"
	case db >= answered && da == 0:
		return "ispb"
	}
	return fmt.Sprintf("ispa %d, ispb %d of %d requests answered", da, db, answered)
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
	ping := l.StartPing(l.LAN, lab.Internet, 20*time.Millisecond, 3000) // a minute at most
	if start := time.Now(); !waitRecovery(start, start.Add(5*time.Second), ping) {
		t.Fatalf("the LAN ping does not work: %s", describe(ping.Requests(), start, "it began"))
	}

	l.Upstream(&l.B, 4, 1)
	died := time.Now() // B's upstream is dead from here on at the latest
	took := w.WaitFor("wanb", "inet", watch.Down, true, 5*time.Second)
	withdrawn := time.Now()
	t.Logf("wanb inet withdrawn %s after its upstream died", took)
	assertState(t, "B's upstream dead", defaults(l), onlyA)
	// After the monitor's second of silence, the LAN ping works again, by
	// way of A, within a second of the withdrawal.
	pingRecovered(t, "the LAN ping, B's upstream dead", ping, died, withdrawn.Add(time.Second), 3*time.Second)
	if got := via(t, l, 4); got != "ispa" {
		t.Errorf("B dead: LAN traffic leaves by %s, want ispa", got)
	}

	healed := time.Now()
	l.Upstream(&l.B, 4, 0)
	took = w.WaitFor("wanb", "inet", watch.Up, false, 10*time.Second)
	restored := time.Now()
	t.Logf("wanb inet restored %s after its upstream returned", took)
	assertState(t, "B's upstream back", defaults(l), bothDefaults)
	pingRecovered(t, "the LAN ping, B's upstream back", ping, restored, restored.Add(time.Second), time.Second)
	time.Sleep(steady)
	ping.Stop()
	end := time.Now()
	rs := ping.Requests()
	t.Logf("LAN ping: the longest reply gap %s around the death, %s around the return",
		rs.Gap(died, withdrawn.Add(time.Second)).Round(time.Millisecond), rs.Gap(healed, end.Add(-grace)).Round(time.Millisecond))
	// The move back to B costs at most the requests between the restore
	// and the reconcile after it.
	if sent, answered := rs.Count(healed, end.Add(-grace)); sent-answered > recoverRun {
		t.Errorf("when B came back %d of the LAN ping's %d requests went unanswered, want at most %d: %s",
			sent-answered, sent, recoverRun, describe(rs, healed, "B's return"))
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

// pingRecovered checks that the ping works again after an event: recoverRun
// requests answered in a row, the first sent since from, no later than by
// nor later than limit after from. It waits for that as long as it takes
// to see.
func pingRecovered(t *testing.T, what string, p *lab.Pinger, from, by time.Time, limit time.Duration) {
	t.Helper()
	if d := from.Add(limit); d.Before(by) {
		by = d
	}
	waitRecovery(from, by.Add(recoverRun*20*time.Millisecond+grace), p)
	if at, ok := p.Requests().Recovery(from, recoverRun); !ok || at.After(by) {
		t.Errorf("%s: not working again %s after the event: %s", what, by.Sub(from).Round(time.Millisecond), describe(p.Requests(), from, "the event"))
	}
}

// TestWatchCarrier pulls ISP B's cable (carrier lost, no ifdown): the
// monitor withdraws wanb's defaults at once, long before its probes, made
// slow here on purpose, could have; the cable back, it restores them.
func TestWatchCarrier(t *testing.T) {
	l, w := newWatchLab(t, "isp-check-down 50") // probes alone: 5 s
	l.Carrier(&l.B, false)
	took := w.WaitFor("wanb", "inet", watch.Down, true, 2*time.Second)
	w.WaitFor("wanb", "inet6", watch.Down, true, 2*time.Second)
	t.Logf("withdrawn %s after the carrier dropped", took)
	assertState(t, "carrier lost", defaults(l), onlyAOnly)
	if got := via(t, l, 4); got != "ispa" {
		t.Errorf("carrier lost: LAN traffic leaves by %s, want ispa", got)
	}

	l.Carrier(&l.B, true)
	w.WaitFor("wanb", "inet", watch.Up, false, 10*time.Second)
	w.WaitFor("wanb", "inet6", watch.Up, false, 10*time.Second)
	assertState(t, "carrier back", defaults(l), bothDefaults)
	if got := via(t, l, 4); got != "ispb" {
		t.Errorf("carrier back: LAN traffic leaves by %s, want ispb", got)
	}
	noSpoofing(t, l)
}

// onlyAOnly is both families withdrawn from wanb.
const onlyAOnly = `default via 198.51.100.1 dev wana proto ifisp metric 1
default via 2001:db8:a::1 dev wana proto ifisp metric 2 pref medium
`

// TestWatchNoFalseAlarms: ISP A loses 10 % of its packets each way, both
// families, for a minute (600 of its probe rounds), and must never be
// withdrawn; meanwhile ISP B's upstream flaps five times, dead for 30 of
// its rounds (three times the 10 unanswered ones that withdraw it), then
// healthy for 10 answered rounds (a third of the 30 a restore needs), and
// the hysteresis allows exactly one transition then, and one more once it
// stays up. The periods are counted in the rounds the monitor judged after
// each loss rule was surely in or out, from watch.json, so neither a slow
// iptables nor a slow monitor can eat into the margins, and a monitor that
// never ran cannot pass.
func TestWatchNoFalseAlarms(t *testing.T) {
	const wanb = "wanb inet"
	l, w := newCountingWatchLab(t)
	l.Upstream(&l.A, 4, 0.1)
	l.Upstream(&l.A, 6, 0.1)
	lossy := w.Fresh(time.Second) // A's minute counts from here
	var healthy *watch.Status     // as B's last dead period ended
	var longest uint64            // of B's healthy periods, in answered rounds
	for range 5 {
		l.Upstream(&l.B, 4, 1)
		dead := w.Fresh(time.Second)
		if healthy != nil {
			longest = max(longest, answeredSince(healthy, dead, wanb))
		}
		healthy = w.WaitRounds(dead, 30, 10*time.Second, wanb)
		l.Upstream(&l.B, 4, 0)
		// Counted from before the heal: B's dead rounds add nothing.
		w.WaitAnswered(healthy, 10, 10*time.Second, wanb)
	}
	flapped := w.Fresh(time.Second)
	longest = max(longest, answeredSince(healthy, flapped, wanb))
	t.Logf("B was healthy for %d answered rounds at most at a time (a restore needs 30)", longest)
	if longest >= 30 {
		t.Fatalf("B was healthy for %d rounds in a row, long enough to be restored: the flaps were too slow to test the hysteresis", longest)
	}
	if got := w.Notified(flapped, 5*time.Second); len(got) != 1 || got[0] != "wanb inet up down withdrawn=true table=101" {
		t.Errorf("transitions while B flapped: %q, want only wanb inet up -> down, withdrawn", got)
	}
	w.WaitFor("wanb", "inet", watch.Up, false, 10*time.Second)
	minute := w.WaitRounds(lossy, 600, 90*time.Second, "wana inet", "wana inet6")
	l.Upstream(&l.A, 4, 0)
	l.Upstream(&l.A, 6, 0)
	for _, family := range []string{"inet", "inet6"} {
		s := minute.Link("wana", stanza.Family(family))
		t.Logf("wana %s: %d of %d rounds answered since the loss began", family, answeredSince(lossy, minute, "wana "+family), s.Probes.Rounds-lossy.Link("wana", stanza.Family(family)).Probes.Rounds)
	}
	if got := w.Notified(minute, 5*time.Second); len(got) != 2 || got[1] != "wanb inet down up withdrawn=false table=101" {
		t.Errorf("transitions after a minute of 10%% loss on A: %q, want only B's two", got)
	}
	assertState(t, "after the minute", defaults(l), bothDefaults)
	noSpoofing(t, l)
}

// answeredSince returns how many more rounds of link ("IFACE FAMILY") were
// answered in the state file now than in since.
func answeredSince(since, now *watch.Status, link string) uint64 {
	iface, family, _ := strings.Cut(link, " ")
	return now.Link(iface, stanza.Family(family)).Probes.Answered - since.Link(iface, stanza.Family(family)).Probes.Answered
}

// TestWatchLastResort: A dies, then B too, then A comes back. With every
// IPv4 link dead none is withdrawn; at each step the right link carries
// the LAN's traffic.
func TestWatchLastResort(t *testing.T) {
	l, w := newWatchLab(t)
	l.Upstream(&l.A, 4, 1)
	w.WaitFor("wana", "inet", watch.Down, true, 5*time.Second)
	if got := via(t, l, 4); got != "ispb" {
		t.Errorf("A dead: LAN traffic leaves by %s, want ispb", got)
	}

	l.Upstream(&l.B, 4, 1)
	w.WaitFor("wanb", "inet", watch.Down, false, 5*time.Second)
	w.WaitFor("wana", "inet", watch.Down, false, time.Second)
	assertState(t, "both dead", defaults(l), bothDefaults)

	l.Upstream(&l.A, 4, 0)
	w.WaitFor("wana", "inet", watch.Up, false, 10*time.Second)
	w.WaitFor("wanb", "inet", watch.Down, true, time.Second)
	assertState(t, "A back, B dead", defaults(l), onlyA)
	if got := via(t, l, 4); got != "ispa" {
		t.Errorf("A back, B dead: LAN traffic leaves by %s, want ispa", got)
	}

	l.Upstream(&l.B, 4, 0)
	w.WaitFor("wanb", "inet", watch.Up, false, 10*time.Second)
	assertState(t, "both back", defaults(l), bothDefaults)
	if got := via(t, l, 4); got != "ispb" {
		t.Errorf("both back: LAN traffic leaves by %s, want ispb", got)
	}
	noSpoofing(t, l)
}

// TestWatchIPv6: ISP B's IPv6 upstream dies, its IPv4 does not: only
// wanb's IPv6 default is withdrawn and the router's IPv6 traffic moves to
// ISP A, then back.
func TestWatchIPv6(t *testing.T) {
	l, w := newWatchLab(t)
	if got := via(t, l, 6); got != "ispb" {
		t.Errorf("both up: IPv6 leaves by %s, want ispb", got)
	}
	l.Upstream(&l.B, 6, 1)
	w.WaitFor("wanb", "inet6", watch.Down, true, 5*time.Second)
	assertState(t, "B's IPv6 dead", defaults(l), `default via 203.0.113.1 dev wanb onlink
default via 198.51.100.1 dev wana proto ifisp metric 1
default via 2001:db8:a::1 dev wana proto ifisp metric 2 pref medium
`)
	if got := via(t, l, 6); got != "ispa" {
		t.Errorf("B's IPv6 dead: IPv6 leaves by %s, want ispa", got)
	}
	if s := w.Link("wanb", "inet"); s == nil || s.State != watch.Up {
		t.Errorf("wanb inet: %+v, want up: its IPv4 never died", s)
	}
	l.Upstream(&l.B, 6, 0)
	w.WaitFor("wanb", "inet6", watch.Up, false, 10*time.Second)
	assertState(t, "B's IPv6 back", defaults(l), bothDefaults)
	if got := via(t, l, 6); got != "ispb" {
		t.Errorf("B's IPv6 back: IPv6 leaves by %s, want ispb", got)
	}
	noSpoofing(t, l)
}

// TestWatchCrash kills the monitor with SIGKILL right after a failover and
// again while the link heals: each restart converges on the routes the
// links' health calls for, with no route twice. A SIGTERM while a link is
// withdrawn puts its defaults back and removes the state file.
func TestWatchCrash(t *testing.T) {
	l, w := newCountingWatchLab(t)
	l.Upstream(&l.B, 4, 1)
	w.WaitFor("wanb", "inet", watch.Down, true, 5*time.Second)
	w.Kill()
	w = l.StartWatch(bin, counting...)
	// Ten rounds of every link judged by the new monitor: time to get
	// anything wrong.
	w.WaitRounds(w.Fresh(time.Second), 10, 5*time.Second)
	assertState(t, "restarted, B still dead", defaults(l), onlyA)
	if s := w.Link("wanb", "inet"); s == nil || s.State != watch.Down || !s.Withdrawn {
		t.Errorf("restarted: wanb inet %+v, want down and withdrawn, as the killed monitor left it", s)
	}

	dead := w.Fresh(time.Second)
	l.Upstream(&l.B, 4, 0)
	// Half way to the restore: 15 of the 30 answered rounds it needs.
	w.WaitAnswered(dead, 15, 10*time.Second, "wanb inet")
	if s := w.Link("wanb", "inet"); s == nil || s.State != watch.Down || !s.Withdrawn {
		t.Fatalf("healing: wanb inet %+v before the kill, want still down and withdrawn", s)
	}
	w.Kill()
	w = l.StartWatch(bin, counting...)
	w.WaitFor("wanb", "inet", watch.Up, false, 10*time.Second)
	assertState(t, "restarted, B healed", defaults(l), bothDefaults)

	l.Upstream(&l.B, 4, 1)
	w.WaitFor("wanb", "inet", watch.Down, true, 5*time.Second)
	if err := w.Stop(); err != nil {
		t.Error(err)
	}
	assertState(t, "stopped with B withdrawn", defaults(l), bothDefaults)
	if w.Status() != nil {
		t.Error("the stopped monitor left its state file")
	}
	noSpoofing(t, l)
}

// TestWatchIfupdown runs ifdown and ifup by hand while the monitor runs:
// it never puts back what ifdown removed, it watches a link brought up
// again afresh, and a dead link brought up again is withdrawn again.
func TestWatchIfupdown(t *testing.T) {
	l, w := newCountingWatchLab(t)
	l.MustIfdown("wanb")
	w.WaitGone("wanb", "inet", 5*time.Second)
	w.WaitGone("wanb", "inet6", 5*time.Second)
	// Ten rounds of each link it still watches, judged after it forgot
	// wanb: time for the monitor to put back what it should not.
	w.WaitRounds(w.Fresh(time.Second), 10, 5*time.Second)
	assertState(t, "wanb down by hand", defaults(l), `default via 198.51.100.1 dev wana proto ifisp metric 1
default via 2001:db8:a::1 dev wana proto ifisp metric 2 pref medium
`)
	l.MustIfup("wanb")
	w.WaitFor("wanb", "inet", watch.Up, false, 2*time.Second)
	assertState(t, "wanb up by hand", defaults(l), bothDefaults)

	l.Upstream(&l.A, 4, 1)
	w.WaitFor("wana", "inet", watch.Down, true, 5*time.Second)
	l.MustIfdown("wana")
	l.MustIfup("wana") // still dead: the monitor must find out again
	w.WaitFor("wana", "inet", watch.Down, true, 5*time.Second)
	assertState(t, "dead wana up by hand", defaults(l), `default via 203.0.113.1 dev wanb onlink
default via 2001:db8:b::1 dev wanb metric 1 onlink pref medium
default via 2001:db8:a::1 dev wana proto ifisp metric 2 pref medium
`)
	l.Upstream(&l.A, 4, 0)
	w.WaitFor("wana", "inet", watch.Up, false, 10*time.Second)
	assertState(t, "all healed", defaults(l), bothDefaults)
	noSpoofing(t, l)
}

// TestWatchOthersDumps: another root process in the router's namespace
// that subscribes to address events with a dump of the addresses there
// are (what `ip monitor` tools do: SubscribeWithDump) makes the kernel
// multicast its request to every listener, ifisp-watch's included. The
// monitor skips it and goes on probing.
func TestWatchOthersDumps(t *testing.T) {
	l, w := newCountingWatchLab(t)
	from := w.Fresh(5 * time.Second)
	l.SubscribeWithDump()
	l.SubscribeWithDump()
	// Rounds counted after the dumps: the monitor is still there.
	w.WaitRounds(from, 10, 10*time.Second)
}
