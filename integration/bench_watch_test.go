package integration

import (
	"flag"
	"fmt"
	"math"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/ifisp/ifisp/internal/lab"
	"github.com/ifisp/ifisp/pkg/stanza"
	"github.com/ifisp/ifisp/pkg/watch"
)

// The health monitor's benchmarks: how fast it reroutes around a dead
// upstream, how rarely random loss fools it, and what it costs to run.
// Each runs once per `make bench` and prints a table; the goals are
// reported ("goal met" or "MISSED"), not asserted.

// OpenWrt's mwan3track, with its defaults (a probe every 5 s, down after 5
// failures), declares a link dead about 5 × 5 s = 25 s after it died: the
// anchor the issue compares ifisp-watch's reroute against.
const (
	mwan3Interval = 5 * time.Second
	mwan3Down     = 5
	mwan3Detect   = mwan3Down * mwan3Interval
)

// BenchmarkReroute kills the preferred ISP's IPv4 upstream (its carrier
// stays up) ten times under a 50 pps LAN ping, with the monitor's default
// settings, and reports the ping's longest reply gap per trial (median and
// max; the goal is 1.5 s) and how long the withdrawal took to show in
// watch.json. Between trials B heals, is restored, and must carry the
// ping again: every trial starts from the same state.
func BenchmarkReroute(b *testing.B) {
	const (
		trials = 10
		every  = 20 * time.Millisecond // 50 pps
		// A trial takes about 5 s (1.1 s to reroute, 3.1 s to restore,
		// 1 s to see B carry the ping again); its waits are bounded by
		// 10 + 5 + 10 + 5.5 s. One ping spans every trial, bounded in
		// count by that, so one flow (one conntrack entry) is rerouted to
		// A and back ten times.
		trialBound = 35 * time.Second
	)
	for range b.N {
		l, w := newWatchLab(b)
		// Create ISP B's upstream chain now, so that each kill below is
		// one rule, not a chain set up first.
		l.Upstream(&l.B, 4, 0)
		p := l.StartPing(l.LAN, lab.Internet, every, int(trials*trialBound/every))
		mustCarryPing(b, l, p, "before the first trial")

		var gaps, withdrawn, restored []time.Duration
		for trial := range trials {
			// Timed from before the kill: the figures include the few
			// milliseconds iptables takes to put the DROP rule in.
			died := time.Now()
			l.Upstream(&l.B, 4, 1)
			w.WaitFor("wanb", "inet", watch.Down, true, 10*time.Second)
			withdrawn = append(withdrawn, time.Since(died))
			// The gap only counts once replies flow again (by A): wait for
			// a few, then take the longest gap since a second before the
			// kill.
			seen := time.Now()
			for deadline := seen.Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
				if _, got := p.Count(seen, time.Now()); got >= 5 {
					break
				}
				if time.Now().After(deadline) {
					b.Fatalf("trial %d: the LAN ping got no replies in the 5s after wanb inet was withdrawn", trial+1)
				}
			}
			gaps = append(gaps, p.Gap(died.Add(-time.Second), time.Now()))

			healed := time.Now()
			l.Upstream(&l.B, 4, 0)
			w.WaitFor("wanb", "inet", watch.Up, false, 10*time.Second)
			restored = append(restored, time.Since(healed))
			mustCarryPing(b, l, p, fmt.Sprintf("after trial %d", trial+1))
		}
		p.Stop()

		slices.Sort(gaps)
		slices.Sort(withdrawn)
		slices.Sort(restored)
		med, worst := gaps[trials/2], gaps[trials-1]
		ms := func(d time.Duration) string { return d.Round(time.Millisecond).String() }
		interval := stanza.DefaultCheckInterval
		tw := tabwriter.NewWriter(os.Stdout, 0, 8, 2, ' ', 0)
		fmt.Fprintf(tw, "\nISP B's IPv4 upstream dies, carrier up, %d trials, defaults (%s, down %d, up %d)\tmedian\tmax\tgoal, arithmetic\n",
			trials, interval, stanza.DefaultCheckDown, stanza.DefaultCheckUp)
		fmt.Fprintf(tw, "LAN ping (50 pps): longest reply gap\t%s\t%s\t≤ 1.5s: %s\n", ms(med), ms(worst), verdict(worst <= 1500*time.Millisecond))
		fmt.Fprintf(tw, "wanb inet withdrawn in watch.json, after the kill\t%s\t%s\t%d rounds of %s: %s to %s\n", ms(withdrawn[trials/2]), ms(withdrawn[trials-1]),
			stanza.DefaultCheckDown, interval, time.Duration(stanza.DefaultCheckDown)*interval, time.Duration(stanza.DefaultCheckDown+1)*interval)
		fmt.Fprintf(tw, "wanb inet restored in watch.json, after the heal\t%s\t%s\t%d rounds of %s: %s to %s\n", ms(restored[trials/2]), ms(restored[trials-1]),
			stanza.DefaultCheckUp, interval, time.Duration(stanza.DefaultCheckUp)*interval, time.Duration(stanza.DefaultCheckUp+1)*interval)
		fmt.Fprintf(tw, "mwan3track defaults (interval %s, down %d): declared dead after\t≈ %s\t\t%d probes %s apart: %.0fx ifisp-watch's median gap\n",
			mwan3Interval, mwan3Down, mwan3Detect, mwan3Down, mwan3Interval, float64(mwan3Detect)/float64(med))
		tw.Flush()
		b.ReportMetric(med.Seconds(), "gap-median-s")
		b.ReportMetric(worst.Seconds(), "gap-max-s")
		b.ReportMetric(withdrawn[trials/2].Seconds(), "withdrawn-median-s")
		b.ReportMetric(float64(mwan3Detect)/float64(med), "mwan3/ifisp")
	}
}

