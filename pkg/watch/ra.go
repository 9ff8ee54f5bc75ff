package watch

import (
	"math"
	"slices"

	"github.com/ifisp/ifisp/pkg/ra"
)

// announce tells the router advertisement sender what each LAN's prefixes
// are now (lanPrefixes).
func (d *daemon) announce() {
	if d.ra == nil {
		return
	}
	links := make([]*link, 0, len(d.links))
	for _, key := range d.keys() {
		links = append(links, d.links[key])
	}
	d.ra.Set(lanPrefixes(links))
}

// lanPrefixes returns, per LAN interface, the prefixes of the links that
// number it: a link's prefix is deprecated while the link is down and
// another link on the same LAN is up (last resort, as for the defaults:
// when every ISP of a LAN is down, none is deprecated). A link that left
// the registry (ifdown) is not among links, and the sender announces its
// prefix as gone.
func lanPrefixes(links []*link) map[string][]ra.Prefix {
	var onLAN []*link
	anyUp := map[string]bool{}
	for _, l := range links {
		if l.reg.LAN == nil {
			continue
		}
		onLAN = append(onLAN, l)
		anyUp[l.reg.LAN.Iface] = anyUp[l.reg.LAN.Iface] || l.health.state == Up
	}
	// The preferred ISP (lowest main-table metric) last: see ra.Sender.Set.
	slices.SortStableFunc(onLAN, func(a, b *link) int { return preference(b) - preference(a) })
	lans := map[string][]ra.Prefix{}
	for _, l := range onLAN {
		lan := l.reg.LAN.Iface
		lans[lan] = append(lans[lan], ra.Prefix{
			Prefix:     l.reg.LAN.Prefix,
			Deprecated: l.health.state == Down && anyUp[lan],
			RDNSS:      l.reg.RDNSS,
		})
	}
	return lans
}

// preference is the lowest metric of the link's main-table defaults; a
// link without any (inbound only) comes last of all.
func preference(l *link) int {
	m := math.MaxInt32
	for _, def := range l.reg.Defaults {
		m = min(m, def.Metric)
	}
	return m
}
