package lease

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

var equate = cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})

func TestDhclient(t *testing.T) {
	a := netip.MustParseAddr
	for _, tc := range []struct {
		name string
		env  []string
		want Event
	}{
		{"renew to a new address", []string{"reason=RENEW", "interface=wanb", "new_ip_address=203.0.113.3", "new_routers=203.0.113.1", "old_ip_address=203.0.113.2", "new_dhcp_lease_time=600"},
			Event{Client: "dhclient", Reason: "RENEW", Kind: Bound, Iface: "wanb", Family: "inet", Address: a("203.0.113.3"), Gateway: a("203.0.113.1"), Preferred: 600 * time.Second, Valid: 600 * time.Second}},
		{"the first of two routers", []string{"reason=BOUND", "interface=eth0.4", "new_ip_address=192.0.2.9", "new_routers=192.0.2.1 192.0.2.2"},
			Event{Client: "dhclient", Reason: "BOUND", Kind: Bound, Iface: "eth0.4", Family: "inet", Address: a("192.0.2.9"), Gateway: a("192.0.2.1")}},
		{"expired", []string{"reason=EXPIRE", "interface=wanb", "old_ip_address=203.0.113.2"},
			Event{Client: "dhclient", Reason: "EXPIRE", Kind: Lost, Iface: "wanb", Family: "inet"}},
		{"a delegated prefix", []string{"reason=BOUND6", "interface=wanb", "new_ip6_prefix=2001:db8:b0::/56", "new_max_life=3600", "new_preferred_life=1800"},
			Event{Client: "dhclient", Reason: "BOUND6", Kind: Delegated, Iface: "wanb", Family: "inet6", Prefix: netip.MustParsePrefix("2001:db8:b0::/56"), Preferred: 1800 * time.Second, Valid: time.Hour}},
		// A REBIND6 for another prefix first re-sends the old one with no
		// lifetime left.
		{"the old prefix taken back", []string{"reason=REBIND6", "interface=wanb", "new_ip6_prefix=2001:db8:b0::/56", "new_max_life=0"},
			Event{Client: "dhclient", Reason: "REBIND6", Kind: Undelegated, Iface: "wanb", Family: "inet6", Prefix: netip.MustParsePrefix("2001:db8:b0::/56")}},
		{"the binding expired", []string{"reason=EXPIRE6", "interface=wanb", "old_ip6_prefix=2001:db8:b0::/56"},
			Event{Client: "dhclient", Reason: "EXPIRE6", Kind: Undelegated, Iface: "wanb", Family: "inet6", Prefix: netip.MustParsePrefix("2001:db8:b0::/56")}},
		{"an IA_NA address", []string{"reason=BOUND6", "interface=wanb", "new_ip6_address=2001:db8:b::99", "new_ip6_prefixlen=128"},
			Event{Client: "dhclient", Reason: "BOUND6", Kind: Bound, Iface: "wanb", Family: "inet6", Address: a("2001:db8:b::99")}},
		{"DEPREF6 changes nothing", []string{"reason=DEPREF6", "interface=wanb", "cur_ip6_prefix=2001:db8:b0::/56"},
			Event{Client: "dhclient", Reason: "DEPREF6", Kind: Ignored, Iface: "wanb", Family: "inet"}},
		{"PREINIT", []string{"reason=PREINIT", "interface=wanb"},
			Event{Client: "dhclient", Reason: "PREINIT", Kind: Ignored, Iface: "wanb", Family: "inet"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Dhclient(tc.env)
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tc.want, got, equate); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}

// Values from the network that are not what they must be are refused,
// each with a message that quotes them escaped and cut short, on one line.
func TestDhclientBadInput(t *testing.T) {
	good := map[string]string{"reason": "RENEW", "interface": "wanb", "new_ip_address": "203.0.113.3", "new_routers": "203.0.113.1", "new_dhcp_lease_time": "600"}
	long := strings.Repeat("A", 10000)
	for _, tc := range []struct {
		name, key, value, want string
	}{
		{"no router", "new_routers", "", "has no router"},
		{"a router made of blanks", "new_routers", "   ", "has no router"},
		{"command substitution", "new_ip_address", "$(touch /tmp/pwned)", `new_ip_address "$(touch /tmp/pwned)" is not a unicast IPv4 address`},
		{"backquotes", "new_routers", "`reboot`", "new_routers \"`reboot`\" is not a unicast IPv4 address"},
		{"a newline", "new_ip_address", "203.0.113.3\nreboot", `new_ip_address "203.0.113.3\nreboot" is not a unicast IPv4 address`},
		{"10 000 bytes", "new_routers", long, "(10000 bytes)"},
		{"an IPv6 router", "new_routers", "2001:db8::1", "is not a unicast IPv4 address"},
		{"the broadcast address", "new_ip_address", "255.255.255.255", "is not a unicast IPv4 address"},
		{"multicast", "new_routers", "224.0.0.1", "is not a unicast IPv4 address"},
		{"a path for an interface", "interface", "../../etc", "is not an interface name"},
		{"an interface name too long", "interface", "abcdefghijklmnop", "is not an interface name"},
		{"an interface with a blank", "interface", "wan b", "is not an interface name"},
		{"a reason that is not one", "reason", "RENEW;reboot", "is not a reason"},
		{"a lease time that is not a number", "new_dhcp_lease_time", "600;reboot", "is not a number of seconds"},
		{"a lease time past 32 bits", "new_dhcp_lease_time", "4294967296", "is not a number of seconds"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var env []string
			for k, v := range good {
				if k == tc.key {
					v = tc.value
				}
				env = append(env, k+"="+v)
			}
			_, err := Dhclient(env)
			if err == nil {
				t.Fatalf("%s=%q accepted", tc.key, tc.value)
			}
			msg := err.Error()
			if !strings.Contains(msg, tc.want) {
				t.Errorf("%s=%q: %s, want it to say %q", tc.key, tc.value, msg, tc.want)
			}
			if strings.Contains(msg, "\n") || len(msg) > 300 {
				t.Errorf("%s=%q: the message is not one short line: %q", tc.key, tc.value, msg)
			}
		})
	}
}

// Delegated prefixes that cannot number a LAN, or are not prefixes.
func TestDhclient6BadInput(t *testing.T) {
	for _, tc := range []struct{ value, want string }{
		{"2001:db8:b0::/72", "longer than /64"},
		{"2001:db8:b0::1/56", "bits set past its length"},
		{"fe80::/64", "is not an IPv6 prefix"},
		{"ff02::/16", "is not an IPv6 prefix"},
		{"::ffff:192.0.2.0/120", "is not an IPv6 prefix"},
		{"192.0.2.0/24", "is not an IPv6 prefix"},
		{"$(reboot)", "is not an IPv6 prefix"},
		{strings.Repeat("f", 10000), "(10000 bytes)"},
	} {
		_, err := Dhclient([]string{"reason=BOUND6", "interface=wanb", "new_ip6_prefix=" + tc.value, "new_max_life=3600"})
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("new_ip6_prefix=%.40q: %v, want one line that says %q", tc.value, err, tc.want)
		}
	}
	if _, err := Dhclient([]string{"reason=RENEW6", "interface=wanb", "new_ip6_prefix=2001:db8:b0::/56", "new_max_life=1;reboot"}); err == nil {
		t.Error("new_max_life=1;reboot accepted")
	}
	if _, err := Dhclient([]string{"reason=RENEW6", "interface=wanb", "new_ip6_prefix=2001:db8:b0::/56", "new_max_life=60", "new_preferred_life=-1"}); err == nil {
		t.Error("new_preferred_life=-1 accepted")
	}
}