// mustCarryPing waits (5 s at most) until ISP B carries the LAN's ping:
// in one second B's edge sees at least the ping's 50 requests and A's far
// fewer (only wana's own probes, 10 a second), and the ping is answered.
// Anything else means the lab is not where the next trial must start.
func mustCarryPing(b *testing.B, l *lab.Lab, p *lab.Pinger, when string) {
	b.Helper()
	var last string
	for range 5 {
		a0, b0 := l.Seen(&l.A, 4).Legit, l.Seen(&l.B, 4).Legit
		start := time.Now()
		time.Sleep(time.Second)
		da, db := l.Seen(&l.A, 4).Legit-a0, l.Seen(&l.B, 4).Legit-b0
		// The last 100 ms of requests may not be answered yet.
		sent, got := p.Count(start, time.Now().Add(-100*time.Millisecond))
		if sent == 0 {
			b.Fatalf("%s: the LAN ping has ended (its count bound is too small)", when)
		}
		if db >= 50 && da < 25 && got >= sent-1 {
			return
		}
		last = fmt.Sprintf("ispa saw %d packets, ispb %d; %d of %d requests answered", da, db, got, sent)
	}
	b.Fatalf("%s: ISP B does not carry the LAN ping after 5s: %s", when, last)
}

// soakDuration is how long BenchmarkFalseFailovers keeps each loss rate
// on: ten minutes, the figure, or IFISP_BENCH_SOAK (e.g. "30s").
func soakDuration(b *testing.B) time.Duration {
	s := os.Getenv("IFISP_BENCH_SOAK")
	if s == "" {
		return 10 * time.Minute
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		b.Fatalf("IFISP_BENCH_SOAK=%q: want a positive duration such as 30s or 10m", s)
	}
	return d
}

// fitsTimeout fails at once, rather than with go test's panic much later,
// when the benchmark's run alone would outlast go test's -timeout (10
// minutes by default, less than two ten-minute soaks).
func fitsTimeout(b *testing.B, need time.Duration) {
	f := flag.Lookup("test.timeout")
	if f == nil {
		return
	}
	if limit, ok := f.Value.(flag.Getter).Get().(time.Duration); ok && limit > 0 && need > limit {
		b.Fatalf("this benchmark needs about %s, more than go test's -timeout %s: pass -timeout %s or more, or set a shorter IFISP_BENCH_SOAK",
			need.Round(time.Minute), limit, (need + 10*time.Minute).Round(10*time.Minute))
	}
}

