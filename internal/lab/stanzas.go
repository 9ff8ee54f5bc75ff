package lab

import (
	"fmt"
	"slices"
	"strings"
)

// TwoISPs is the lab's interfaces file: ISP B preferred, ISP A backup. The
// two styles of main-table default are both used: wanb's comes from
// ifupdown's own `gateway`/`metric`, wana's from isp-metric.
const TwoISPs = `
iface wana inet static
	address 198.51.100.2/24
	isp-table ispa
	isp-gateway 198.51.100.1
	isp-metric 1
	isp-source 198.51.100.64/28
	snat-from 10.1.0.0/24

iface wana inet6 static
	address 2001:db8:a::2/64
	isp-table ispa
	isp-gateway 2001:db8:a::1
	isp-metric 2

iface wanb inet static
	address 203.0.113.2/24
	gateway 203.0.113.1
	isp-table ispb
	snat-from 10.1.0.0/24

iface wanb inet6 static
	address 2001:db8:b::2/64
	gateway 2001:db8:b::1
	metric 1
	isp-table ispb
`

// SeedRoutes is the seed site's recipe for the same routing as TwoISPs,
// done by hand with `up`/`down` lines: the baseline ifisp is measured
// against.
const SeedRoutes = `
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

// Seed is the seed site's whole recipe: SeedRoutes plus SNAT and the
// `conntrack -D --src-nat` lines docs/design.md measured failing.
var Seed = strings.NewReplacer(
	"\tup ip rule add from 198.51.100.2 lookup ispa pref 10000\n",
	"\tup ip rule add from 198.51.100.2 lookup ispa pref 10000\n"+seedNAT("up", "wana", "198.51.100.2"),
	"\tup ip rule add from 203.0.113.2 lookup ispb pref 10000\n",
	"\tup ip rule add from 203.0.113.2 lookup ispb pref 10000\n"+seedNAT("up", "wanb", "203.0.113.2"),
	"\tdown ip rule del from 198.51.100.2 lookup ispa pref 10000\n",
	seedNAT("down", "wana", "198.51.100.2")+"\tdown ip rule del from 198.51.100.2 lookup ispa pref 10000\n",
	"\tdown ip rule del from 203.0.113.2 lookup ispb pref 10000\n",
	seedNAT("down", "wanb", "203.0.113.2")+"\tdown ip rule del from 203.0.113.2 lookup ispb pref 10000\n",
).Replace(SeedRoutes)

func seedNAT(phase, iface, addr string) string {
	op := "-A"
	if phase == "down" {
		op = "-D"
	}
	return "\t" + phase + " iptables -t nat " + op + " POSTROUTING -o " + iface + " -s 10.1.0.0/24 -j SNAT --to-source " + addr + "\n" +
		"\t" + phase + " conntrack -D --src-nat || true\n"
}

// Replace returns the interfaces file file with the stanza of iface and
// family (its lines up to the next blank line) replaced by stanza, which
// starts with its own `iface` line, or removed when stanza is empty. The
// blank lines around it stay the file's. It panics when file has no such
// stanza: the lab's files are constants, and a test built on a stanza
// that is not there would test something else.
func Replace(file, iface, family, stanza string) string {
	blocks := strings.Split(file, "\n\n")
	for i, b := range blocks {
		body := strings.Trim(b, "\n")
		if !strings.HasPrefix(body, "iface "+iface+" "+family+" ") {
			continue
		}
		lead, trail, _ := strings.Cut(b, body)
		if stanza != "" {
			blocks[i] = lead + strings.Trim(stanza, "\n") + trail
			return strings.Join(blocks, "\n\n")
		}
		// The file's first and last newlines stay where they were.
		if i == 0 && len(blocks) > 1 {
			blocks[1] = lead + blocks[1]
		} else if i == len(blocks)-1 && i > 0 {
			blocks[i-1] += trail
		}
		return strings.Join(slices.Delete(blocks, i, i+1), "\n\n")
	}
	panic(fmt.Sprintf("lab.Replace: no stanza %s %s", iface, family))
}