func TestPPP(t *testing.T) {
	a := netip.MustParseAddr
	env := []string{"PPP_IFACE=ppp0", "PPP_LOCAL=192.0.2.66", "PPP_REMOTE=192.0.2.65", "CALL_FILE=dsl-provider"}
	got, err := PPP(env, true)
	if err != nil {
		t.Fatal(err)
	}
	want := Event{Client: "ppp", Reason: "ip-up", Kind: Bound, Iface: "ppp0", Family: "inet", Address: a("192.0.2.66"), Gateway: a("192.0.2.65"), Stanza: "dsl-provider"}
	if d := cmp.Diff(want, got, equate); d != "" {
		t.Errorf("ip-up (-want +got):\n%s", d)
	}
	// ipparam names the stanza before the call file does.
	got, err = PPP(append(env, "PPP_IPPARAM=wanc"), false)
	if err != nil {
		t.Fatal(err)
	}
	want = Event{Client: "ppp", Reason: "ip-down", Kind: Lost, Iface: "ppp0", Family: "inet", Stanza: "wanc", Address: a("192.0.2.66")}
	if d := cmp.Diff(want, got, equate); d != "" {
		t.Errorf("ip-down (-want +got):\n%s", d)
	}
	if _, err := PPP([]string{"PPP_IFACE=ppp0", "PPP_LOCAL=192.0.2.66", "PPP_REMOTE=192.0.2.65"}, true); err == nil || !strings.Contains(err.Error(), "ipparam") {
		t.Errorf("no stanza named: %v, want an error that says to set ipparam", err)
	}
	if _, err := PPP([]string{"PPP_IFACE=ppp0", "PPP_LOCAL=$(id)", "PPP_REMOTE=192.0.2.65", "PPP_IPPARAM=wanc"}, true); err == nil {
		t.Error("PPP_LOCAL=$(id) accepted")
	}
}