// BenchmarkFalseFailovers puts random loss on ISP A's forwarding, both
// families, both directions, for the soak duration, and counts the
// monitor's transitions of wana: with 10 % loss the goal is none; 30 % is
// reported. Beside each, what the arithmetic of the defaults expects.
func BenchmarkFalseFailovers(b *testing.B) {
	d := soakDuration(b)
	losses := []float64{0.1, 0.3}
	fitsTimeout(b, time.Duration(len(losses))*(d+time.Minute))
	interval, down, up := stanza.DefaultCheckInterval, stanza.DefaultCheckDown, stanza.DefaultCheckUp
	rounds := float64(d / interval)
	for range b.N {
		tw := tabwriter.NewWriter(os.Stdout, 0, 8, 2, ' ', 0)
		fmt.Fprintf(tw, "\nrandom loss each way on ISP A, both families, %s each, defaults\tround fails (p)\texpected false failovers (2 families)\tmean time to one (per family)\twana inet\twana inet6\twanb (no loss)\tgoal\n", d)
		for _, loss := range losses {
			// A fresh lab per rate: the 30 % soak must not inherit the
			// 10 % one's state.
			l, w := newWatchLab(b)
			l.Upstream(&l.A, 4, loss)
			l.Upstream(&l.A, 6, loss)
			time.Sleep(d)
			count := map[string]int{}
			for _, t := range w.Transitions() {
				f := strings.Fields(t) // IFACE FAMILY OLD NEW withdrawn=... table=...
				if len(f) >= 2 {
					count[f[0]+" "+f[1]]++
				}
			}
			n := count["wana inet"] + count["wana inet6"]
			others := count["wanb inet"] + count["wanb inet6"]
			p, perRound := falseFailoverOdds(loss, down)
			goal := "reported"
			if loss == 0.1 {
				goal = "0: " + verdict(n == 0)
			}
			fmt.Fprintf(tw, "%.0f %%\t%.2f\t%.2g\t%s\t%d\t%d\t%d\t%s\n", loss*100, p, 2*rounds*perRound,
				roughly(time.Duration(float64(interval)/perRound)), count["wana inet"], count["wana inet6"], others, goal)
			b.ReportMetric(float64(n), fmt.Sprintf("transitions-%.0fpct", loss*100))
		}
		tw.Flush()
		var back []string
		for _, loss := range losses {
			p, _ := falseFailoverOdds(loss, down)
			back = append(back, fmt.Sprintf("%.1g at %.0f %%", math.Pow(1-p, float64(up)), loss*100))
		}
		fmt.Printf("arithmetic: p = 1-(1-loss)² (request and reply each lossy, one target); a false failover starts in a round with (1-p)·p^%d;\n"+
			"expected = 2 families × %.0f rounds (%s / %s) × (1-p)·p^%d. Once down, a link needs %d good rounds in a row to come back,\n"+
			"(1-p)^%d a try: %s (so at 30 %% a link stays withdrawn: one transition per family at most).\n",
			down, rounds, d, interval, down, up, up, strings.Join(back, ", "))
	}
}

// falseFailoverOdds returns, for random loss each way, the probability p
// that a probe round fails (its request or its reply lost), and the
// probability (1-p)·p^down that a run of `down` failed rounds, a false
// failover, starts in a given round.
func falseFailoverOdds(loss float64, down int) (p, perRound float64) {
	p = 1 - (1-loss)*(1-loss)
	return p, (1 - p) * math.Pow(p, float64(down))
}

// roughly prints a long duration the way a person would say it.
func roughly(d time.Duration) string {
	switch h := d.Hours(); {
	case h >= 48:
		return fmt.Sprintf("%.0f days", h/24)
	case h >= 2:
		return fmt.Sprintf("%.0f hours", h)
	}
	return d.Round(time.Second).String()
}

