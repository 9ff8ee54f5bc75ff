package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"github.com/vishvananda/netns"

	"github.com/ifisp/ifisp/internal/lab"
	"github.com/ifisp/ifisp/pkg/connmark"
	"github.com/ifisp/ifisp/pkg/reconcile"
	"github.com/ifisp/ifisp/pkg/stanza"
)

// BenchmarkIfupdown times `ifup wana wanb` + `ifdown wana wanb` in the lab,
// ifisp's hooks against the seed's `up`/`down` lines, median of 20 each:
// routing alone (ifisp-route against ip rule/ip route lines), and
// everything (with SNAT, the guard and conntrack against the seed's
// iptables and conntrack -D lines). ifupdown alone (the same stanzas with
// neither) is the floor both stand on; an empty Go program linked in
// place of each hook is the floor of ifisp's layout, one process per hook
// and phase, before a hook does anything. The labs take turns, round by
// round, so a busy machine slows them alike. Run it with `make bench`.
func BenchmarkIfupdown(b *testing.B) {
	const rounds = 20
	bare := regexp.MustCompile(`(?m)^\t(isp|snat)-.*\n`).ReplaceAllString(lab.TwoISPs, "")
	empty := emptyHooks(b)
	newLab := func(legacy bool, interfaces, hooks string, only ...string) *lab.Lab {
		l := lab.New(b)
		if legacy {
			l.UseIptablesLegacy()
		}
		if hooks != "" {
			l.Install(hooks, only...)
		}
		l.Interfaces(interfaces)
		return l
	}
	cycle := func(l *lab.Lab) time.Duration {
		start := time.Now()
		l.MustIfup("wana", "wanb")
		l.MustIfdown("wana", "wanb")
		return time.Since(start)
	}
	median := func(times []time.Duration) time.Duration {
		slices.Sort(times)
		return times[len(times)/2]
	}
	for range b.N {
		w := tabwriter.NewWriter(os.Stdout, 0, 8, 2, ' ', 0)
		fmt.Fprintf(w, "\nifup wana wanb + ifdown wana wanb (median of %d)\tifupdown alone\tempty Go hooks\tseed up/down lines\tifisp hooks\tratio\tempty hooks' ratio\n", rounds)
		for _, row := range []struct {
			name, seed string
			only       []string
			legacy     bool
		}{
			{"routing only", lab.SeedRoutes, []string{"ifisp-route"}, false},
			{"routing, SNAT, guard, conntrack", lab.Seed, nil, false},
			// Where the nf_tables row's time goes: with nf_tables a
			// process that deleted rules waits, as it closes its netlink
			// socket, for an RCU grace period: with ifisp once in each
			// link's IPv4 and once in its IPv6 post-down, with the seed
			// once in each link's down. iptables-legacy has no such wait.
			{"the same with iptables-legacy", lab.Seed, nil, true},
		} {
			labs := []*lab.Lab{
				newLab(row.legacy, bare, ""),
				newLab(row.legacy, lab.TwoISPs, empty, row.only...),
				newLab(row.legacy, row.seed, ""),
				newLab(row.legacy, lab.TwoISPs, bin, row.only...),
			}
			times := make([][]time.Duration, len(labs))
			for range rounds {
				for i, l := range labs {
					times[i] = append(times[i], cycle(l))
				}
			}
			for _, l := range labs {
				if out := routingState(l); !strings.Contains(out, "# ip -4 route show default\n# ip -6") {
					b.Fatalf("default routes left after ifdown:\n%s", out)
				}
			}
			floor, noop, seed, ifisp := median(times[0]), median(times[1]), median(times[2]), median(times[3])
			ms := func(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
			fmt.Fprintf(w, "%s\t%v\t%v\t%v\t%v\t%.2fx\t%.2fx\n", row.name, ms(floor), ms(noop), ms(seed), ms(ifisp), float64(ifisp)/float64(seed), float64(noop)/float64(seed))
			b.ReportMetric(float64(ifisp)/float64(seed), strings.ReplaceAll(strings.ReplaceAll(row.name, " ", "-"), ",", "")+"-ifisp/seed")
		}
		w.Flush()
	}
}

// emptyHooks returns a folder in which every hook binary of hooks/layout
// is an empty Go program (built as the real ones are): what any Go hook
// costs ifupdown before it does anything.
func emptyHooks(b *testing.B) string {
	dir := b.TempDir()
	if err := os.WriteFile(dir+"/main.go", []byte("package main\n\nfunc main() {}\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	build := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", "empty", "main.go")
	build.Dir = dir
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GO111MODULE=off")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("building the empty hook: %v\n%s", err, out)
	}
	hooks, err := lab.Layout()
	if err != nil {
		b.Fatal(err)
	}
	for _, h := range hooks {
		if err := os.Symlink(dir+"/empty", dir+"/"+h.Binary); err != nil && !os.IsExist(err) {
			b.Fatal(err)
		}
	}
	return dir
}

// approach is one way to run the two ISPs: ifisp's hooks or the seed's
// up/down lines.
type approach struct {
	name       string
	interfaces string
	hooks      bool
}

var approaches = []approach{{"seed", lab.Seed, false}, {"ifisp", lab.TwoISPs, true}}

// failoverLab brings both ISPs up the approach's way, with the echo servers
// running.
func failoverLab(b *testing.B, a approach) *lab.Lab {
	l := lab.New(b)
	if a.hooks {
		l.Install(bin)
	}
	l.Interfaces(a.interfaces)
	l.EchoServers()
	l.MustIfup("wana", "wanb")
	return l
}

// timed runs f and returns how long it took.
func timed(f func()) time.Duration {
	start := time.Now()
	f()
	return time.Since(start)
}

// conntrackCount returns the router's number of conntrack entries.
func conntrackCount(b testing.TB, l *lab.Lab) int {
	b.Helper()
	out := l.Must(l.Router, "conntrack", "-C")
	n, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		b.Fatalf("conntrack -C: %q", out)
	}
	return n
}

