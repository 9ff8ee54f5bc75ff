package watch

import (
	"math"
	"slices"

	"github.com/ifisp/ifisp/pkg/ra"
	"github.com/ifisp/ifisp/pkg/registry"
	"github.com/ifisp/ifisp/pkg/stanza"
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
	lans := lanPrefixes(links)
	for _, lan := range d.coming {
		lans[lan] = lans[lan] // opened, to hear the others while nothing is announced
	}
	d.ra.Set(lans)
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
		p := ra.Prefix{
			Prefix:     l.reg.LAN.Prefix,
			Deprecated: l.health.state == Down && anyUp[lan],
			RDNSS:      l.reg.RDNSS,
		}
		if exp := expires(l, links); exp != nil {
			p.PreferredUntil, p.ValidUntil = exp.Preferred, exp.Valid
		}
		lans[lan] = append(lans[lan], p)
	}
	return lans
}

// expires is when the lease of l's prefix ends: its delegation's, or for
// a 6rd prefix, the lease of its IPv4 address (6rd-local's link); nil
// when no end is known.
func expires(l *link, links []*link) *registry.Lifetimes {
	local := l.reg.StanzaValue("IF_6RD_LOCAL")
	if local == "" {
		return l.reg.Expires
	}
	for _, v4 := range links {
		if v4.reg.Iface == local && v4.reg.Family == stanza.Inet {
			return v4.reg.Expires
		}
	}
	return nil
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
