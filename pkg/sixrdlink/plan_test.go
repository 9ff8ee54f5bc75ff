package sixrdlink

import (
	"net/netip"
	"testing"

	"github.com/ifisp/ifisp/pkg/lan"
	"github.com/ifisp/ifisp/pkg/stanza"
)

func TestNewPlan(t *testing.T) {
	p := netip.MustParsePrefix
	for _, tc := range []struct {
		name string
		s    stanza.SixRD
		lan  *stanza.LAN
		v4   string
		want Plan
	}{
		{"tunnel numbered, 6rd prefix length", stanza.SixRD{Prefix: p("2001:db8::/32"), Relay: netip.MustParseAddr("192.0.2.254")}, nil, "192.0.2.1",
			Plan{Delegated: p("2001:db8:c000:201::/64"), RelayPrefix: p("0.0.0.0/0"), NextHop: netip.MustParseAddr("::192.0.2.254"), Address: p("2001:db8:c000:201::1/32")}},
		{"LAN subnet 5 of a /56", stanza.SixRD{Prefix: p("2001:db8::/32"), IPv4MaskLen: 8, Relay: netip.MustParseAddr("192.0.2.254")}, &stanza.LAN{Option: "6rd-lan", Value: "lan0:5", Iface: "lan0", Subnet: 5}, "192.0.2.1",
			Plan{Delegated: p("2001:db8:2:100::/56"), RelayPrefix: p("192.0.0.0/8"), NextHop: netip.MustParseAddr("::192.0.2.254"), Address: p("2001:db8:2:105::1/64"),
				LAN: lan.Subnet{Iface: "lan0", Prefix: p("2001:db8:2:105::/64")}}},
	} {
		c := &stanza.Config{Iface: "sixrd", Family: stanza.Inet6, SixRD: &tc.s, LAN: tc.lan}
		tc.want.Local = netip.MustParseAddr(tc.v4)
		got, err := NewPlan(c, tc.want.Local)
		if err != nil || got != tc.want {
			t.Errorf("%s: got %+v, %v\nwant %+v", tc.name, got, err, tc.want)
		}
	}
	c := &stanza.Config{Iface: "sixrd", SixRD: &stanza.SixRD{Prefix: p("2001:db8::/32"), IPv4MaskLen: 8},
		LAN: &stanza.LAN{Option: "6rd-lan", Value: "lan0:100", Iface: "lan0", Subnet: 0x100}}
	if _, err := NewPlan(c, netip.MustParseAddr("192.0.2.1")); err == nil {
		t.Error("subnet 0x100 of a /56: no error")
	}
}
