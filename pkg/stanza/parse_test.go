package stanza

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/ifisp/ifisp/pkg/connmark"
)

const root = "../../testdata/rt"

// The highest table number and metric: 4294967295, or less where an int
// has 32 bits.
var (
	outOfRange = fmt.Sprintf("table number out of range (1 to %d)", maxUint32)
	notMetric  = fmt.Sprintf("not a metric (a number from 0 to %d)", maxUint32)
)

// env builds ifupdown's environment for a stanza: the base variables, then
// "option value" lines as IF_* variables, as ifupdown exports them.
func env(iface, family, method string, options ...string) []string {
	e := []string{"IFACE=" + iface, "LOGICAL=" + iface, "ADDRFAM=" + family, "METHOD=" + method,
		"MODE=start", "PHASE=post-up", "VERBOSITY=0", "PATH=/usr/sbin:/usr/bin"}
	for _, o := range options {
		name, value, _ := strings.Cut(o, " ")
		e = append(e, "IF_"+strings.ToUpper(strings.ReplaceAll(name, "-", "_"))+"="+value)
	}
	return e
}

// equate compares netip values by value.
var equate = cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})

func TestParseGood(t *testing.T) {
	a := netip.MustParseAddr
	p := netip.MustParsePrefix
	for _, tc := range []struct {
		name string
		env  []string
		want *Config
	}{
		{"inet static, ispa by name", env("wana", "inet", "static",
			"address 198.51.100.2", "netmask 255.255.255.0", "gateway 198.51.100.1", "metric 3",
			"isp-table ispa", "isp-metric 1", "isp-source 198.51.100.64/28 192.0.2.0/29",
			"snat-from 10.1.0.0/24", "isp-check 192.0.2.1 192.0.2.2", "isp-check-interval 500ms"),
			&Config{
				Iface: "wana", Logical: "wana", Family: Inet, Method: "static", Mode: "start", Phase: "post-up",
				Address: p("198.51.100.2/24"), Gateway: a("198.51.100.1"), GatewayMetric: 3,
				Table: 100, TableName: "ispa", ISPGateway: a("198.51.100.1"), Metric: 1,
				Sources:       []netip.Prefix{p("198.51.100.64/28"), p("192.0.2.0/29")},
				Throw:         []netip.Prefix{p("10.0.0.0/8"), p("172.16.0.0/12"), p("192.168.0.0/16")},
				SNATFrom:      []netip.Prefix{p("10.1.0.0/24")},
				Check:         []netip.Addr{a("192.0.2.1"), a("192.0.2.2")},
				CheckInterval: 500 * time.Millisecond, CheckDown: DefaultCheckDown, CheckUp: DefaultCheckUp,
				Mark: connmark.Mark{ID: 100, Mask: connmark.DefaultMask}, Inbound: true,
			}},
		{"inet static, ispb by number, isp-gateway and snat-to", env("wanb", "inet", "static",
			"address 203.0.113.2/24", "isp-table 101", "isp-gateway 203.0.113.1", "isp-metric 0",
			"snat-from 10.1.0.0/24 10.2.0.0/16", "snat-to 203.0.113.3", "isp-throw 10.0.0.0/8",
			"isp-check-down 3", "isp-check-up 7", "isp-mark 5", "isp-sticky yes"),
			&Config{
				Iface: "wanb", Logical: "wanb", Family: Inet, Method: "static", Mode: "start", Phase: "post-up",
				Address: p("203.0.113.2/24"), GatewayMetric: -1,
				Table: 101, TableName: "101", ISPGateway: a("203.0.113.1"), Metric: 0,
				Throw:    []netip.Prefix{p("10.0.0.0/8")},
				SNATFrom: []netip.Prefix{p("10.1.0.0/24"), p("10.2.0.0/16")}, SNATTo: a("203.0.113.3"),
				CheckInterval: DefaultCheckInterval, CheckDown: 3, CheckUp: 7,
				Mark: connmark.Mark{ID: 5, Mask: connmark.DefaultMask}, Inbound: true, Sticky: true,
			}},
		{"inet6 static, ispb by hex number in rt_tables", env("wanb", "inet6", "static",
			"address 2001:db8:b::2", "netmask 64", "gateway fe80::1", "isp-table ispb",
			"isp-source 2001:db8:b100::/56", "isp-throw fc00::/7 2001:db8:ffff::/48", "isp-check 2001:db8::53",
			"isp-mark-mask 0xff00", "isp-inbound no"),
			&Config{
				Iface: "wanb", Logical: "wanb", Family: Inet6, Method: "static", Mode: "start", Phase: "post-up",
				Address: p("2001:db8:b::2/64"), Gateway: a("fe80::1"), GatewayMetric: -1,
				Table: 101, TableName: "ispb", ISPGateway: a("fe80::1"), Metric: -1,
				Sources:       []netip.Prefix{p("2001:db8:b100::/56")},
				Throw:         []netip.Prefix{p("fc00::/7"), p("2001:db8:ffff::/48")},
				Check:         []netip.Addr{a("2001:db8::53")},
				CheckInterval: DefaultCheckInterval, CheckDown: DefaultCheckDown, CheckUp: DefaultCheckUp,
				Mark: connmark.Mark{ID: 101, Mask: 0xff00}, Inbound: false,
			}},
		{"inet6 static without netmask: a host prefix, as ip addr add gives", env("wana", "inet6", "static",
			"address 2001:db8:a::2", "gateway 2001:db8:a::1", "isp-table ispa"),
			&Config{
				Iface: "wana", Logical: "wana", Family: Inet6, Method: "static", Mode: "start", Phase: "post-up",
				Address: p("2001:db8:a::2/128"), Gateway: a("2001:db8:a::1"), GatewayMetric: -1,
				Table: 100, TableName: "ispa", ISPGateway: a("2001:db8:a::1"), Metric: -1,
				Throw:         []netip.Prefix{p("fc00::/7")},
				CheckInterval: DefaultCheckInterval, CheckDown: DefaultCheckDown, CheckUp: DefaultCheckUp,
				Mark: connmark.Mark{ID: 100, Mask: connmark.DefaultMask}, Inbound: true,
			}},
		{"inet dhcp: address and gateway from the kernel later", env("wana", "inet", "dhcp", "isp-table cable"),
			&Config{
				Iface: "wana", Logical: "wana", Family: Inet, Method: "dhcp", Mode: "start", Phase: "post-up",
				GatewayMetric: -1, Table: 102, TableName: "cable", Metric: -1,
				Throw:         []netip.Prefix{p("10.0.0.0/8"), p("172.16.0.0/12"), p("192.168.0.0/16")},
				CheckInterval: DefaultCheckInterval, CheckDown: DefaultCheckDown, CheckUp: DefaultCheckUp,
				Mark: connmark.Mark{ID: 102, Mask: connmark.DefaultMask}, Inbound: true,
			}},
		{"inet6 v4tunnel with 6rd, opted in by 6rd-prefix", env("sixrd", "inet6", "v4tunnel", "local 203.0.113.2",
			"6rd-prefix 2001:db8::/32", "6rd-relay 192.0.2.254", "6rd-ipv4-masklen 8", "6rd-local wana",
			"6rd-lan lan0:ff"),
			&Config{
				Iface: "sixrd", Logical: "sixrd", Family: Inet6, Method: "v4tunnel", Mode: "start", Phase: "post-up",
				GatewayMetric: -1, Metric: -1,
				Throw:         []netip.Prefix{p("fc00::/7")},
				CheckInterval: DefaultCheckInterval, CheckDown: DefaultCheckDown, CheckUp: DefaultCheckUp,
				Mark: connmark.Mark{ID: 0, Mask: connmark.DefaultMask}, Inbound: true,
				SixRD: &SixRD{Prefix: p("2001:db8::/32"), Relay: a("192.0.2.254"), IPv4MaskLen: 8,
					LocalIface: "wana"},
				LAN: &LAN{Option: "6rd-lan", Value: "lan0:ff", Iface: "lan0", Subnet: 0xff},
			}},
		{"6rd-local as an address, a /64 delegated", env("sixrd", "inet6", "v4tunnel", "local 203.0.113.2",
			"6rd-prefix 2001:db8::/32", "6rd-relay 192.0.2.254", "6rd-local 198.51.100.2", "6rd-lan lan0"),
			&Config{
				Iface: "sixrd", Logical: "sixrd", Family: Inet6, Method: "v4tunnel", Mode: "start", Phase: "post-up",
				GatewayMetric: -1, Metric: -1,
				Throw:         []netip.Prefix{p("fc00::/7")},
				CheckInterval: DefaultCheckInterval, CheckDown: DefaultCheckDown, CheckUp: DefaultCheckUp,
				Mark: connmark.Mark{ID: 0, Mask: connmark.DefaultMask}, Inbound: true,
				SixRD: &SixRD{Prefix: p("2001:db8::/32"), Relay: a("192.0.2.254"),
					LocalAddr: a("198.51.100.2")},
				LAN: &LAN{Option: "6rd-lan", Value: "lan0", Iface: "lan0"},
			}},
		{"inet6 with its LAN numbered from isp-source", env("wana", "inet6", "static", "address 2001:db8:a::2/64", "isp-gateway 2001:db8:a::1",
			"isp-table ispa", "isp-source 2001:db8:a100::/56", "isp-lan lan0:2", "isp-rdnss 2001:db8:a100:2::1 2001:db8:a::53"),
			&Config{
				Iface: "wana", Logical: "wana", Family: Inet6, Method: "static", Mode: "start", Phase: "post-up",
				Address: p("2001:db8:a::2/64"), ISPGateway: a("2001:db8:a::1"), GatewayMetric: -1, Table: 100, TableName: "ispa", Metric: -1,
				Sources: []netip.Prefix{p("2001:db8:a100::/56")}, Throw: []netip.Prefix{p("fc00::/7")},
				CheckInterval: DefaultCheckInterval, CheckDown: DefaultCheckDown, CheckUp: DefaultCheckUp,
				Mark: connmark.Mark{ID: 100, Mask: connmark.DefaultMask}, Inbound: true,
				LAN:   &LAN{Option: "isp-lan", Value: "lan0:2", Iface: "lan0", Subnet: 2},
				RDNSS: []netip.Addr{a("2001:db8:a100:2::1"), a("2001:db8:a::53")},
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse(tc.env, root)
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tc.want, got, equate, cmpopts.IgnoreFields(Config{}, "Env")); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}

// Env is the stanza and nothing else: not the phase, which ifisp-lease
// sets, nor the rest of the hook's environment.
func TestParseEnv(t *testing.T) {
	got, err := Parse([]string{"PATH=/usr/sbin:/usr/bin", "IFACE=wanb", "LOGICAL=wanb", "ADDRFAM=inet", "METHOD=dhcp",
		"MODE=start", "PHASE=post-up", "VERBOSITY=0", "IF_ISP_TABLE=200", "IF_SNAT_FROM=10.1.0.0/24"}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"ADDRFAM=inet", "IFACE=wanb", "IF_ISP_TABLE=200", "IF_SNAT_FROM=10.1.0.0/24", "LOGICAL=wanb", "METHOD=dhcp"}
	if d := cmp.Diff(want, got.Env); d != "" {
		t.Errorf("Env (-want +got):\n%s", d)
	}
}

func TestLookupTable(t *testing.T) {
	for _, tc := range []struct {
		name string
		want int
	}{
		{"ispa", 100},  // /etc/iproute2/rt_tables, before usr/share's 150
		{"ispb", 101},  // rt_tables.d/isp.conf, in hex
		{"cable", 102}, // /usr/share/iproute2/rt_tables
		{"main", 254},  // reserved numbers are the caller's call
		{"unspec", 0},  //
		{"7", 7},       // numbers are themselves
		{"0x10", 16},   //
		{"010", 10},    // decimal, not octal
		{strconv.Itoa(maxUint32), maxUint32},
	} {
		n, err := LookupTable(root, tc.name)
		if err != nil || n != tc.want {
			t.Errorf("LookupTable(%q) = %d, %v; want %d", tc.name, n, err, tc.want)
		}
	}
	for _, tc := range []struct{ name, want string }{
		{"telco", "no such table"},
		{"-1", outOfRange},
		{"4294967296", outOfRange},
		{"0x100000000", outOfRange},
		{"broken", root + `/etc/iproute2/rt_tables.d/broken.conf: table broken: "1x" is not a number`},
	} {
		if n, err := LookupTable(root, tc.name); err == nil || err.Error() != tc.want {
			t.Errorf("LookupTable(%q) = %d, %v; want %q", tc.name, n, err, tc.want)
		}
	}
	if _, err := LookupTable(root, "telco"); !errors.Is(err, ErrNoTable) {
		t.Errorf("LookupTable(telco): %v is not ErrNoTable", err)
	}
	if n, err := LookupTable(t.TempDir(), "ispa"); !errors.Is(err, ErrNoTable) {
		t.Errorf("LookupTable without any rt_tables: got %d, %v; want ErrNoTable", n, err)
	}
}

func TestParseNotOptedIn(t *testing.T) {
	for _, e := range [][]string{
		env("lo", "inet", "loopback"),
		env("lan0", "inet", "static", "address 10.1.0.1/24"),
		env("lan0", "inet6", "static", "address 2001:db8:1::1/64", "accept-ra 0"),
		env("--all", "inet", "", "isp-table ispa"),
		env("wana", "ipx", "static", "isp-table ispa"),
		env("wana", "can", "static", "isp-table ispa"),
		{"ADDRFAM=inet"},
	} {
		if c, err := Parse(e, root); !errors.Is(err, ErrNotOptedIn) || c != nil {
			t.Errorf("%v: got %+v, %v; want ErrNotOptedIn", e, c, err)
		}
	}
}

// TestParseErrors is the user interface of a refused stanza: one line per
// problem, naming interface, option and value, saying what to do.
func TestParseErrors(t *testing.T) {
	v4 := func(o ...string) []string {
		return env("wana", "inet", "static", append([]string{"address 198.51.100.2/24", "gateway 198.51.100.1", "isp-table ispa"}, o...)...)
	}
	v6 := func(o ...string) []string {
		return env("wana", "inet6", "static", append([]string{"address 2001:db8:a::2/64", "gateway 2001:db8:a::1", "isp-table ispa"}, o...)...)
	}
	table := func(v string) []string {
		return env("wana", "inet", "static", "address 198.51.100.2/24", "gateway 198.51.100.1", "isp-table "+v)
	}
	tunnel := func(o ...string) []string {
		return env("sixrd", "inet6", "v4tunnel", append([]string{"local 203.0.113.2"}, o...)...)
	}
	const reserved = `reserved table (0, 253, 254, 255 are refused)`
	for _, tc := range []struct {
		env  []string
		want string
	}{
		// isp-table
		{table("main"), `wana: isp-table "main": ` + reserved},
		{table("local"), `wana: isp-table "local": ` + reserved},
		{table("unspec"), `wana: isp-table "unspec": ` + reserved},
		{table("255"), `wana: isp-table "255": ` + reserved},
		{table("254"), `wana: isp-table "254": ` + reserved},
		{table("0xfd"), `wana: isp-table "0xfd": ` + reserved},
		{table("0"), `wana: isp-table "0": ` + reserved},
		{table("telco"),
			`wana: isp-table "telco": no such table in /etc/iproute2/rt_tables, rt_tables.d/*.conf or /usr/share/iproute2/rt_tables (add "NUMBER telco" to /etc/iproute2/rt_tables.d/isp.conf, or give a number)`},
		{table("4294967296"), `wana: isp-table "4294967296": ` + outOfRange},
		{table("99999999999999999999999"), `wana: isp-table "99999999999999999999999": ` + outOfRange},
		{table("-1"), `wana: isp-table "-1": ` + outOfRange},
		{table("1;reboot"), `wana: isp-table "1;reboot": not a table name or number`},
		{table("$(reboot)"), `wana: isp-table "$(reboot)": not a table name or number`},
		{table(""), `wana: isp-table: not a table name or number`},
		// ifupdown's own options
		{env("wana", "inet", "static", "gateway 198.51.100.1", "isp-table ispa"),
			`wana: address: missing (a static stanza needs its address)`},
		{env("wana", "inet", "static", "address 198.51.100.2/24", "isp-table ispa"),
			`wana: isp-gateway: missing (set isp-gateway, or gateway, on a static stanza)`},
		{env("wana", "inet", "static", "address 198.51.100.256/24", "gateway 198.51.100.1", "isp-table ispa"),
			`wana: address "198.51.100.256/24": not an address with prefix length`},
		{env("wana", "inet", "static", "address 2001:db8::2/64", "gateway 198.51.100.1", "isp-table ispa"),
			`wana: address "2001:db8::2/64": an inet6 address on an inet stanza`},
		{env("wana", "inet", "static", "address 198.51.100.2", "netmask 255.0.255.0", "gateway 198.51.100.1", "isp-table ispa"),
			`wana: address "198.51.100.2": netmask "255.0.255.0": not a contiguous netmask`},
		{env("wana", "inet6", "static", "address 2001:db8::2", "netmask ffff::", "gateway 2001:db8::1", "isp-table ispa"),
			`wana: address "2001:db8::2": netmask "ffff::": not a netmask`},
		{env("wana", "inet", "static", "address 198.51.100.2/24", "gateway 198.51.100.1.1", "isp-table ispa"),
			`wana: gateway "198.51.100.1.1": not an IP address`},
		{env("wana", "inet", "static", "address 198.51.100.2/24", "gateway 2001:db8::1", "isp-table ispa"),
			`wana: gateway "2001:db8::1": an inet6 address on an inet stanza`},
		{env("wana", "inet6", "static", "address 2001:db8::2/64", "gateway 198.51.100.1", "isp-table ispa"),
			`wana: gateway "198.51.100.1": an inet address on an inet6 stanza`},
		{v4("metric high"), `wana: metric "high": ` + notMetric},
		// isp-gateway, isp-metric
		{v4("isp-gateway 198.51.100.300"), `wana: isp-gateway "198.51.100.300": not an IP address`},
		{v4("isp-gateway $(reboot)"), `wana: isp-gateway "$(reboot)": not an IP address`},
		{v4("isp-gateway 198.51.100.1;reboot"), `wana: isp-gateway "198.51.100.1;reboot": not an IP address`},
		{v4("isp-gateway 2001:db8::1"), `wana: isp-gateway "2001:db8::1": an inet6 address on an inet stanza`},
		{v6("isp-gateway 198.51.100.1"), `wana: isp-gateway "198.51.100.1": an inet address on an inet6 stanza`},
		{v4("isp-metric low"), `wana: isp-metric "low": ` + notMetric},
		{v4("isp-metric -1"), `wana: isp-metric "-1": ` + notMetric},
		{v4("isp-metric 4294967296"), `wana: isp-metric "4294967296": ` + notMetric},
		// CIDR lists
		{v4("isp-source 10.0.0.0/33"), `wana: isp-source "10.0.0.0/33": 10.0.0.0/33: not a CIDR prefix`},
		{v4("isp-source 10.0.0.1/8"), `wana: isp-source "10.0.0.1/8": 10.0.0.1/8: host bits set, did you mean 10.0.0.0/8`},
		{v4("isp-source 192.0.2.0/29 192.0.2.0/29"), `wana: isp-source "192.0.2.0/29 192.0.2.0/29": 192.0.2.0/29: given twice`},
		{v4("isp-source 2001:db8::/48"), `wana: isp-source "2001:db8::/48": 2001:db8::/48: an inet6 prefix on an inet stanza`},
		{v4("isp-source"), `wana: isp-source: empty list`},
		{v4("isp-throw 10.0.0.0/33"), `wana: isp-throw "10.0.0.0/33": 10.0.0.0/33: not a CIDR prefix`},
		{v4("isp-throw 10.0.0.1/8"), `wana: isp-throw "10.0.0.1/8": 10.0.0.1/8: host bits set, did you mean 10.0.0.0/8`},
		{v4("isp-throw 10.0.0.0/8 10.0.0.0/8"), `wana: isp-throw "10.0.0.0/8 10.0.0.0/8": 10.0.0.0/8: given twice`},
		{v6("isp-throw 10.0.0.0/8"), `wana: isp-throw "10.0.0.0/8": 10.0.0.0/8: an inet prefix on an inet6 stanza`},
		{v4("isp-throw 10.0.0.0/8;reboot"), `wana: isp-throw "10.0.0.0/8;reboot": 10.0.0.0/8;reboot: not a CIDR prefix`},
		{v4("snat-from 10.0.0.0/33"), `wana: snat-from "10.0.0.0/33": 10.0.0.0/33: not a CIDR prefix`},
		{v4("snat-from 10.1.0.0/24 10.0.0.1/8"), `wana: snat-from "10.1.0.0/24 10.0.0.1/8": 10.0.0.1/8: host bits set, did you mean 10.0.0.0/8`},
		{v4("snat-from 10.1.0.0/24 10.1.0.0/24"), `wana: snat-from "10.1.0.0/24 10.1.0.0/24": 10.1.0.0/24: given twice`},
		{v4("snat-from fd00::/8"), `wana: snat-from "fd00::/8": fd00::/8: an inet6 prefix on an inet stanza`},
		{v6("snat-from 10.1.0.0/24"), `wana: snat-from "10.1.0.0/24": 10.1.0.0/24: an inet prefix on an inet6 stanza`},
		{v6("snat-from 2001:db8:1::/64", "snat-to 2001:db8:a:100::/64"), `wana: snat-from "2001:db8:1::/64": not a unique local prefix (fc00::/7): ifisp translates ULA sources only, a global address keeps its own`},
		{v6("snat-from fd00:1::/64 fd00:2::/64", "snat-to 2001:db8:a:100::/64"), `wana: snat-from "fd00:1::/64 fd00:2::/64": one prefix on an inet6 stanza (NPTv6 maps one ULA prefix to one of the ISP's)`},
		{v6("snat-from fd00:1::/64"), `wana: snat-to: missing: an inet6 snat-from maps to a prefix of this ISP's, give it (a /64)`},
		{v6("snat-from fd00:1::/64", "snat-to 2001:db8:a:100::/52"), `wana: snat-to "2001:db8:a:100::/52": host bits set, did you mean 2001:db8:a::/52`},
		{v6("snat-from fd00:1::/64", "snat-to 2001:db8:a:100::/60"), `wana: snat-to "2001:db8:a:100::/60": a /60, but snat-from fd00:1::/64 is a /64: NPTv6 maps prefix to prefix of one length`},
		// snat-to
		{v4("snat-to wana"), `wana: snat-to "wana": not an IP address`},
		{v4("snat-to `reboot`"), "wana: snat-to \"`reboot`\": not an IP address"},
		{v4("snat-to 2001:db8::2"), `wana: snat-to "2001:db8::2": an inet6 address on an inet stanza`},
		{v6("snat-to 198.51.100.2"), `wana: snat-to "198.51.100.2": not a CIDR prefix`},
		// health checks
		{v4("isp-check 192.0.2.1 192.0.2.1"), `wana: isp-check "192.0.2.1 192.0.2.1": 192.0.2.1: given twice`},
		{v4("isp-check 192.0.2.1 example.com"), `wana: isp-check "192.0.2.1 example.com": example.com: not an IP address`},
		{v6("isp-check 192.0.2.1"), `wana: isp-check "192.0.2.1": 192.0.2.1: an inet address on an inet6 stanza`},
		{v4("isp-check-interval 0"), `wana: isp-check-interval "0": not a positive duration (e.g. 200ms, 1s)`},
		{v4("isp-check-interval fast"), `wana: isp-check-interval "fast": not a positive duration (e.g. 200ms, 1s)`},
		{v4("isp-check-interval -1s"), `wana: isp-check-interval "-1s": not a positive duration (e.g. 200ms, 1s)`},
		{v4("isp-check-down 0"), `wana: isp-check-down "0": not a count (a number from 1 to 65535)`},
		{v4("isp-check-up ten"), `wana: isp-check-up "ten": not a count (a number from 1 to 65535)`},
		{v4("isp-mark 0"), `wana: isp-mark "0": not a link id (a number from 1 up)`},
		{v4("isp-mark 128"), `wana: isp-mark "128": does not fit isp-mark-mask 0xff000000 (ids 1 to 127)`},
		{v4("isp-mark-mask ff000000"), `wana: isp-mark-mask "ff000000": not a hex mask (e.g. 0xff000000)`},
		{v4("isp-mark-mask 0xff00ff00"), `wana: isp-mark-mask "0xff00ff00": 0xff00ff00 is not one run of bits (e.g. 0xff000000)`},
		{v4("isp-mark-mask 0x100"), `wana: isp-mark-mask "0x100": 0x100 has fewer than 2 bits (one says inbound or outbound, the rest are the link's id)`},
		{v4("isp-inbound maybe"), `wana: isp-inbound "maybe": not yes or no`},
		{v6("isp-sticky yes"), `wana: isp-sticky "yes": an IPv6 flow keeps its link by its own source address already (move it to the interface's inet stanza)`},
		// unknown options
		{v4("isp-tabel ispa"), `wana: isp-tabel "ispa": unknown option (did you mean isp-table?)`},
		{v4("snat-form 10.1.0.0/24"), `wana: snat-form "10.1.0.0/24": unknown option (did you mean snat-from?)`},
		{v4("6rd-whatever 1"), `wana: 6rd-whatever "1": unknown option (see the option table in README.md)`},
		{tunnel("6rd-prefix 2001:db8::/32", "6rd-relay 192.0.2.1", "6rd-rellay 192.0.2.1"),
			`sixrd: 6rd-rellay "192.0.2.1": unknown option (did you mean 6rd-relay?)`},
		// options without isp-table or 6rd-prefix
		{env("wana", "inet", "static", "address 198.51.100.2/24", "gateway 198.51.100.1", "snat-from 10.1.0.0/24"),
			`wana: isp-table: missing: snat-from does nothing without it (add isp-table to the stanza)`},
		{env("wana", "inet", "dhcp", "isp-metric 1", "isp-check 192.0.2.1"),
			`wana: isp-table: missing: isp-check, isp-metric does nothing without it (add isp-table to the stanza)`},
		{env("wana", "inet", "static", "address 198.51.100.2/24", "isp-tabel 100"),
			`wana: isp-tabel "100": unknown option (did you mean isp-table?)`},
		{tunnel("6rd-relay 192.0.2.1"),
			`sixrd: 6rd-prefix: missing: 6rd-relay does nothing without it (add 6rd-prefix to the stanza)`},
		// 6rd
		{tunnel("6rd-prefix 2001:db8::/65", "6rd-relay 192.0.2.1"), `sixrd: 6rd-prefix "2001:db8::/65": longer than /64`},
		{tunnel("6rd-prefix 2001:db8::1/32", "6rd-relay 192.0.2.1"),
			`sixrd: 6rd-prefix "2001:db8::1/32": host bits set, did you mean 2001:db8::/32`},
		{tunnel("6rd-prefix 192.0.2.0/24", "6rd-relay 192.0.2.1"), `sixrd: 6rd-prefix "192.0.2.0/24": not an IPv6 prefix`},
		{tunnel("6rd-prefix 2001:db8::", "6rd-relay 192.0.2.1"), `sixrd: 6rd-prefix "2001:db8::": not a CIDR prefix`},
		{tunnel("6rd-prefix 2001:db8::/40", "6rd-relay 192.0.2.1"),
			`sixrd: 6rd-ipv4-masklen "0": 6rd-prefix /40 plus 32 IPv4 bits makes a /72, longer than /64 (raise 6rd-ipv4-masklen to at least 8)`},
		{tunnel("6rd-prefix 2001:db8::/48", "6rd-relay 192.0.2.1", "6rd-ipv4-masklen 8"),
			`sixrd: 6rd-ipv4-masklen "8": 6rd-prefix /48 plus 24 IPv4 bits makes a /72, longer than /64 (raise 6rd-ipv4-masklen to at least 16)`},
		{tunnel("6rd-prefix 2001:db8::/32", "6rd-relay 192.0.2.1", "6rd-ipv4-masklen 33"),
			`sixrd: 6rd-ipv4-masklen "33": not a length from 0 to 32`},
		{tunnel("6rd-prefix 2001:db8::/40", "6rd-relay 192.0.2.1", "6rd-ipv4-masklen -8"),
			`sixrd: 6rd-ipv4-masklen "-8": not a length from 0 to 32`},
		{tunnel("6rd-prefix 2001:db8::/32", "6rd-relay 2001:db8::1"), `sixrd: 6rd-relay "2001:db8::1": not an IPv4 address`},
		{tunnel("6rd-prefix 2001:db8::/32", "6rd-relay relay.example.net"), `sixrd: 6rd-relay "relay.example.net": not an IPv4 address`},
		{tunnel("6rd-prefix 2001:db8::/32"), `sixrd: 6rd-relay: missing (the ISP's border relay, an IPv4 address)`},
		{env("sixrd", "inet6", "v4tunnel", "local 203.0.113.2", "isp-table ispb", "6rd-relay 192.0.2.1"),
			`sixrd: 6rd-prefix: missing (the other 6rd options need it)`},
		{tunnel("6rd-prefix 2001:db8::/32", "6rd-relay 192.0.2.1", "6rd-local eth0;ls"),
			`sixrd: 6rd-local "eth0;ls": neither an interface name nor an IPv4 address`},
		{tunnel("6rd-prefix 2001:db8::/32", "6rd-relay 192.0.2.1", "6rd-local averyveryverylongname"),
			`sixrd: 6rd-local "averyveryverylongname": neither an interface name nor an IPv4 address`},
		{tunnel("6rd-prefix 2001:db8::/32", "6rd-relay 192.0.2.1", "6rd-local 2001:db8::1"),
			`sixrd: 6rd-local "2001:db8::1": not an IPv4 address`},
		{tunnel("6rd-prefix 2001:db8::/32", "6rd-relay 192.0.2.1", "6rd-ipv4-masklen 8", "6rd-lan lan0:100"),
			`sixrd: 6rd-lan "lan0:100": subnet id 100 does not fit in the /56 delegated prefix (at most ff)`},
		{tunnel("6rd-prefix 2001:db8::/32", "6rd-relay 192.0.2.1", "6rd-lan lan0:1"),
			`sixrd: 6rd-lan "lan0:1": the delegated prefix is a single /64: subnet id must be 0`},
		{tunnel("6rd-prefix 2001:db8::/32", "6rd-relay 192.0.2.1", "6rd-lan lan0:xyz"),
			`sixrd: 6rd-lan "lan0:xyz": subnet id "xyz" is not a hex number`},
		{tunnel("6rd-prefix 2001:db8::/32", "6rd-relay 192.0.2.1", "6rd-lan lan/0:1"),
			`sixrd: 6rd-lan "lan/0:1": not an interface name (IFACE or IFACE:SUBNET-ID)`},
		{tunnel("6rd-prefix 2001:db8::/32", "6rd-relay 192.0.2.1", "6rd-lan .."),
			`sixrd: 6rd-lan "..": not an interface name (IFACE or IFACE:SUBNET-ID)`},
		// isp-lan, isp-rdnss
		{v6("isp-lan lan0"),
			`wana: isp-lan "lan0": needs an IPv6 isp-source prefix of /64 or shorter to number the LAN from (add the prefix the ISP delegated to isp-source)`},
		{v6("isp-source 2001:db8:a100::/56", "isp-lan lan0:100"),
			`wana: isp-lan "lan0:100": subnet id 100 does not fit in the /56 isp-source 2001:db8:a100::/56 (at most ff)`},
		{v6("isp-source 2001:db8:a100::/64", "isp-lan lan0:1"),
			`wana: isp-lan "lan0:1": the isp-source 2001:db8:a100::/64 is a single /64: subnet id must be 0`},
		{v6("isp-source 2001:db8:a100::/56", "isp-lan lan0:g"), `wana: isp-lan "lan0:g": subnet id "g" is not a hex number`},
		{v4("isp-lan lan0"), `wana: isp-lan "lan0": only for inet6 stanzas (this is an inet stanza)`},
		{v6("isp-source 2001:db8:a100::/56", "isp-rdnss 2001:db8:a100::53"),
			`wana: isp-rdnss "2001:db8:a100::53": does nothing without isp-lan (the LAN interface its router advertisements go to)`},
		{v6("isp-source 2001:db8:a100::/56", "isp-lan lan0", "isp-rdnss 192.0.2.53"),
			`wana: isp-rdnss "192.0.2.53": 192.0.2.53: an inet address on an inet6 stanza`},
		{tunnel("6rd-prefix 2001:db8::/32", "6rd-relay 192.0.2.1", "isp-lan lan0", "6rd-lan lan0"),
			`sixrd: 6rd-lan "lan0": given with isp-lan too (they are one option: keep one)`},
		{tunnel("6rd-prefix 2001:db8::/32", "6rd-relay 192.0.2.1", "isp-lan lan0:1"),
			`sixrd: isp-lan "lan0:1": the delegated prefix is a single /64: subnet id must be 0`},
		{v6("6rd-prefix 2001:db8::/32", "6rd-relay 192.0.2.1"),
			`wana: 6rd-prefix "2001:db8::/32": 6rd options belong on an ` + "`inet6 v4tunnel`" + ` stanza (this is inet6 static)`},
		{v6("6rd-relay 192.0.2.1"),
			`wana: 6rd-relay "192.0.2.1": 6rd options belong on an ` + "`inet6 v4tunnel`" + ` stanza (this is inet6 static)`},
		{v4("6rd-prefix 2001:db8::/32"), `wana: 6rd-prefix "2001:db8::/32": only for inet6 stanzas (this is an inet stanza)`},
		{env("wana", "inet", "v4tunnel", "6rd-prefix 2001:db8::/32", "6rd-relay 192.0.2.1"),
			"wana: 6rd-prefix \"2001:db8::/32\": only for inet6 stanzas (this is an inet stanza)\n" +
				`wana: 6rd-relay "192.0.2.1": only for inet6 stanzas (this is an inet stanza)`},
		// What would only fail once ifupdown has configured the link.
		{env("wana", "inet", "static", "address 198.51.100.2/24", "isp-table ispa", "isp-gateway 192.0.2.1"),
			`wana: isp-gateway "192.0.2.1": not on the link: 198.51.100.0/24 does not contain it, so the ISP table's default cannot reach it (fix the address's prefix length, or the gateway)`},
		{env("wana", "inet6", "static", "address 2001:db8:a::2/64", "isp-table ispa", "gateway 2001:db8:b::1"),
			`wana: gateway "2001:db8:b::1": not on the link: 2001:db8:a::/64 does not contain it, so the ISP table's default cannot reach it (fix the address's prefix length, or the gateway)`},
		{v4("isp-gateway 198.51.100.255"), `wana: isp-gateway "198.51.100.255": is the network or broadcast address of 198.51.100.0/24, not a router (give the ISP's router)`},
		{v4("isp-gateway 198.51.100.2"), `wana: isp-gateway "198.51.100.2": is the stanza's own address (give the ISP's router)`},
		{v4("isp-metric 0"), `wana: isp-metric "0": the stanza's own gateway already adds a default at metric 0 (leave isp-metric out, or give another)`},
		{v4("metric 5", "isp-metric 5"), `wana: isp-metric "5": the stanza's own gateway already adds a default at metric 5 (leave isp-metric out, or give another)`},
		{v6("isp-metric 1024"), `wana: isp-metric "1024": the stanza's own gateway already adds a default at metric 0 (leave isp-metric out, or give another)`},
		{env("eth0:1", "inet", "static", "address 198.51.100.2/24", "gateway 198.51.100.1", "isp-table ispa"),
			`eth0:1: iface "eth0:1": not an interface name ifisp can manage (1 to 15 of A-Z a-z 0-9 _ . -; an alias such as eth0:1 cannot have a table of its own)`},
	} {
		c, err := Parse(tc.env, root)
		if err == nil {
			t.Errorf("%v: accepted as %+v, want %q", tc.env, c, tc.want)
			continue
		}
		if err.Error() != tc.want {
			t.Errorf("%s:\n got %q\nwant %q", tc.env[len(tc.env)-1], err.Error(), tc.want)
		}
		var e *Error
		if !errors.As(err, &e) || c != nil {
			t.Errorf("%q is not an *Error, or came with a Config", err)
		}
	}
}

func TestParseErrorsTogether(t *testing.T) {
	for _, tc := range []struct {
		env  []string
		want string
	}{
		{env("wana", "inet", "static", "address 198.51.100.2/24", "isp-table main",
			"isp-gateway 198.51.100.1", "isp-metric x", "isp-tabel 1"),
			`wana: isp-tabel "1": unknown option (did you mean isp-table?)
wana: isp-table "main": reserved table (0, 253, 254, 255 are refused)
wana: isp-metric "x": ` + notMetric},
		{env("wana", "inet", "static", "isp-table telco", "snat-from 10.0.0.1/8", "snat-to 2001:db8::2",
			"isp-check-up 0"),
			`wana: isp-table "telco": no such table in /etc/iproute2/rt_tables, rt_tables.d/*.conf or /usr/share/iproute2/rt_tables (add "NUMBER telco" to /etc/iproute2/rt_tables.d/isp.conf, or give a number)
wana: snat-from "10.0.0.1/8": 10.0.0.1/8: host bits set, did you mean 10.0.0.0/8
wana: snat-to "2001:db8::2": an inet6 address on an inet stanza
wana: isp-check-up "0": not a count (a number from 1 to 65535)
wana: address: missing (a static stanza needs its address)
wana: isp-gateway: missing (set isp-gateway, or gateway, on a static stanza)`},
		{env("wana", "inet", "static", "address 198.51.100.2/24", "snat-from 10.1.0.0/24", "snat-form 10.1.0.0/24"),
			`wana: snat-form "10.1.0.0/24": unknown option (did you mean snat-from?)
wana: isp-table: missing: snat-from does nothing without it (add isp-table to the stanza)`},
		// A bad masklen is reported once, not again as a too long prefix.
		{env("sixrd", "inet6", "v4tunnel", "local 203.0.113.2", "6rd-prefix 2001:db8::/40", "6rd-ipv4-masklen 40", "6rd-lan lan0:zz"),
			`sixrd: 6rd-ipv4-masklen "40": not a length from 0 to 32
sixrd: 6rd-lan "lan0:zz": subnet id "zz" is not a hex number
sixrd: 6rd-relay: missing (the ISP's border relay, an IPv4 address)`},
	} {
		_, err := Parse(tc.env, root)
		if err == nil || err.Error() != tc.want {
			t.Errorf("got %v\nwant %s", err, tc.want)
		}
	}
}

func TestOwner(t *testing.T) {
	for option, want := range map[string]string{
		"isp-table": "ifisp-route", "isp-tabel": "ifisp-route", "gateway": "ifisp-route", "address": "ifisp-route",
		"snat-from": "ifisp-snat", "snat-form": "ifisp-snat", "6rd-lan": "ifisp-6rd", "6rd-prefx": "ifisp-6rd",
	} {
		if got := Owner(option); got != want {
			t.Errorf("Owner(%s) = %s, want %s", option, got, want)
		}
	}
}

// A caller can prefix each problem's line, as the hooks do with their name.
func TestErrorProblems(t *testing.T) {
	_, err := Parse(env("wana", "inet", "static", "address 198.51.100.2/24", "isp-table 0", "isp-metric -3"), root)
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("%v is not an *Error", err)
	}
	want := &Error{Iface: "wana", Problems: []Problem{
		{Option: "isp-table", Value: "0", Msg: "reserved table (0, 253, 254, 255 are refused)"},
		{Option: "isp-metric", Value: "-3", Msg: notMetric},
		{Option: "isp-gateway", Msg: "missing (set isp-gateway, or gateway, on a static stanza)"},
	}}
	if d := cmp.Diff(want, e); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
}

// TestOptionsTable: every option says what its value is and does, and
// has at most one kind of default.
func TestOptionsTable(t *testing.T) {
	for _, o := range Options() {
		if o.Doc == "" || o.Value == "" {
			t.Errorf("option %s has no doc or no value description", o.Name)
		}
		if o.Derived != "" && o.Default != "" || o.Default6 != "" && o.Default == "" {
			t.Errorf("option %s: Default %q, Default6 %q, Derived %q: a literal default (for inet, and maybe another for inet6) or a derived one", o.Name, o.Default, o.Default6, o.Derived)
		}
	}
}

// TestDefaults: a stanza that leaves the options out parses to the same
// Config as one that writes each literal default of the options table: the
// defaults go through the options' own parsers, and mean what they say.
func TestDefaults(t *testing.T) {
	for _, tc := range []struct {
		name                  string
		iface, family, method string
		base                  []string
	}{
		{"inet", "wana", "inet", "static", []string{"address 198.51.100.2/24", "gateway 198.51.100.1", "isp-table ispa"}},
		{"inet6", "wana", "inet6", "static", []string{"address 2001:db8:a::2/64", "gateway 2001:db8:a::1", "isp-table ispa"}},
		{"6rd", "sixrd", "inet6", "v4tunnel", []string{"local 203.0.113.2", "isp-table ispb", "6rd-prefix 2001:db8::/32", "6rd-relay 192.0.2.254"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			implicit, err := Parse(env(tc.iface, tc.family, tc.method, tc.base...), root)
			if err != nil {
				t.Fatal(err)
			}
			written := append([]string(nil), tc.base...)
			for _, o := range Options() {
				v := o.DefaultFor(Family(tc.family))
				if v == "" || o.Family != "" && o.Family != Family(tc.family) || strings.HasPrefix(o.Name, "6rd-") && tc.method != "v4tunnel" {
					continue
				}
				written = append(written, o.Name+" "+v)
			}
			explicit, err := Parse(env(tc.iface, tc.family, tc.method, written...), root)
			if err != nil {
				t.Fatalf("the defaults written out: %v", err)
			}
			if d := cmp.Diff(explicit, implicit, equate, cmpopts.IgnoreFields(Config{}, "Env")); d != "" {
				t.Errorf("(-written +left out):\n%s", d)
			}
			if c := implicit; c.CheckInterval != DefaultCheckInterval || c.CheckDown != DefaultCheckDown || c.CheckUp != DefaultCheckUp {
				t.Errorf("DefaultCheckInterval, DefaultCheckDown, DefaultCheckUp are %v, %d, %d, a stanza gets %v, %d, %d",
					DefaultCheckInterval, DefaultCheckDown, DefaultCheckUp, c.CheckInterval, c.CheckDown, c.CheckUp)
			}
		})
	}
}

func TestNames(t *testing.T) {
	if got := TableName(root, 100); got != "ispa" {
		t.Errorf("TableName(100) = %q, want ispa", got)
	}
	if got := TableName(root, 4711); got != "" {
		t.Errorf("TableName(4711) = %q, want none", got)
	}
	if got := ProtoName(t.TempDir(), 71); got != "" {
		t.Errorf("ProtoName without rt_protos = %q, want none", got)
	}
}

// The hand-written checks accept exactly what the regexps they replaced
// did: ^(-?[0-9]+|0[xX][0-9a-fA-F]+)$ and ^[A-Za-z0-9_.-]{1,15}$ but "."
// and "..".
func TestNameChecks(t *testing.T) {
	for s, want := range map[string]bool{
		"0": true, "-1": true, "010": true, "0x1f": true, "0X1F": true,
		"": false, "-": false, "--1": false, "0x": false, "0xg": false, "-0x1": false, "1x": false, "x1": false,
	} {
		if got := isTableNumber(s); got != want {
			t.Errorf("isTableNumber(%q) = %v, want %v", s, got, want)
		}
	}
	for s, want := range map[string]bool{
		"wana": true, "eth0.100": true, "br-lan_2": true, "abcdefghijklmno": true,
		"": false, ".": false, "..": false, "abcdefghijklmnop": false, "eth0;ls": false, "eth 0": false, "eth0:1": false, "ethé": false,
	} {
		if got := isIfname(s); got != want {
			t.Errorf("isIfname(%q) = %v, want %v", s, got, want)
		}
	}
}

// 6rd-prefix dhcp takes the domain from option 212 of 6rd-local's lease:
// the options that option gives are refused beside it, 6rd-local must be
// an interface, and a v4tunnel stanza needs `local` for ifupdown to create
// the tunnel at all.
func TestParse6rdFromDHCP(t *testing.T) {
	c, err := Parse(env("sixrd", "inet6", "v4tunnel", "local 192.0.2.2", "isp-table ispb", "6rd-prefix dhcp", "6rd-local wanb", "6rd-lan lan0"), root)
	if err != nil {
		t.Fatal(err)
	}
	if s := c.SixRD; !s.FromDHCP || s.LocalIface != "wanb" || s.Prefix.IsValid() {
		t.Errorf("6rd-prefix dhcp: %+v", s)
	}
	for _, tc := range []struct {
		options []string
		want    string
	}{
		{[]string{"local 192.0.2.2", "6rd-prefix dhcp", "6rd-local wanb", "6rd-relay 192.0.2.1"},
			`sixrd: 6rd-relay "192.0.2.1": comes from DHCP option 212 with 6rd-prefix dhcp (drop it, or give 6rd-prefix itself)`},
		{[]string{"local 192.0.2.2", "6rd-prefix dhcp", "6rd-local 192.0.2.2"},
			`sixrd: 6rd-local "192.0.2.2": 6rd-prefix dhcp needs 6rd-local IFACE, the interface whose dhclient lease carries option 212`},
		{[]string{"6rd-prefix 2001:db8::/32", "6rd-relay 192.0.2.1", "6rd-local wanb"},
			"sixrd: local: missing: ifupdown's v4tunnel cannot create a sit tunnel without it (it would be sit0's twin); with 6rd-local IFACE any unicast IPv4 address will do, the tunnel's local address follows IFACE's"},
	} {
		_, err := Parse(env("sixrd", "inet6", "v4tunnel", tc.options...), root)
		if err == nil || err.Error() != tc.want {
			t.Errorf("%v:\n got %v\nwant %s", tc.options, err, tc.want)
		}
	}
}

// An inet6 dhcp stanza's default comes by router advertisement: on a
// router, only with accept_ra 2.
func TestParseDHCPv6AcceptRA(t *testing.T) {
	base := []string{"isp-table ispb", "request_prefix 1", "isp-lan lan0"}
	c, err := Parse(env("wanb", "inet6", "dhcp", append(base, "accept_ra 2")...), root)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Delegation || !c.WaitsForRA() || c.LAN == nil {
		t.Errorf("inet6 dhcp with request_prefix 1: Delegation %v, WaitsForRA %v, LAN %+v", c.Delegation, c.WaitsForRA(), c.LAN)
	}
	want := `wanb: accept_ra "1": the default of an inet6 dhcp stanza comes by router advertisement, which a router (forwarding on) ignores unless accept_ra is 2 (set accept_ra 2, or give isp-gateway)`
	if _, err := Parse(env("wanb", "inet6", "dhcp", append(base, "accept_ra 1")...), root); err == nil || err.Error() != want {
		t.Errorf("accept_ra 1:\n got %v\nwant %s", err, want)
	}
	if _, err := Parse(env("wanb", "inet6", "dhcp", append(base, "accept_ra 1", "isp-gateway fe80::1")...), root); err != nil {
		t.Errorf("accept_ra 1 with isp-gateway: %v", err)
	}
}
