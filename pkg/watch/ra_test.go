package watch

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ifisp/ifisp/pkg/lan"
	"github.com/ifisp/ifisp/pkg/policy"
	"github.com/ifisp/ifisp/pkg/ra"
	"github.com/ifisp/ifisp/pkg/registry"
)

// TestLANPrefixes: which prefixes each LAN announces deprecated, in which
// order, for the links' states.
func TestLANPrefixes(t *testing.T) {
	p := netip.MustParsePrefix
	dns := netip.MustParseAddr("2001:db8:b::53")
	mk := func(iface, lanIface, prefix string, metric int, state State) *link {
		reg := registry.Link{Iface: iface, Family: "inet6", Defaults: []policy.Default{{Metric: metric}}}
		if lanIface != "" {
			reg.LAN = &lan.Subnet{Iface: lanIface, Prefix: p(prefix)}
		}
		if iface == "wanb" {
			reg.RDNSS = []netip.Addr{dns}
		}
		return &link{reg: reg, health: health{state: state}}
	}
	b := func(dep bool) ra.Prefix {
		return ra.Prefix{Prefix: p("2001:db8:b:100::/64"), Deprecated: dep, RDNSS: []netip.Addr{dns}}
	}
	a := func(dep bool) ra.Prefix { return ra.Prefix{Prefix: p("2001:db8:a:100::/64"), Deprecated: dep} }
	for _, tc := range []struct {
		name  string
		links []*link
		want  map[string][]ra.Prefix
	}{
		{"both up: B (metric 1) last", []*link{mk("wana", "lan0", "2001:db8:a:100::/64", 2, Up), mk("wanb", "lan0", "2001:db8:b:100::/64", 1, Up)},
			map[string][]ra.Prefix{"lan0": {a(false), b(false)}}},
		{"A preferred: A last", []*link{mk("wana", "lan0", "2001:db8:a:100::/64", 1, Up), mk("wanb", "lan0", "2001:db8:b:100::/64", 2, Up)},
			map[string][]ra.Prefix{"lan0": {b(false), a(false)}}},
		{"B down, A up: B deprecated", []*link{mk("wana", "lan0", "2001:db8:a:100::/64", 2, Up), mk("wanb", "lan0", "2001:db8:b:100::/64", 1, Down)},
			map[string][]ra.Prefix{"lan0": {a(false), b(true)}}},
		{"both down: last resort", []*link{mk("wana", "lan0", "2001:db8:a:100::/64", 2, Down), mk("wanb", "lan0", "2001:db8:b:100::/64", 1, Down)},
			map[string][]ra.Prefix{"lan0": {a(false), b(false)}}},
		{"per LAN: B alone on lan1 and down is kept", []*link{mk("wana", "lan0", "2001:db8:a:100::/64", 2, Up), mk("wanb", "lan1", "2001:db8:b:100::/64", 1, Down)},
			map[string][]ra.Prefix{"lan0": {a(false)}, "lan1": {b(false)}}},
		{"links without isp-lan announce nothing", []*link{mk("wana", "", "", 2, Up)}, map[string][]ra.Prefix{}},
	} {
		got := lanPrefixes(tc.links)
		if d := cmp.Diff(tc.want, got, cmp.Comparer(func(x, y netip.Prefix) bool { return x == y }), cmp.Comparer(func(x, y netip.Addr) bool { return x == y })); d != "" {
			t.Errorf("%s (-want +got):\n%s", tc.name, d)
		}
	}
}