// BenchmarkConntrack measures, at 100,000 and at 250,000 flows (the lab's
// ceiling: nf_conntrack_max is 262,144 and cannot be raised inside a
// namespace), ifisp against the seed's `conntrack -D --src-nat` lines:
// ifdown + ifup of the backup link with the flows on the preferred one
// (time, and how many of those healthy flows survive), ifdown of the
// preferred link, and its ifup again with the flows on the backup
// (failback); after each, the stale entries left: those still NATed to the
// link that no longer carries them.
func BenchmarkConntrack(b *testing.B) {
	for range b.N {
		w := tabwriter.NewWriter(os.Stdout, 0, 8, 2, ' ', 0)
		fmt.Fprintf(w, "\nflows\trow\tseed (conntrack -D --src-nat)\tifisp\tratio\n")
		for _, flows := range []int{100000, 250000} {
			results := map[string]cycleResult{}
			for _, a := range approaches {
				results[a.name] = conntrackCycle(b, a, flows)
			}
			seed, ifisp := results["seed"], results["ifisp"]
			row := func(name string, s, i time.Duration) {
				fmt.Fprintf(w, "%d\t%s\t%v\t%v\t%.2fx\n", flows, name, s.Round(time.Millisecond), i.Round(time.Millisecond), float64(i)/float64(s))
				b.ReportMetric(float64(i)/float64(s), fmt.Sprintf("%s-%dk-ifisp/seed", strings.ReplaceAll(name, " ", "-"), flows/1000))
			}
			row("backup cycle", seed.backup, ifisp.backup)
			fmt.Fprintf(w, "%d\tof which ifisp's conntrack work (one filtered flush)\t\t%v\t\n", flows, ifisp.flush.Round(100*time.Microsecond))
			fmt.Fprintf(w, "%d\thealthy flows kept by it\t%d\t%d\t\n", flows, seed.survived, ifisp.survived)
			row("preferred down", seed.preferred, ifisp.preferred)
			row("failback", seed.failback, ifisp.failback)
			fmt.Fprintf(w, "%d\tstale entries left (all three)\t%d\t%d\t\n", flows, seed.stale, ifisp.stale)
			b.ReportMetric(float64(ifisp.stale), fmt.Sprintf("stale-%dk", flows/1000))
		}
		w.Flush()
	}
}

// cycleResult is what conntrackCycle measured.
type cycleResult struct {
	backup, preferred, failback time.Duration
	survived, stale             int
	// flush is one filtered flush of the full table that deletes
	// nothing: the conntrack work of ifdown of the backup (ifisp only).
	flush time.Duration
}

