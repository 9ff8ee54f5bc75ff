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

	"github.com/ifisp/ifisp/internal/lab"
)

// BenchmarkIfupdown times `ifup wana wanb` + `ifdown wana wanb` in the lab,
// ifisp's hooks against the seed's `up`/`down` lines, median of 20 each:
// routing alone (ifisp-route against ip rule/ip route lines), and
// everything (with SNAT, the guard and conntrack against the seed's
// iptables and conntrack -D lines). ifupdown alone (the same stanzas with
// neither) is the floor both stand on. The three labs take turns, round by
// round, so a busy machine slows them alike. Run it with `make bench`.
func BenchmarkIfupdown(b *testing.B) {
	const rounds = 20
	bare := regexp.MustCompile(`(?m)^\t(isp|snat)-.*\n`).ReplaceAllString(lab.TwoISPs, "")
	newLab := func(legacy bool, interfaces string, hooks bool, only ...string) *lab.Lab {
		l := lab.New(b)
		if legacy {
			l.UseIptablesLegacy()
		}
		if hooks {
			l.Install(bin, only...)
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
		fmt.Fprintf(w, "\nifup wana wanb + ifdown wana wanb (median of %d)\tifupdown alone\tseed up/down lines\tifisp hooks\tratio\n", rounds)
		for _, row := range []struct {
			name, seed string
			only       []string
			legacy     bool
		}{
			{"routing only", lab.SeedRoutes, []string{"ifisp-route"}, false},
			{"routing, SNAT, guard, conntrack", lab.Seed, nil, false},
			// Where the nf_tables row's time goes: with nf_tables every
			// transaction that deletes a rule waits for an RCU grace
			// period, and ifisp's down deletes in three (the v4 guard, the
			// v4 SNAT, the v6 guard), the seed's in one.
			{"the same with iptables-legacy", lab.Seed, nil, true},
		} {
			labs := []*lab.Lab{newLab(row.legacy, bare, false), newLab(row.legacy, row.seed, false), newLab(row.legacy, lab.TwoISPs, true, row.only...)}
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
			floor, seed, ifisp := median(times[0]), median(times[1]), median(times[2])
			fmt.Fprintf(w, "%s\t%v\t%v\t%v\t%.2fx\n", row.name, floor.Round(time.Millisecond), seed.Round(time.Millisecond), ifisp.Round(time.Millisecond), float64(ifisp)/float64(seed))
			b.ReportMetric(float64(ifisp)/float64(seed), strings.ReplaceAll(strings.ReplaceAll(row.name, " ", "-"), ",", "")+"-ifisp/seed")
		}
		w.Flush()
	}
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

// BenchmarkConntrack measures, with 100,000 flows on the preferred link:
// ifdown + ifup of the backup link (time, and how many flows survive), and
// ifdown of the preferred link (time), ifisp against the seed's
// `conntrack -D --src-nat` lines.
func BenchmarkConntrack(b *testing.B) {
	const flows = 100000
	type result struct {
		backup, preferred time.Duration
		survived          int
	}
	results := map[string]result{}
	for range b.N {
		for _, a := range approaches {
			l := failoverLab(b, a)
			l.Must(l.Router, "sysctl", "-qw", "net.netfilter.nf_conntrack_udp_timeout=600", "net.netfilter.nf_conntrack_max=262144")
			srcs := []string{"10.1.0.10", "10.1.0.11", "10.1.0.12"}
			for _, s := range srcs[1:] {
				l.Must(l.LAN, "ip", "addr", "add", s+"/24", "dev", "eth0")
			}
			l.UDPBurst(flows, srcs...)
			before := conntrackCount(b, l)
			if before < flows {
				b.Fatalf("%s: %d conntrack entries after the burst, want %d", a.name, before, flows)
			}
			var r result
			r.backup = timed(func() { l.MustIfdown("wana"); l.MustIfup("wana") })
			r.survived = min(flows, conntrackCount(b, l))
			// The seed's cycle flushed them all: fill the table again,
			// so both approaches take the preferred link down over
			// 100,000 flows.
			l.UDPBurst(flows, srcs...)
			if n := conntrackCount(b, l); n < flows {
				b.Fatalf("%s: %d conntrack entries after the second burst, want %d", a.name, n, flows)
			}
			r.preferred = timed(func() { l.MustIfdown("wanb") })
			results[a.name] = r
		}
		seed, ifisp := results["seed"], results["ifisp"]
		w := tabwriter.NewWriter(os.Stdout, 0, 8, 2, ' ', 0)
		fmt.Fprintf(w, "\n%d flows on the preferred link\tseed (conntrack -D --src-nat)\tifisp\tratio\n", flows)
		fmt.Fprintf(w, "ifdown + ifup of the backup link\t%v\t%v\t%.2fx\n", seed.backup.Round(time.Millisecond), ifisp.backup.Round(time.Millisecond), float64(ifisp.backup)/float64(seed.backup))
		fmt.Fprintf(w, "flows that survived it\t%d\t%d\t\n", seed.survived, ifisp.survived)
		fmt.Fprintf(w, "ifdown of the preferred link\t%v\t%v\t%.2fx\n", seed.preferred.Round(time.Millisecond), ifisp.preferred.Round(time.Millisecond), float64(ifisp.preferred)/float64(seed.preferred))
		w.Flush()
		b.ReportMetric(float64(ifisp.preferred)/float64(seed.preferred), "preferred-down-ifisp/seed")
		b.ReportMetric(float64(ifisp.survived), "survivors")
	}
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

// BenchmarkGuard measures what the egress guard costs: LAN to internet TCP
// throughput (iperf3, 3 s, best of 5, alternating) with the guard's jump
// in FORWARD and without it. On veth the stream is CPU-bound, so any cost
// per packet shows; runs vary by a few percent.
func BenchmarkGuard(b *testing.B) {
	if _, err := exec.LookPath("iperf3"); err != nil {
		b.Fatal("BenchmarkGuard needs iperf3 (apt-get install iperf3)")
	}
	for range b.N {
		l := failoverLab(b, approaches[1])
		server := exec.Command("ip", "netns", "exec", l.Inet, "iperf3", "-s", "-B", lab.Internet)
		if err := server.Start(); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { server.Process.Kill(); server.Wait() })
		time.Sleep(300 * time.Millisecond)
		rate := func() float64 {
			out := l.Must(l.LAN, "iperf3", "-c", lab.Internet, "-t", "3", "-J")
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
		jump := []string{"FORWARD", "-m", "comment", "--comment", "ifisp", "-j", "IFISP-GUARD"}
		var with, without float64
		for range 5 {
			with = max(with, rate())
			l.Must(l.Router, append([]string{"iptables", "-D"}, jump...)...)
			without = max(without, rate())
			l.Must(l.Router, append([]string{"iptables", "-I"}, jump...)...)
		}
		loss := 100 * (1 - with/without)
		fmt.Printf("\nLAN->internet TCP (iperf3, best of 5)  without guard %.2f Gbit/s  with guard %.2f Gbit/s  cost %.1f%%\n", without/1e9, with/1e9, loss)
		b.ReportMetric(loss, "guard-cost-%")
	}
}
