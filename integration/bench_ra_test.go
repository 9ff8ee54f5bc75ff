package integration

import (
	"fmt"
	"os"
	"slices"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/ifisp/ifisp/internal/lab"
	"github.com/ifisp/ifisp/pkg/stanza"
	"github.com/ifisp/ifisp/pkg/watch"
)

// BenchmarkRAFailover measures IPv6 failover as a SLAAC LAN host lives
// it: from the moment ISP B's IPv6 upstream is cut (carrier up), and from
// the moment `ifdown wanb` starts, to the first new TCP connection from
// the LAN host that the internet host saw coming from A's prefix. A new
// connection is tried every 20 ms, so the figures are within 20 ms of the
// earliest possible. Between trials B heals (or comes up again) and must
// carry new connections again. Goals: 1.3 s for the cut at the monitor's
// defaults, 0.3 s for ifdown.
func BenchmarkRAFailover(b *testing.B) {
	const trials = 7
	for range b.N {
		l, w, cap := raLab(b)
		pa, pb := l.A.LAN6(), l.B.LAN6()
		l.Upstream(&l.B, 6, 0) // the chain now: each cut is one rule
		// A trial takes about 1.1 s to fail over and 3.1 s to come back,
		// an ifdown trial about a second: 4000 connections (80 s) cover
		// both series with room to spare.
		d := l.StartDialer(4000)
		answered(b, d, time.Now(), pb, 5*time.Second, "before the first trial")

		// heard is when the LAN host heard B's prefix deprecated after at.
		heard := func(at time.Time, what string) time.Duration {
			r, ok := cap.WaitFor(at, 5*time.Second, func(r lab.RA) bool { return deprecatedNow(lifetimes(r, pb)) })
			if !ok {
				b.Fatalf("%s: the LAN host heard no advertisement deprecating %s within 5s", what, pb)
			}
			return r.At.Sub(at)
		}
		var cut, cutRA, down, downRA []time.Duration
		for trial := range trials {
			at := time.Now()
			l.Upstream(&l.B, 6, 1)
			cut = append(cut, answered(b, d, at, pa, 5*time.Second, fmt.Sprintf("cut %d", trial+1)).Done.Sub(at))
			cutRA = append(cutRA, heard(at, fmt.Sprintf("cut %d", trial+1)))
			l.Upstream(&l.B, 6, 0)
			w.WaitFor("wanb", "inet6", watch.Up, false, 10*time.Second)
			answered(b, d, time.Now(), pb, 5*time.Second, fmt.Sprintf("after cut %d", trial+1))
		}
		for trial := range trials {
			at := time.Now()
			l.MustIfdown("wanb")
			down = append(down, answered(b, d, at, pa, 5*time.Second, fmt.Sprintf("ifdown %d", trial+1)).Done.Sub(at))
			downRA = append(downRA, heard(at, fmt.Sprintf("ifdown %d", trial+1)))
			l.MustIfup("wanb")
			answered(b, d, time.Now(), pb, 5*time.Second, fmt.Sprintf("after ifdown %d", trial+1))
		}
		d.Stop()
		if n := l.Spoofed(); n != 0 {
			b.Errorf("the ISPs dropped %d spoofed packets, want 0", n)
		}

		for _, s := range [][]time.Duration{cut, cutRA, down, downRA} {
			slices.Sort(s)
		}
		ms := func(d time.Duration) string { return d.Round(time.Millisecond).String() }
		tw := tabwriter.NewWriter(os.Stdout, 0, 8, 2, ' ', 0)
		fmt.Fprintf(tw, "\nIPv6 LAN host (SLAAC from ifisp-watch's advertisements), %d trials each, monitor defaults (%s, down %d)\tmedian\tmax\tgoal\n",
			trials, stanza.DefaultCheckInterval, stanza.DefaultCheckDown)
		fmt.Fprintf(tw, "B's upstream cut, carrier up: first new TCP connection answered via A's prefix\t%s\t%s\t≤ 1.3s: %s\n", ms(cut[trials/2]), ms(cut[trials-1]), verdict(cut[trials/2] <= 1300*time.Millisecond))
		fmt.Fprintf(tw, "  of which until the host heard B's prefix deprecated\t%s\t%s\t%d rounds of %s: %s to %s\n", ms(cutRA[trials/2]), ms(cutRA[trials-1]),
			stanza.DefaultCheckDown, stanza.DefaultCheckInterval, time.Duration(stanza.DefaultCheckDown)*stanza.DefaultCheckInterval, time.Duration(stanza.DefaultCheckDown+1)*stanza.DefaultCheckInterval)
		fmt.Fprintf(tw, "ifdown wanb started: first new TCP connection answered via A's prefix\t%s\t%s\t≤ 0.3s: %s\n", ms(down[trials/2]), ms(down[trials-1]), verdict(down[trials/2] <= 300*time.Millisecond))
		fmt.Fprintf(tw, "  of which until the host heard B's prefix deprecated\t%s\t%s\t\n", ms(downRA[trials/2]), ms(downRA[trials-1]))
		tw.Flush()
		b.ReportMetric(cut[trials/2].Seconds(), "cut-median-s")
		b.ReportMetric(down[trials/2].Seconds(), "ifdown-median-s")
	}
}
