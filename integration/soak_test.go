package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ifisp/ifisp/internal/lab"
	"github.com/ifisp/ifisp/pkg/registry"
	"github.com/ifisp/ifisp/pkg/stanza"
	"github.com/ifisp/ifisp/pkg/watch"
)

// soakCycles is how many flap cycles TestFlapSoak runs: IFISP_SOAK_CYCLES
// (`make soak` sets 200), 10 without it, so that `make test` runs a short
// soak.
func soakCycles(t *testing.T) int {
	t.Helper()
	v := os.Getenv("IFISP_SOAK_CYCLES")
	if v == "" {
		return 10
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("IFISP_SOAK_CYCLES=%q: want a number of cycles, 1 or more", v)
	}
	return n
}

// soakLinks are the four links TestFlapSoak's monitor watches.
var soakLinks = []struct{ iface, family string }{
	{"wana", "inet"}, {"wana", "inet6"}, {"wanb", "inet"}, {"wanb", "inet6"},
}

// watchSettled waits until the monitor has adopted every link's current
// registration (the one the last ifup wrote) and judges all of them up,
// none withdrawn, and then returns the router's state. A state that the
// monitor changes meanwhile (a false alarm on a busy machine, withdrawn and
// restored) is taken again.
func watchSettled(t *testing.T, l *lab.Lab, w *lab.Watch) lab.State {
	t.Helper()
	settled := func() string {
		for _, k := range soakLinks {
			b, err := os.ReadFile(filepath.Join(l.RunDir, registry.Folder, k.iface+"."+k.family+".json"))
			if err != nil {
				return fmt.Sprintf("%s %s not registered: %v", k.iface, k.family, err)
			}
			var reg registry.Link
			if err := json.Unmarshal(b, &reg); err != nil {
				return fmt.Sprintf("%s %s: %v", k.iface, k.family, err)
			}
			s := w.Status().Link(k.iface, stanza.Family(k.family))
			switch {
			case s == nil:
				return fmt.Sprintf("%s %s not in the monitor's state", k.iface, k.family)
			case !s.Up.Equal(reg.Since):
				return fmt.Sprintf("%s %s: the monitor has the registration of %s, not %s", k.iface, k.family, s.Up, reg.Since)
			case s.State != watch.Up || s.Withdrawn:
				return fmt.Sprintf("%s %s: %+v", k.iface, k.family, *s)
			}
		}
		return ""
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		why := settled()
		if why == "" {
			s := l.State()
			if settled() == "" {
				return s
			}
			continue
		}
		if time.Now().After(deadline) {
			t.Fatalf("the monitor did not settle in 20s: %s\nlog:\n%s", why, w.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// procFigures returns a process's resident memory (kB) and open fds.
func procFigures(t *testing.T, pid int) (rssKB, fds int) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			rssKB, _ = strconv.Atoi(f[1])
		}
	}
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return rssKB, len(entries)
}

// conntrackList returns the router's conntrack entries, both families.
func conntrackList(l *lab.Lab) string {
	var b strings.Builder
	for _, family := range []string{"ipv4", "ipv6"} {
		out, _ := l.Exec(l.Router, "conntrack", "-L", "-f", family)
		b.WriteString(out)
	}
	return b.String()
}

// longLived returns the router's conntrack entries with more than 5
// minutes to live ("tcp 6 431999 ESTABLISHED src=...": the third field).
func longLived(l *lab.Lab) []string {
	var long []string
	for _, line := range strings.Split(conntrackList(l), "\n") {
		if f := strings.Fields(line); len(f) > 2 {
			if ttl, err := strconv.Atoi(f[2]); err == nil && ttl > 300 {
				long = append(long, line)
			}
		}
	}
	return long
}

// TestFlapSoak flaps both links, cycle after cycle (ifdown and ifup of each;
// every fifth cycle also a pulled cable or a dead upstream that ifisp-watch
// must route around), with the monitor running and the LAN's ICMP, UDP and
// TCP traffic going on, and requires that nothing grows: the final state
// equals the first, the monitor's memory and file descriptors stay bounded,
// and so does conntrack; no packet is ever spoofed.
func TestFlapSoak(t *testing.T) {
	cycles := soakCycles(t)
	l := lab.New(t)
	l.Install(bin)
	// Faster hysteresis than the defaults, so that a cut costs about a
	// second: 5 rounds of 100 ms either way.
	l.Interfaces(lab.Checked(lab.TwoISPs, "isp-check-down 5", "isp-check-up 5"))
	l.EchoServers()
	l.MustIfup(wans...)
	w := l.StartWatch(bin)
	first := watchSettled(t, l, w)
	pid := w.Status().PID
	if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); strings.TrimSpace(string(comm)) != "ifisp-watch" {
		t.Fatalf("pid %d of the monitor's state file is %q, not ifisp-watch", pid, comm)
	}
	rss0, fds0 := procFigures(t, pid)
	ct0 := conntrackCount(t, l)

	// The LAN's traffic, in flows of 20 s started again as they end:
	// bounded, and never more than three at a time.
	const flowFor = 20 * time.Second
	var flows []*lab.Flow
	var flowsStarted time.Time
	startFlows := func() {
		for _, f := range flows {
			f.Wait() // broken flows are expected here: the links flap
		}
		flows = []*lab.Flow{l.StartFlow("icmp", flowFor), l.StartFlow("udp", flowFor), l.StartFlow("tcp", flowFor)}
		flowsStarted = time.Now()
	}
	startFlows()

	warm := max(1, cycles/10)
	var rssWarm, fdsWarm, ctWarm, ctHalf, ctMax, cuts int
	start := time.Now()
	for cycle := range cycles {
		if time.Since(flowsStarted) > flowFor {
			startFlows()
		}
		for _, iface := range []string{"wanb", "wana"} {
			l.MustIfdown(iface)
			l.MustIfup(iface)
		}
		if cycle%5 == 4 {
			cuts++
			if cycle/5%2 == 0 {
				// ISP B's cable pulled: withdrawn at once, restored
				// once the cable is back and the probes answer.
				l.Carrier(&l.B, false)
				w.WaitFor("wanb", "inet", watch.Down, true, 10*time.Second)
				w.WaitFor("wanb", "inet6", watch.Down, true, 10*time.Second)
				l.Carrier(&l.B, true)
				w.WaitFor("wanb", "inet", watch.Up, false, 10*time.Second)
				w.WaitFor("wanb", "inet6", watch.Up, false, 10*time.Second)
			} else {
				// ISP A's upstream dead behind a modem that keeps carrier.
				l.Upstream(&l.A, 4, 1)
				l.Upstream(&l.A, 6, 1)
				w.WaitFor("wana", "inet", watch.Down, true, 10*time.Second)
				w.WaitFor("wana", "inet6", watch.Down, true, 10*time.Second)
				l.Upstream(&l.A, 4, 0)
				l.Upstream(&l.A, 6, 0)
				w.WaitFor("wana", "inet", watch.Up, false, 10*time.Second)
				w.WaitFor("wana", "inet6", watch.Up, false, 10*time.Second)
			}
		}
		ct := conntrackCount(t, l)
		ctMax = max(ctMax, ct)
		if cycle < (cycles+1)/2 {
			ctHalf = max(ctHalf, ct)
		}
		if cycle+1 == warm {
			rssWarm, fdsWarm = procFigures(t, pid)
			ctWarm = ct
		}
	}
	took := time.Since(start)
	last := watchSettled(t, l, w)
	rss1, fds1 := procFigures(t, pid)
	ct1 := conntrackCount(t, l)
	t.Logf("%d cycles (%d with a cut) in %v, %v a cycle", cycles, cuts, took.Round(time.Second), (took / time.Duration(cycles)).Round(time.Millisecond))
	t.Logf("ifisp-watch RSS %d kB at the start, %d kB after %d warm-up cycles, %d kB at the end", rss0, rssWarm, warm, rss1)
	t.Logf("ifisp-watch fds %d at the start, %d after warm-up, %d at the end", fds0, fdsWarm, fds1)
	t.Logf("conntrack entries %d at the start, %d after warm-up, %d at most in the first half, %d at most, %d at the end", ct0, ctWarm, ctHalf, ctMax, ct1)

	if d := lab.StateDiff(first, last); d != "" {
		t.Errorf("state after %d cycles differs from the state after the first up (-first +last):\n%s", cycles, d)
	}
	if limit := 2*rssWarm + 4096; rss1 > limit {
		t.Errorf("ifisp-watch RSS grew to %d kB, want at most %d (twice the %d kB after warm-up, plus 4 MB)", rss1, limit, rssWarm)
	}
	if limit := fdsWarm + 4; fds1 > limit {
		t.Errorf("ifisp-watch holds %d fds, want at most %d (%d after warm-up, plus 4)", fds1, limit, fdsWarm)
	}
	// Most entries expire within 2 minutes of their flow's last packet
	// (ICMP 30 s, UDP 30 or 120 s, a closed TCP connection 10 or 120 s):
	// the count follows the cycle rate (each ifup opens new probe
	// sockets), and must not outgrow what it was in the first half.
	if limit := 2*ctHalf + 100; ct1 > limit {
		t.Errorf("%d conntrack entries at the end, want at most %d (twice the %d at most in the first half, plus 100):\n%s",
			ct1, limit, ctHalf, conntrackList(l))
	}
	// An established TCP connection's entry lives 5 days: one left by
	// each flap is the leak that would grow for good. The LAN's TCP flow
	// has one connection at a time; one more may just have broken.
	if long := longLived(l); len(long) > 2 {
		t.Errorf("%d conntrack entries with more than 5 minutes to live, want at most 2 (the LAN's TCP flow):\n%s", len(long), strings.Join(long, "\n"))
	}
	noSpoofing(t, l)
	if err := w.Stop(); err != nil {
		t.Error(err)
	}
	// The last flows end with the lab.
}
