package watch

import (
	"net/netip"
	"testing"
	"time"

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

// TestLANPrefixesExpire: a prefix's advertisements end with its lease: a
// delegated prefix's own, a 6rd prefix's that of 6rd-local's IPv4 lease.
func TestLANPrefixesExpire(t *testing.T) {
	p := netip.MustParsePrefix
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	pd := &registry.Lifetimes{Preferred: t0.Add(30 * time.Second), Valid: t0.Add(time.Minute)}
	v4 := &registry.Lifetimes{Preferred: t0.Add(time.Hour), Valid: t0.Add(time.Hour)}
	links := []*link{
		{reg: registry.Link{Iface: "wana", Family: "inet6", LAN: &lan.Subnet{Iface: "lan0", Prefix: p("2001:db8:a:100::/64")}, Expires: pd}},
		{reg: registry.Link{Iface: "wanb", Family: "inet", Expires: v4}},
		{reg: registry.Link{Iface: "tun6rd", Family: "inet6", LAN: &lan.Subnet{Iface: "lan0", Prefix: p("2001:db8:c:100::/64")}, Stanza: []string{"IF_6RD_LOCAL=wanb"}}},
		{reg: registry.Link{Iface: "wanc", Family: "inet6", LAN: &lan.Subnet{Iface: "lan1", Prefix: p("2001:db8:d:100::/64")}}},
	}
	want := map[string][]ra.Prefix{
		"lan0": {
			{Prefix: p("2001:db8:a:100::/64"), PreferredUntil: pd.Preferred, ValidUntil: pd.Valid},
			{Prefix: p("2001:db8:c:100::/64"), PreferredUntil: v4.Preferred, ValidUntil: v4.Valid},
		},
		"lan1": {{Prefix: p("2001:db8:d:100::/64")}},
	}
	if d := cmp.Diff(want, lanPrefixes(links), cmp.Comparer(func(x, y netip.Prefix) bool { return x == y })); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
}