// BenchmarkWatchCost runs the monitor over the lab's four links (wana and
// wanb, inet and inet6, all probed at the defaults: 40 echo requests a
// second) for a minute and reports its largest resident memory and its CPU
// time as a share of one core. Goals: 15 MiB and 1 % of a core.
func BenchmarkWatchCost(b *testing.B) {
	const run = time.Minute // not IFISP_BENCH_SOAK: a minute is short and steady enough
	hz := clockTicks(b)
	for range b.N {
		_, w := newWatchLab(b)
		// `ip netns exec` and `env` both exec, so the pid the lab started
		// is the monitor itself, as its state file says too.
		proc := fmt.Sprintf("/proc/%d/", w.Pid())
		if comm, _ := os.ReadFile(proc + "comm"); strings.TrimSpace(string(comm)) != "ifisp-watch" {
			b.Fatalf("%scomm is %q, not the monitor", proc, comm)
		}
		if s := w.Status(); s == nil || s.PID != w.Pid() || len(s.Links) != 4 {
			b.Fatalf("watch.json %+v: want pid %d and 4 links", s, w.Pid())
		}
		cpu0, start := cpuTicks(b, proc), time.Now()
		rss := rssKiB(b, proc)
		for time.Since(start) < run {
			time.Sleep(time.Second)
			rss = max(rss, rssKiB(b, proc))
		}
		cpu, took := cpuTicks(b, proc)-cpu0, time.Since(start)
		share := float64(cpu) / hz / took.Seconds() * 100
		// A link that went down meanwhile would make the minute untypical.
		for _, s := range w.Status().Links {
			if s.State != watch.Up {
				b.Fatalf("%s %s is %s after the minute (%s): the figures would not be the steady state's", s.Iface, s.Family, s.State, s.Reason)
			}
		}
		mib := float64(rss) / 1024
		tw := tabwriter.NewWriter(os.Stdout, 0, 8, 2, ' ', 0)
		fmt.Fprintf(tw, "\nifisp-watch, 4 links (wana, wanb × inet, inet6) at defaults, %s\tmeasured\tgoal\n", run)
		fmt.Fprintf(tw, "largest RSS (VmRSS, each second)\t%.1f MiB\t≤ 15 MiB: %s\n", mib, verdict(mib <= 15))
		fmt.Fprintf(tw, "CPU (utime+stime: %d ticks of 1/%.0f s in %s)\t%.2f %% of a core\t≤ 1 %%: %s\n", cpu, hz, took.Round(time.Second), share, verdict(share <= 1))
		tw.Flush()
		b.ReportMetric(mib, "rss-MiB")
		b.ReportMetric(share, "cpu-%")
	}
}

// cpuTicks is the process's user plus system time, in clock ticks.
func cpuTicks(b *testing.B, proc string) int {
	stat, err := os.ReadFile(proc + "stat")
	if err != nil {
		b.Fatal(err)
	}
	// The command name, in parentheses, may hold spaces: count fields
	// after it. utime and stime are fields 14 and 15 of the line, so the
	// 12th and 13th after the name.
	f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	if len(f) < 13 {
		b.Fatalf("%sstat: %q", proc, stat)
	}
	u, err1 := strconv.Atoi(f[11])
	s, err2 := strconv.Atoi(f[12])
	if err1 != nil || err2 != nil {
		b.Fatalf("%sstat: %q", proc, stat)
	}
	return u + s
}

// rssKiB is the process's resident memory now.
func rssKiB(b *testing.B, proc string) int {
	status, err := os.ReadFile(proc + "status")
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			if n, err := strconv.Atoi(f[1]); err == nil {
				return n
			}
		}
	}
	b.Fatalf("%sstatus has no VmRSS", proc)
	return 0
}

// clockTicks is the kernel's USER_HZ, the unit of /proc/PID/stat's times
// (100 on every Linux port but a few old ones; asked, not assumed).
func clockTicks(b *testing.B) float64 {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err != nil {
		b.Fatalf("getconf CLK_TCK: %v", err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil || n <= 0 {
		b.Fatalf("getconf CLK_TCK: %q", out)
	}
	return float64(n)
}

// verdict says whether a goal was met.
func verdict(ok bool) string {
	if ok {
		return "goal met"
	}
	return "MISSED"
}