// flushTime times reconcile.Left for isp's link in the router's
// namespace, the kernel walking the whole table for the flows NATed to it.
func flushTime(b *testing.B, l *lab.Lab, isp *lab.ISP) time.Duration {
	ns, err := netns.GetFromName(l.Router)
	if err != nil {
		b.Fatal(err)
	}
	defer ns.Close()
	ct, err := conntrack.Dial(&netlink.Config{NetNS: int(ns)})
	if err != nil {
		b.Fatal(err)
	}
	defer ct.Close()
	link := reconcile.Link{Iface: isp.Iface, Family: stanza.Inet, Mark: connmark.Mark{ID: uint32(isp.Table), Mask: connmark.DefaultMask}}
	return timed(func() {
		if err := reconcile.Left(ct, link); err != nil {
			b.Fatal(err)
		}
	})
}

// conntrackCycle runs BenchmarkConntrack's three changes for one approach
// over n flows, filling the table again before each.
func conntrackCycle(b *testing.B, a approach, n int) (r cycleResult) {
	l := failoverLab(b, a)
	l.Must(l.Router, "sysctl", "-qw", "net.netfilter.nf_conntrack_udp_timeout=600", "net.netfilter.nf_conntrack_max=262144")
	srcs := []string{"10.1.0.10", "10.1.0.11", "10.1.0.12", "10.1.0.13", "10.1.0.14", "10.1.0.15", "10.1.0.16"}
	for _, s := range srcs[1:] {
		l.Must(l.LAN, "ip", "addr", "add", s+"/24", "dev", "eth0")
	}
	// fill makes sure n flows are NATed to isp, the one routing picks now.
	fill := func(isp *lab.ISP) {
		if natted(b, l, isp) < n {
			l.UDPBurst(n, srcs...)
		}
		if got := natted(b, l, isp); got < n {
			b.Fatalf("%s: %d conntrack entries NATed to %s after the burst, want %d", a.name, got, isp.Name, n)
		}
	}
	fill(&l.B)
	if a.hooks {
		r.flush = flushTime(b, l, &l.A)
	}
	r.backup = timed(func() { l.MustIfdown("wana"); l.MustIfup("wana") })
	r.survived = min(n, natted(b, l, &l.B))
	fill(&l.B)
	r.preferred = timed(func() { l.MustIfdown("wanb") })
	r.stale = natted(b, l, &l.B)
	fill(&l.A)
	r.failback = timed(func() { l.MustIfup("wanb") })
	r.stale += natted(b, l, &l.A)
	return r
}

// natted counts the router's conntrack entries NATed to isp's address.
func natted(b testing.TB, l *lab.Lab, isp *lab.ISP) int {
	b.Helper()
	out := l.Must(l.Router, "sh", "-c", "conntrack -L -f ipv4 --reply-dst "+isp.Router+" 2>/dev/null | wc -l")
	n, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		b.Fatalf("counting conntrack entries: %q", out)
	}
	return n
}

// BenchmarkPingLoss counts the replies a 20 pps LAN ping loses across
// ifdown and across ifup of the preferred link, and the spoofed packets the
// ISPs drop, ifisp against the seed, each over 5 cycles.
func BenchmarkPingLoss(b *testing.B) {
	const cycles = 5
	const interval = 50 * time.Millisecond
	for range b.N {
		w := tabwriter.NewWriter(os.Stdout, 0, 8, 2, ' ', 0)
		fmt.Fprintf(w, "\n20 pps LAN ping, %d cycles of the preferred link\treplies lost across ifdown (max, total)\tacross ifup (max, total)\tspoofed at the ISPs\tstuck after\n", cycles)
		for _, a := range approaches {
			l := failoverLab(b, a)
			var downMax, downAll, upMax, upAll int
			stuck := 0
			for range cycles {
				p := l.StartPing(l.LAN, lab.Internet, interval, 120)
				time.Sleep(500 * time.Millisecond)
				t := time.Now()
				l.MustIfdown("wanb")
				time.Sleep(1500 * time.Millisecond)
				sent, got := p.Count(t, time.Now().Add(-time.Second))
				downMax, downAll = max(downMax, sent-got), downAll+sent-got
				t = time.Now()
				l.MustIfup("wanb")
				time.Sleep(1500 * time.Millisecond)
				sent, got = p.Count(t, time.Now().Add(-time.Second))
				upMax, upAll = max(upMax, sent-got), upAll+sent-got
				if sent, got := p.Count(time.Now().Add(-time.Second), time.Now()); got < sent/2 {
					stuck++
				}
				p.Stop()
			}
			fmt.Fprintf(w, "%s\t%d, %d\t%d, %d\t%d\t%d of %d\n", a.name, downMax, downAll, upMax, upAll, l.Spoofed(), stuck, cycles)
			if a.hooks {
				b.ReportMetric(float64(downMax), "ifisp-lost-ifdown-max")
				b.ReportMetric(float64(upMax), "ifisp-lost-ifup-max")
				b.ReportMetric(float64(l.Spoofed()), "ifisp-spoofed")
			}
		}
		w.Flush()
	}
}

