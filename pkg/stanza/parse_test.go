package stanza

import (
	"errors"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

const root = "../../testdata/rt"

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

func TestParseTwoISPs(t *testing.T) {
	got, err := Parse(env("wana", "inet", "static",
		"address 198.51.100.2/24", "gateway 198.51.100.1", "metric 3",
		"isp-table ispa", "isp-metric 1", "isp-source 198.51.100.64/28 192.0.2.0/29",
		"snat-from 10.1.0.0/24", "isp-check 192.0.2.1 192.0.2.2", "isp-check-interval 500ms"), root)
	if err != nil {
		t.Fatal(err)
	}
	want := &Config{
		Iface: "wana", Logical: "wana", Family: Inet, Method: "static", Mode: "start", Phase: "post-up",
		Address:       netip.MustParsePrefix("198.51.100.2/24"),
		Gateway:       netip.MustParseAddr("198.51.100.1"),
		GatewayMetric: 3,
		Table:         100, TableName: "",
		ISPGateway: netip.MustParseAddr("198.51.100.1"),
		Metric:     1,
		Sources:    []netip.Prefix{netip.MustParsePrefix("198.51.100.64/28"), netip.MustParsePrefix("192.0.2.0/29")},
		Throw: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("172.16.0.0/12"),
			netip.MustParsePrefix("192.168.0.0/16")},
		SNATFrom:      []netip.Prefix{netip.MustParsePrefix("10.1.0.0/24")},
		Check:         []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")},
		CheckInterval: 500 * time.Millisecond, CheckDown: DefaultCheckDown, CheckUp: DefaultCheckUp,
	}
	if d := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
		cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); d != "" {
		t.Errorf("inet stanza (-want +got):\n%s", d)
	}

	got, err = Parse(env("wanb", "inet6", "static",
		"address 2001:db8:b::2", "netmask 64", "isp-table ispb", "isp-gateway fe80::1", "isp-throw fc00::/7 2001:db8:ffff::/48"), root)
	if err != nil {
		t.Fatal(err)
	}
	if got.Table != 0x65 || got.Address != netip.MustParsePrefix("2001:db8:b::2/64") ||
		got.ISPGateway != netip.MustParseAddr("fe80::1") || got.Metric != -1 || len(got.Throw) != 2 {
		t.Errorf("inet6 stanza: got %+v", got)
	}
}

func TestParseTables(t *testing.T) {
	for name, want := range map[string]int{"ispa": 100, "ispb": 101, "cable": 102, "7": 7, "0x10": 16, "4294967295": 4294967295} {
		c, err := Parse(env("wana", "inet", "dhcp", "isp-table "+name), root)
		if err != nil {
			t.Errorf("isp-table %s: %v", name, err)
			continue
		}
		if c.Table != want {
			t.Errorf("isp-table %s: got %d, want %d", name, c.Table, want)
		}
	}
}

func TestParseNotOptedIn(t *testing.T) {
	for _, e := range [][]string{
		env("lo", "inet", "loopback"),
		env("lan0", "inet", "static", "address 10.1.0.1/24"),
		env("--all", "inet", "", "isp-table ispa"),
		env("wana", "ipx", "static", "isp-table ispa"),
		{"ADDRFAM=inet"},
	} {
		if c, err := Parse(e, root); !errors.Is(err, ErrNotOptedIn) {
			t.Errorf("%v: got %+v, %v; want ErrNotOptedIn", e, c, err)
		}
	}
}

