package watch

import (
	"math"
	"slices"

	"github.com/ifisp/ifisp/pkg/ra"
)

// announce tells the router advertisement sender what each LAN's prefixes
// are now, from the registry's links and their health: a link's prefix is
// deprecated while the link is down and another link on the same LAN is
// up (last resort, as for the defaults: when every ISP of a LAN is down,
// none is deprecated). A link that left the registry (ifdown) is left out,
// and the sender announces it as gone.
func (d *daemon) announce() {
	if d.ra == nil {
		return
	}
	var onLAN []*link
	anyUp := map[string]bool{}
	for _, key := range d.keys() {
		l := d.links[key]
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
	d.ra.Set(lans)
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