// BenchmarkForwarding measures what ifisp's per-packet rules cost: LAN to
// internet TCP throughput (iperf3, 2 s a run, 9 runs each, in turns)
// without ifisp's jumps from the built-in chains, with the egress guard's
// alone, and with the guard's and the connection marks'. On veth the
// stream is CPU-bound, so any cost per packet shows. It reports the medians
// and each one's spread, which says how far apart two runs of the same
// rules are.
func BenchmarkForwarding(b *testing.B) {
	if _, err := exec.LookPath("iperf3"); err != nil {
		b.Fatal("BenchmarkForwarding needs iperf3 (apt-get install iperf3)")
	}
	const runs = 9
	for range b.N {
		l := failoverLab(b, approaches[1])
		server := exec.Command("ip", "netns", "exec", l.Inet, "iperf3", "-s", "-B", lab.Internet)
		if err := server.Start(); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { server.Process.Kill(); server.Wait() })
		time.Sleep(300 * time.Millisecond)
		rate := func() float64 {
			out := l.Must(l.LAN, "iperf3", "-c", lab.Internet, "-t", "2", "-J")
			var r struct {
				End struct {
					SumReceived struct {
						BitsPerSecond float64 `json:"bits_per_second"`
					} `json:"sum_received"`
				} `json:"end"`
			}
			if err := json.Unmarshal([]byte(out), &r); err != nil {
				b.Fatalf("iperf3: %v\n%s", err, out)
			}
			return r.End.SumReceived.BitsPerSecond
		}
		// The jumps, guard first; a configuration keeps the first n.
		jumps := []struct{ table, chain, target string }{
			{"filter", "FORWARD", "IFISP-GUARD"}, {"mangle", "PREROUTING", "IFISP-ARRIVE"}, {"mangle", "POSTROUTING", "IFISP-LEAVE"},
		}
		jump := func(op string, i int) {
			j := jumps[i]
			args := []string{"iptables", "-t", j.table, op, j.chain}
			if op == "-I" {
				args = append(args, "1")
			}
			l.Must(l.Router, append(args, "-m", "comment", "--comment", "ifisp", "-j", j.target)...)
		}
		configs := []struct {
			name  string
			jumps int
		}{{"none of ifisp's rules", 0}, {"the guard", 1}, {"the guard and the marks", 3}}
		have := len(jumps)
		results := make([][]float64, len(configs))
		for range runs {
			for i, c := range configs {
				for ; have > c.jumps; have-- {
					jump("-D", have-1)
				}
				for ; have < c.jumps; have++ {
					jump("-I", have)
				}
				results[i] = append(results[i], rate())
			}
		}
		fmt.Printf("\nLAN->internet TCP (iperf3, median of %d; spread: (max-min)/median)\n", runs)
		base := 0.0
		for i, c := range configs {
			v := results[i]
			slices.Sort(v)
			med := v[runs/2]
			if i == 0 {
				base = med
			}
			cost := 100 * (1 - med/base)
			fmt.Printf("  %-24s %6.2f Gbit/s  spread %3.0f%%  cost %5.1f%%\n", c.name, med/1e9, 100*(v[runs-1]-v[0])/med, cost)
			if i > 0 {
				b.ReportMetric(cost, strings.ReplaceAll(c.name, " ", "-")+"-cost-%")
			}
		}
	}
}
