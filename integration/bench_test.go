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

// seedRoutes is the seed site's recipe for the same routing as twoISPs,
// done by hand with `up`/`down` lines: the baseline ifisp is measured
// against.
const seedRoutes = `
iface wana inet static
	address 198.51.100.2/24
	up ip route add default via 198.51.100.1 dev wana table ispa
	up ip route add throw 10.0.0.0/8 table ispa
	up ip route add throw 172.16.0.0/12 table ispa
	up ip route add throw 192.168.0.0/16 table ispa
	up ip rule add from 198.51.100.2 lookup ispa pref 10000
	up ip rule add from 198.51.100.64/28 lookup ispa pref 10100
	up ip route add default via 198.51.100.1 dev wana metric 1
	down ip route del default via 198.51.100.1 dev wana metric 1
	down ip rule del from 198.51.100.2 lookup ispa pref 10000
	down ip rule del from 198.51.100.64/28 lookup ispa pref 10100
	down ip route flush table ispa

iface wana inet6 static
	address 2001:db8:a::2/64
	up ip -6 route add default via 2001:db8:a::1 dev wana table ispa
	up ip -6 route add throw fc00::/7 table ispa
	up ip -6 rule add from 2001:db8:a::2 lookup ispa pref 10000
	up ip -6 route add default via 2001:db8:a::1 dev wana metric 2
	down ip -6 route del default via 2001:db8:a::1 dev wana metric 2
	down ip -6 rule del from 2001:db8:a::2 lookup ispa pref 10000
	down ip -6 route flush table ispa

iface wanb inet static
	address 203.0.113.2/24
	gateway 203.0.113.1
	up ip route add default via 203.0.113.1 dev wanb table ispb
	up ip route add throw 10.0.0.0/8 table ispb
	up ip route add throw 172.16.0.0/12 table ispb
	up ip route add throw 192.168.0.0/16 table ispb
	up ip rule add from 203.0.113.2 lookup ispb pref 10000
	down ip rule del from 203.0.113.2 lookup ispb pref 10000
	down ip route flush table ispb

iface wanb inet6 static
	address 2001:db8:b::2/64
	gateway 2001:db8:b::1
	metric 1
	up ip -6 route add default via 2001:db8:b::1 dev wanb table ispb
	up ip -6 route add throw fc00::/7 table ispb
	up ip -6 rule add from 2001:db8:b::2 lookup ispb pref 10000
	down ip -6 rule del from 2001:db8:b::2 lookup ispb pref 10000
	down ip -6 route flush table ispb
`

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
		seed := measure(seedRoutes, false)
		ifisp := measure(twoISPs, true)
		w := tabwriter.NewWriter(os.Stdout, 0, 8, 2, ' ', 0)
		fmt.Fprintf(w, "\nifup wana wanb + ifdown wana wanb (median of %d)\tseed up/down lines\tifisp hooks\tratio\n", rounds)
		fmt.Fprintf(w, "\t%v\t%v\t%.2fx\n", seed.Round(time.Millisecond), ifisp.Round(time.Millisecond), float64(ifisp)/float64(seed))
		w.Flush()
		b.ReportMetric(float64(ifisp)/float64(seed), "ifisp/seed")
	}
}
