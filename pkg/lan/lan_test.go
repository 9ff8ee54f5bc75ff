package lan

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/ifisp/ifisp/pkg/stanza"
)

func TestNative(t *testing.T) {
	p := netip.MustParsePrefix
	c := &stanza.Config{Iface: "wanb", Family: stanza.Inet6,
		Sources: []netip.Prefix{p("2001:db8:b::64/122"), p("2001:db8:b100::/56")}, Throw: []netip.Prefix{p("fc00::/7")},
		LAN: &stanza.LAN{Option: "isp-lan", Value: "lan0:2a", Iface: "lan0", Subnet: 0x2a}}
	s, ok, err := Native(c)
	if want := (Subnet{Iface: "lan0", Prefix: p("2001:db8:b100:2a::/64")}); err != nil || !ok || s != want {
		t.Fatalf("Native: %+v, %v, %v; want %+v (the first isp-source of /64 or shorter)", s, ok, err, want)
	}
	if a := s.Address(); a != p("2001:db8:b100:2a::1/64") {
		t.Errorf("Address: %s", a)
	}
	r := Routed(c, s)
	if !slices.Equal(r.Throw, []netip.Prefix{p("fc00::/7"), p("2001:db8:b100:2a::/64")}) || len(c.Throw) != 1 {
		t.Errorf("Routed: throw %v, the stanza's %v", r.Throw, c.Throw)
	}
	c.LAN.Subnet = 0x100
	if _, _, err := Native(c); err == nil {
		t.Error("subnet 100 of a /56: no error")
	}
	c.LAN = nil
	if _, ok, err := Native(c); ok || err != nil {
		t.Errorf("without isp-lan: %v, %v", ok, err)
	}
	c.LAN, c.SixRD = &stanza.LAN{Iface: "lan0"}, &stanza.SixRD{}
	if _, ok, err := Native(c); ok || err != nil {
		t.Errorf("a 6rd stanza (its subnet is the delegated prefix's): %v, %v", ok, err)
	}
}
