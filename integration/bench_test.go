package integration

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/ifisp/ifisp/pkg/lab"
)

// BenchmarkIfupdown times `ifup wana wanb` + `ifdown wana wanb` in the lab,
// ifisp's hooks against the seed's `up`/`down` lines, median of 10 each,
// and prints the table. Run it with `make bench`.
func BenchmarkIfupdown(b *testing.B) {
	const rounds = 10
	measure := func(interfaces string, hooks bool) time.Duration {
		l := lab.New(b)
		if hooks {
			l.Install(bin)
		}
		l.Interfaces(interfaces)
		var times []time.Duration
		for range rounds {
			start := time.Now()
			l.MustIfup("wana", "wanb")
			l.MustIfdown("wana", "wanb")
			times = append(times, time.Since(start))
		}
		if out := routingState(l); !strings.Contains(out, "# ip -4 route show default\n# ip -6") {
			b.Fatalf("default routes left after ifdown:\n%s", out)
		}
		slices.Sort(times)
		return times[rounds/2]
	}
	for range b.N {
		seed := measure(lab.SeedRoutes, false)
		ifisp := measure(lab.TwoISPs, true)
		w := tabwriter.NewWriter(os.Stdout, 0, 8, 2, ' ', 0)
		fmt.Fprintf(w, "\nifup wana wanb + ifdown wana wanb (median of %d)\tseed up/down lines\tifisp hooks\tratio\n", rounds)
		fmt.Fprintf(w, "\t%v\t%v\t%.2fx\n", seed.Round(time.Millisecond), ifisp.Round(time.Millisecond), float64(ifisp)/float64(seed))
		w.Flush()
		b.ReportMetric(float64(ifisp)/float64(seed), "ifisp/seed")
	}
}
