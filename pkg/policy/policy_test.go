package policy_test

import (
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/ifisp/ifisp/internal/lab"
	"github.com/ifisp/ifisp/pkg/policy"
	"github.com/ifisp/ifisp/pkg/stanza"
)

// netNS makes a namespace with a veth "wan0" (its peer "gw0" holds the
// gateway addresses) and returns a netlink handle into it. Everything is
// removed in cleanup.
func netNS(t *testing.T) (*netlink.Handle, func(args ...string) string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("needs root (network namespaces)")
	}
	name := "ifisp-policy-" + strings.ReplaceAll(t.Name(), "/", "-")
	if len(name) > 60 {
		name = name[:60]
	}
	ip := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("ip", append([]string{"-n", name}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	exec.Command("ip", "netns", "exec", name, "sysctl", "-q", "-w", "net.ipv6.conf.default.accept_dad=0").Run()
	ip("link", "add", "wan0", "type", "veth", "peer", "gw0")
	ip("link", "set", "wan0", "up")
	ip("link", "set", "gw0", "up")
	ns, err := netns.GetFromName(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Delete)
	return h, ip
}

func config(family stanza.Family) *stanza.Config {
	c := &stanza.Config{Iface: "wan0", Family: family, Method: "static", Table: 100, Metric: -1, GatewayMetric: -1}
	if family == stanza.Inet6 {
		c.Address = netip.MustParsePrefix("2001:db8:a::2/64")
		c.ISPGateway = netip.MustParseAddr("2001:db8:a::1")
		c.Throw = []netip.Prefix{netip.MustParsePrefix("fc00::/7")}
	} else {
		c.Address = netip.MustParsePrefix("198.51.100.2/24")
		c.ISPGateway = netip.MustParseAddr("198.51.100.1")
		c.Throw = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	}
	return c
}

func up(t *testing.T, h *netlink.Handle, c *stanza.Config) error {
	t.Helper()
	l, err := policy.Resolve(h, c)
	if err != nil {
		t.Fatal(err)
	}
	return policy.Up(h, l)
}

// An `inet dhcp` stanza has no address or gateway: both come from what the
// kernel has when if-up.d runs.
func TestResolveDynamic(t *testing.T) {
	h, ip := netNS(t)
	ip("addr", "add", "198.51.100.7/24", "dev", "wan0")
	ip("route", "add", "default", "via", "198.51.100.1", "dev", "wan0", "proto", "dhcp")
	c := config(stanza.Inet)
	c.Method, c.Address, c.ISPGateway = "dhcp", netip.Prefix{}, netip.Addr{}
	if err := up(t, h, c); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{"10000: from 198.51.100.7 lookup 100 proto 71"}, lab.NormRules(ip("rule", "show", "table", "100"))); d != "" {
		t.Errorf("rules of table 100 (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string{"default via 198.51.100.1 dev wan0 proto 71"}, routes(ip("route", "show", "table", "100", "default"))); d != "" {
		t.Errorf("table 100 default (-want +got):\n%s", d)
	}
}

// The main table is shared: a default of someone else's at isp-metric's
// metric is an error, never replaced.
func TestMainDefaultConflict(t *testing.T) {
	h, ip := netNS(t)
	ip("addr", "add", "198.51.100.2/24", "dev", "wan0")
	ip("addr", "add", "198.51.100.1/24", "dev", "gw0")
	ip("route", "add", "default", "via", "198.51.100.1", "dev", "gw0", "metric", "5")
	c := config(stanza.Inet)
	c.Metric = 5
	err := up(t, h, c)
	if err == nil || !strings.Contains(err.Error(), `wan0: isp-metric "5": the main table already has default via 198.51.100.1 metric 5 (dev gw0): pick another isp-metric`) {
		t.Fatalf("got %v, want a conflict error", err)
	}
	if d := cmp.Diff([]string{"default via 198.51.100.1 dev gw0 metric 5"}, routes(ip("route", "show", "default"))); d != "" {
		t.Errorf("the other default was touched (-want +got):\n%s", d)
	}
}

// A changed isp-metric or gateway moves ifisp's own routes instead of
// adding a second set.
func TestUpConverges(t *testing.T) {
	h, ip := netNS(t)
	ip("addr", "add", "198.51.100.2/24", "dev", "wan0")
	ip("-6", "addr", "add", "2001:db8:a::2/64", "dev", "wan0")
	for _, fam := range []stanza.Family{stanza.Inet, stanza.Inet6} {
		c := config(fam)
		c.Metric = 0
		if err := up(t, h, c); err != nil {
			t.Fatal(err)
		}
		c.Metric = 7
		if fam == stanza.Inet {
			c.ISPGateway = netip.MustParseAddr("198.51.100.254")
		} else {
			c.ISPGateway = netip.MustParseAddr("2001:db8:a::fe")
		}
		c.Throw = nil
		if err := up(t, h, c); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		cmd  string
		want []string
	}{
		{"-4 route show default", []string{"default via 198.51.100.254 dev wan0 proto 71 metric 7"}},
		{"-6 route show default", []string{"default via 2001:db8:a::fe dev wan0 proto 71 metric 7 pref medium"}},
		{"-4 route show table 100", []string{"default via 198.51.100.254 dev wan0 proto 71"}},
		{"-6 route show table 100", []string{"default via 2001:db8:a::fe dev wan0 proto 71 metric 1024 pref medium"}},
	} {
		if d := cmp.Diff(tc.want, routes(ip(strings.Fields(tc.cmd)...))); d != "" {
			t.Errorf("ip %s (-want +got):\n%s", tc.cmd, d)
		}
	}
}

// The health monitor withdraws a link's main-table defaults, ifupdown's
// (proto boot, onlink) and ifisp's alike, and puts them back field for
// field; both are idempotent.
func TestDefaultsRoundTrip(t *testing.T) {
	h, ip := netNS(t)
	ip("addr", "add", "192.0.2.2/24", "dev", "wan0")
	ip("route", "add", "default", "via", "192.0.2.1", "dev", "wan0", "onlink", "proto", "boot")
	ip("route", "add", "default", "via", "192.0.2.1", "dev", "wan0", "metric", "7", "proto", "71")
	ip("route", "add", "default", "via", "192.0.2.3", "dev", "wan0", "metric", "9") // the admin's: not recorded
	wan0, err := h.LinkByName("wan0")
	if err != nil {
		t.Fatal(err)
	}
	idx := wan0.Attrs().Index
	before := ip("route", "show", "default")
	all, err := policy.MainDefaults(h, idx, stanza.Inet)
	if err != nil || len(all) != 3 {
		t.Fatalf("MainDefaults: %v, %v; want 3", all, err)
	}
	recorded := all[:2] // the kernel lists them by metric
	if n, err := policy.RemoveDefaults(h, idx, stanza.Inet, recorded); err != nil || n != 2 {
		t.Fatalf("RemoveDefaults: %d, %v; want 2", n, err)
	}
	if d := cmp.Diff([]string{"default via 192.0.2.3 dev wan0 metric 9"}, routes(ip("route", "show", "default"))); d != "" {
		t.Errorf("after RemoveDefaults (-want +got):\n%s", d)
	}
	if n, err := policy.RemoveDefaults(h, idx, stanza.Inet, recorded); err != nil || n != 0 {
		t.Errorf("RemoveDefaults again: %d, %v; want 0, nil", n, err)
	}
	for want := 2; want >= 0; want -= 2 {
		if n, err := policy.AddDefaults(h, idx, stanza.Inet, recorded); err != nil || n != want {
			t.Fatalf("AddDefaults: %d, %v; want %d", n, err, want)
		}
	}
	if d := cmp.Diff(routes(before), routes(ip("route", "show", "default"))); d != "" {
		t.Errorf("restored, the defaults differ from before RemoveDefaults (-before +restored):\n%s", d)
	}
}

// routes parses `ip route show` of one table as lab.NormRoutes does,
// without the "main: " it puts in front of a route ip names no table for:
// the command names the table.
func routes(out string) []string {
	var rs []string
	for _, r := range lab.NormRoutes(out) {
		rs = append(rs, strings.TrimPrefix(r, "main: "))
	}
	return rs
}
