package ra

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/mdlayher/ndp"
)

var (
	pa   = netip.MustParsePrefix("2001:db8:a:100::/64")
	pb   = netip.MustParsePrefix("2001:db8:b:100::/64")
	dnsA = netip.MustParseAddr("2001:db8:a::53")
	dnsB = netip.MustParseAddr("2001:db8:b::53")
	t0   = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
)

func pio(p netip.Prefix, valid, preferred time.Duration) *ndp.PrefixInformation {
	return &ndp.PrefixInformation{PrefixLength: 64, OnLink: true, AutonomousAddressConfiguration: true,
		ValidLifetime: valid, PreferredLifetime: preferred, Prefix: p.Addr()}
}

// TestMessage: the advertisement RFC 8475 wants in each state of two ISPs.
func TestMessage(t *testing.T) {
	mac := net.HardwareAddr{2, 0, 0, 0, 0, 1}
	lla := &ndp.LinkLayerAddress{Direction: ndp.Source, Addr: mac}
	for _, tc := range []struct {
		name    string
		entries []entry
		at      time.Time
		want    *ndp.RouterAdvertisement
	}{
		{"both up", []entry{{Prefix: Prefix{Prefix: pa, RDNSS: []netip.Addr{dnsA}}}, {Prefix: Prefix{Prefix: pb, RDNSS: []netip.Addr{dnsB, dnsA}}}}, t0,
			&ndp.RouterAdvertisement{CurrentHopLimit: 64, RouterLifetime: RouterLifetime, Options: []ndp.Option{
				pio(pa, ValidLifetime, PreferredLifetime), pio(pb, ValidLifetime, PreferredLifetime),
				&ndp.RecursiveDNSServer{Lifetime: RDNSSLifetime, Servers: []netip.Addr{dnsA, dnsB}}, lla}}},
		{"B down: deprecated, valid kept, its resolver withdrawn", []entry{{Prefix: Prefix{Prefix: pa, RDNSS: []netip.Addr{dnsA}}}, {Prefix: Prefix{Prefix: pb, Deprecated: true, RDNSS: []netip.Addr{dnsB}}}}, t0,
			&ndp.RouterAdvertisement{CurrentHopLimit: 64, RouterLifetime: RouterLifetime, Options: []ndp.Option{
				pio(pa, ValidLifetime, PreferredLifetime), pio(pb, ValidLifetime, 0),
				&ndp.RecursiveDNSServer{Lifetime: RDNSSLifetime, Servers: []netip.Addr{dnsA}},
				&ndp.RecursiveDNSServer{Lifetime: 0, Servers: []netip.Addr{dnsB}}, lla}}},
		{"B gone an hour ago: deprecated, valid lifetime running out", []entry{{Prefix: Prefix{Prefix: pb}, gone: t0}, {Prefix: Prefix{Prefix: pa}}}, t0.Add(time.Hour + 500*time.Millisecond),
			&ndp.RouterAdvertisement{CurrentHopLimit: 64, RouterLifetime: RouterLifetime, Options: []ndp.Option{
				pio(pb, ValidLifetime-time.Hour-time.Second, 0), pio(pa, ValidLifetime, PreferredLifetime), lla}}},
		{"all gone: no default router any more", []entry{{Prefix: Prefix{Prefix: pb}, gone: t0}}, t0.Add(time.Second),
			&ndp.RouterAdvertisement{CurrentHopLimit: 64, Options: []ndp.Option{pio(pb, ValidLifetime-time.Second, 0), lla}}},
		{"gone longer than its valid lifetime: left out", []entry{{Prefix: Prefix{Prefix: pb}, gone: t0}, {Prefix: Prefix{Prefix: pa}}}, t0.Add(ValidLifetime),
			&ndp.RouterAdvertisement{CurrentHopLimit: 64, RouterLifetime: RouterLifetime, Options: []ndp.Option{pio(pa, ValidLifetime, PreferredLifetime), lla}}},
		{"delegated for 60 s, preferred 30 s: never promised longer (RFC 9096 L-15)", []entry{{Prefix: Prefix{Prefix: pa, PreferredUntil: t0.Add(30 * time.Second), ValidUntil: t0.Add(time.Minute)}}}, t0.Add(500 * time.Millisecond),
			&ndp.RouterAdvertisement{CurrentHopLimit: 64, RouterLifetime: RouterLifetime, Options: []ndp.Option{pio(pa, 59*time.Second, 29*time.Second), lla}}},
		{"a delegation preferred past its valid lifetime: preferred no longer than valid", []entry{{Prefix: Prefix{Prefix: pa, PreferredUntil: t0.Add(time.Hour), ValidUntil: t0.Add(100 * time.Second)}}}, t0,
			&ndp.RouterAdvertisement{CurrentHopLimit: 64, RouterLifetime: RouterLifetime, Options: []ndp.Option{pio(pa, 100*time.Second, 100*time.Second), lla}}},
		{"a delegation that ran out: left out", []entry{{Prefix: Prefix{Prefix: pa, ValidUntil: t0}}, {Prefix: Prefix{Prefix: pb}}}, t0,
			&ndp.RouterAdvertisement{CurrentHopLimit: 64, RouterLifetime: RouterLifetime, Options: []ndp.Option{pio(pb, ValidLifetime, PreferredLifetime), lla}}},
		{"a delegated prefix gone: what was left of its delegation, counting down", []entry{{Prefix: Prefix{Prefix: pb, ValidUntil: t0.Add(time.Minute)}, gone: t0}, {Prefix: Prefix{Prefix: pa}}}, t0.Add(10 * time.Second),
			&ndp.RouterAdvertisement{CurrentHopLimit: 64, RouterLifetime: RouterLifetime, Options: []ndp.Option{pio(pb, 50*time.Second, 0), pio(pa, ValidLifetime, PreferredLifetime), lla}}},
	} {
		got := message(tc.entries, mac, tc.at)
		if d := cmp.Diff(tc.want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); d != "" {
			t.Errorf("%s (-want +got):\n%s", tc.name, d)
		}
		if _, err := ndp.MarshalMessage(got); err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}

// TestMerge: which updates are changes to announce at once, and what a
// prefix that leaves the list becomes.
func TestMerge(t *testing.T) {
	up := []Prefix{{Prefix: pa}, {Prefix: pb}}
	e, changed := merge(nil, up, t0)
	if !changed || len(e) != 2 {
		t.Fatalf("first list: changed %v, %d entries", changed, len(e))
	}
	if _, changed = merge(e, up, t0); changed {
		t.Error("the same list again: changed")
	}
	if _, changed = merge(e, []Prefix{{Prefix: pb}, {Prefix: pa}}, t0); !changed {
		t.Error("another order (another preferred ISP): not changed")
	}
	if _, changed = merge(e, []Prefix{{Prefix: pa}, {Prefix: pb, Deprecated: true}}, t0); !changed {
		t.Error("B deprecated: not changed")
	}
	if _, changed = merge(e, []Prefix{{Prefix: pa}, {Prefix: pb, RDNSS: []netip.Addr{dnsB}}}, t0); !changed {
		t.Error("B's resolvers: not changed")
	}
	leased := []Prefix{{Prefix: pa}, {Prefix: pb, PreferredUntil: t0.Add(time.Minute), ValidUntil: t0.Add(time.Hour)}}
	if _, changed = merge(e, leased, t0); !changed {
		t.Error("B's lifetimes cut to its delegation's: not changed")
	}
	l, _ := merge(nil, leased, t0)
	renewed := []Prefix{{Prefix: pa}, {Prefix: pb, PreferredUntil: t0.Add(2 * time.Minute), ValidUntil: t0.Add(2 * time.Hour)}}
	if _, changed = merge(l, renewed, t0.Add(time.Minute)); changed {
		t.Error("B's delegation renewed (lifetimes extended): changed")
	}
	gone, changed := merge(e, []Prefix{{Prefix: pa}}, t0)
	if !changed || len(gone) != 2 || gone[0].Prefix.Prefix != pb || !gone[0].gone.Equal(t0) {
		t.Fatalf("B left the list: changed %v, entries %+v; want B first, gone at t0", changed, gone)
	}
	if again, changed := merge(gone, []Prefix{{Prefix: pa}}, t0.Add(time.Minute)); changed || !again[0].gone.Equal(t0) {
		t.Errorf("B still gone a minute later: changed %v, gone at %v", changed, again[0].gone)
	}
	if back, changed := merge(gone, up, t0.Add(time.Minute)); !changed || !back[1].gone.IsZero() {
		t.Errorf("B back: changed %v, entries %+v", changed, back)
	}
	if left, _ := merge(gone, []Prefix{{Prefix: pa}}, t0.Add(ValidLifetime)); len(left) != 1 {
		t.Errorf("B gone for its valid lifetime: still %d entries", len(left))
	}
}