// TestParseErrors is the user interface of a refused stanza: one line per
// problem, naming interface, option and value, saying what to do.
func TestParseErrors(t *testing.T) {
	v4 := []string{"address 198.51.100.2/24", "gateway 198.51.100.1"}
	v6 := []string{"address 2001:db8:a::2/64", "gateway 2001:db8:a::1"}
	tunnel := func(o ...string) []string { return env("sixrd", "inet6", "v4tunnel", o...) }
	for _, tc := range []struct {
		env  []string
		want string
	}{
		{env("wana", "inet", "static", append(v4, "isp-table main")...),
			`wana: isp-table "main": reserved table (0, 253, 254, 255 are refused)`},
		{env("wana", "inet", "static", append(v4, "isp-table 255")...),
			`wana: isp-table "255": reserved table (0, 253, 254, 255 are refused)`},
		{env("wana", "inet", "static", append(v4, "isp-table 0")...),
			`wana: isp-table "0": reserved table (0, 253, 254, 255 are refused)`},
		{env("wana", "inet", "static", append(v4, "isp-table telco")...),
			`wana: isp-table "telco": no such table in /etc/iproute2/rt_tables, rt_tables.d/*.conf or /usr/share/iproute2/rt_tables (add "NUMBER telco" to /etc/iproute2/rt_tables.d/isp.conf, or give a number)`},
		{env("wana", "inet", "static", append(v4, "isp-table 4294967296")...),
			`wana: isp-table "4294967296": table number out of range (1 to 4294967295)`},
		{env("wana", "inet", "static", append(v4, "isp-table -1")...),
			`wana: isp-table "-1": table number out of range (1 to 4294967295)`},
		{env("wana", "inet", "static", append(v4, "isp-table 1;reboot")...),
			`wana: isp-table "1;reboot": not a table name or number`},
		{env("wana", "inet", "static", "address 198.51.100.2/24", "isp-table ispa", "isp-gateway 198.51.100.300"),
			`wana: isp-gateway "198.51.100.300": not an IP address`},
		{env("wana", "inet", "static", "address 198.51.100.2/24", "isp-table ispa", "isp-gateway $(reboot)"),
			`wana: isp-gateway "$(reboot)": not an IP address`},
		{env("wana", "inet", "static", "address 198.51.100.2/24", "isp-table ispa", "isp-gateway 2001:db8::1"),
			`wana: isp-gateway "2001:db8::1": not an inet6 address (this is an inet stanza)`},
		{env("wana", "inet", "static", "address 198.51.100.2/24", "gateway 2001:db8::1", "isp-table ispa"),
			`wana: gateway "2001:db8::1": not an inet6 address (this is an inet stanza)`},
		{env("wana", "inet", "static", append(v4, "isp-table ispa", "isp-metric low")...),
			`wana: isp-metric "low": not a metric (a number from 0 to 4294967295)`},
		{env("wana", "inet", "static", append(v4, "isp-table ispa", "isp-metric -1")...),
			`wana: isp-metric "-1": not a metric (a number from 0 to 4294967295)`},
		{env("wana", "inet", "static", append(v4, "isp-table ispa", "isp-source 10.0.0.0/33")...),
			`wana: isp-source "10.0.0.0/33": 10.0.0.0/33: not a CIDR prefix`},
		{env("wana", "inet", "static", append(v4, "isp-table ispa", "isp-throw 10.0.0.1/8")...),
			`wana: isp-throw "10.0.0.1/8": 10.0.0.1/8: host bits set, did you mean 10.0.0.0/8`},
		{env("wana", "inet", "static", append(v4, "isp-table ispa", "snat-from 10.1.0.0/24 10.0.0.1/8")...),
			`wana: snat-from "10.1.0.0/24 10.0.0.1/8": 10.0.0.1/8: host bits set, did you mean 10.0.0.0/8`},
		{env("wana", "inet", "static", append(v4, "isp-table ispa", "snat-from fd00::/8")...),
			`wana: snat-from "fd00::/8": fd00::/8: not an inet6 prefix (this is an inet stanza)`},
		{env("wana", "inet6", "static", append(v6, "isp-table ispa", "snat-from 10.1.0.0/24")...),
			`wana: snat-from "10.1.0.0/24": only for inet stanzas (this is an inet6 stanza)`},
		{env("wana", "inet", "static", append(v4, "isp-table ispa", "snat-to wana")...),
			`wana: snat-to "wana": not an IP address`},
		{env("wana", "inet", "static", append(v4, "isp-table ispa", "isp-tabel ispa")...),
			`wana: isp-tabel "ispa": unknown option (did you mean isp-table?)`},
		{env("wana", "inet", "static", append(v4, "isp-table ispa", "snat-form 10.1.0.0/24")...),
			`wana: snat-form "10.1.0.0/24": unknown option (did you mean snat-from?)`},
		{env("wana", "inet", "static", append(v4, "isp-table ispa", "6rd-whatever 1")...),
			`wana: 6rd-whatever "1": unknown option (see the option table in README.md)`},
		{env("wana", "inet", "static", append(v4, "isp-table ispa", "isp-source 192.0.2.0/29 192.0.2.0/29")...),
			`wana: isp-source "192.0.2.0/29 192.0.2.0/29": 192.0.2.0/29: given twice`},
		{env("wana", "inet", "static", append(v4, "isp-table ispa", "isp-check 192.0.2.1 192.0.2.1")...),
			`wana: isp-check "192.0.2.1 192.0.2.1": 192.0.2.1: given twice`},
		{env("wana", "inet", "static", "gateway 198.51.100.1", "isp-table ispa"),
			`wana: address: missing (a static stanza needs its address)`},
		{env("wana", "inet", "static", "address 198.51.100.2/24", "isp-table ispa"),
			`wana: isp-gateway: missing (set isp-gateway, or gateway, on a static stanza)`},
		{env("wana", "inet", "static", append(v4, "snat-from 10.1.0.0/24")...),
			`wana: isp-table: missing: snat-from does nothing without it (add isp-table to the stanza)`},
		{env("wana", "inet", "static", append(v4, "isp-table ispa", "isp-check-interval 0")...),
			`wana: isp-check-interval "0": not a positive duration (e.g. 200ms, 1s)`},
		{env("wana", "inet", "static", append(v4, "isp-table ispa", "isp-check-down 0")...),
			`wana: isp-check-down "0": not a count (a number from 1 to 65535)`},
		{env("wana", "inet", "static", "address 198.51.100.2", "netmask 255.0.255.0", "gateway 198.51.100.1", "isp-table ispa"),
			`wana: address "198.51.100.2": netmask "255.0.255.0": not a contiguous netmask`},
		// 6rd
		{tunnel("6rd-prefix 2001:db8::/65", "6rd-relay 192.0.2.1"),
			`sixrd: 6rd-prefix "2001:db8::/65": longer than /64`},
		{tunnel("6rd-prefix 192.0.2.0/24", "6rd-relay 192.0.2.1"),
			`sixrd: 6rd-prefix "192.0.2.0/24": not an IPv6 prefix`},
		{tunnel("6rd-prefix 2001:db8::/40", "6rd-relay 192.0.2.1"),
			`sixrd: 6rd-ipv4-masklen "0": 6rd-prefix /40 plus 32 IPv4 bits makes a /72, longer than /64 (raise 6rd-ipv4-masklen to at least 8)`},
		{tunnel("6rd-prefix 2001:db8::/32", "6rd-relay 192.0.2.1", "6rd-ipv4-masklen 33"),
			`sixrd: 6rd-ipv4-masklen "33": not a length from 0 to 32`},
		{tunnel("6rd-prefix 2001:db8::/32", "6rd-relay 2001:db8::1"),
			`sixrd: 6rd-relay "2001:db8::1": not an IPv4 address`},
		{tunnel("6rd-prefix 2001:db8::/32"),
			`sixrd: 6rd-relay: missing (the ISP's border relay, an IPv4 address)`},
		{tunnel("6rd-prefix 2001:db8::/32", "6rd-relay 192.0.2.1", "6rd-local eth0;ls"),
			`sixrd: 6rd-local "eth0;ls": neither an interface name nor an IPv4 address`},
		{tunnel("6rd-prefix 2001:db8::/32", "6rd-relay 192.0.2.1", "6rd-local 2001:db8::1"),
			`sixrd: 6rd-local "2001:db8::1": not an IPv4 address`},
		{tunnel("6rd-prefix 2001:db8::/32", "6rd-relay 192.0.2.1", "6rd-ipv4-masklen 8", "6rd-lan lan0:100"),
			`sixrd: 6rd-lan "lan0:100": subnet id 100 does not fit in the /56 delegated prefix (at most ff)`},
		{tunnel("6rd-prefix 2001:db8::/32", "6rd-relay 192.0.2.1", "6rd-lan lan0:xyz"),
			`sixrd: 6rd-lan "lan0:xyz": subnet id "xyz" is not a hex number`},
		{env("wana", "inet6", "static", append(v6, "isp-table ispa", "6rd-prefix 2001:db8::/32", "6rd-relay 192.0.2.1")...),
			`wana: 6rd-prefix "2001:db8::/32": 6rd options belong on an ` + "`inet6 v4tunnel`" + ` stanza (this is inet6 static)`},
		{env("wana", "inet", "static", append(v4, "isp-table ispa", "6rd-prefix 2001:db8::/32")...),
			`wana: 6rd-prefix "2001:db8::/32": only for inet6 stanzas (this is an inet stanza)`},
	} {
		c, err := Parse(tc.env, root)
		if err == nil {
			t.Errorf("%v: accepted as %+v, want %q", tc.env, c, tc.want)
			continue
		}
		if err.Error() != tc.want {
			t.Errorf("%v:\n got %q\nwant %q", tc.env[len(tc.env)-1], err.Error(), tc.want)
		}
		var e *Error
		if !errors.As(err, &e) {
			t.Errorf("%q is not an *Error", err)
		}
	}
}

func TestParseErrorsTogether(t *testing.T) {
	_, err := Parse(env("wana", "inet", "static", "address 198.51.100.2/24", "isp-table main",
		"isp-gateway 198.51.100.1", "isp-metric x", "isp-tabel 1"), root)
	want := `wana: isp-tabel "1": unknown option (did you mean isp-table?)
wana: isp-table "main": reserved table (0, 253, 254, 255 are refused)
wana: isp-metric "x": not a metric (a number from 0 to 4294967295)`
	if err == nil || err.Error() != want {
		t.Errorf("got %v\nwant %s", err, want)
	}
}

// Every option in the table is documented in README.md's option table.
func TestOptionsDocumented(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range Options() {
		if !strings.Contains(string(readme), "| `"+o.Name+"` |") {
			t.Errorf("README.md's option table lacks %s", o.Name)
		}
	}
}
