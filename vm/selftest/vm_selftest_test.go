//go:build vmtest

package selftest_test

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/ifisp/ifisp/pkg/sixrd"
)

// guest skips the test outside the VM guest: there it would need root and
// change the host, and the host kernel may lack what it checks.
func guest(t *testing.T) {
	t.Helper()
	if os.Getenv("IFISP_VM") != "1" {
		t.Skip("runs only in the VM guest (vm/run.sh sets IFISP_VM=1)")
	}
}

// run runs a command, in network namespace ns unless ns is empty, and
// returns its combined output; any failure fails the test.
func run(t *testing.T, ns string, args ...string) string {
	t.Helper()
	out, err := try(ns, args...)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	return out
}

// try is run without failing the test.
func try(ns string, args ...string) (string, error) {
	if ns != "" {
		args = append([]string{"ip", "netns", "exec", ns}, args...)
	}
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %v", strings.Join(args, " "), err)
	}
	return string(out), nil
}

// newNS makes a network namespace named after the test and removes it (and
// with it every interface inside) in cleanup.
func newNS(t *testing.T, suffix string) string {
	t.Helper()
	name := "st-" + strings.ToLower(strings.NewReplacer("/", "-", "Test", "").Replace(t.Name())) + "-" + suffix
	run(t, "", "ip", "netns", "add", name)
	t.Cleanup(func() { try("", "ip", "netns", "del", name) })
	run(t, name, "ip", "link", "set", "lo", "up")
	return name
}

// vethPair links namespace a's interface aName with namespace b's bName.
func vethPair(t *testing.T, a, aName, b, bName string) {
	t.Helper()
	run(t, "", "ip", "link", "add", aName, "netns", a, "type", "veth", "peer", "name", bName, "netns", b)
	run(t, a, "ip", "link", "set", aName, "up")
	run(t, b, "ip", "link", "set", bName, "up")
}

// ping sends count echo requests from namespace ns to dst and fails the test
// unless all are answered; it returns ping's output. The deadline is generous:
// under software emulation everything is slow.
func ping(t *testing.T, ns, dst string, count int) string {
	t.Helper()
	return run(t, ns, "ping", "-n", "-c", strconv.Itoa(count), "-i", "0.2", "-w", "20", dst)
}

func mustContain(t *testing.T, what, out string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("%s lacks %q:\n%s", what, w, out)
		}
	}
}

func TestVethAcrossNamespaces(t *testing.T) {
	guest(t)
	a, b := newNS(t, "a"), newNS(t, "b")
	vethPair(t, a, "v0", b, "v0")
	run(t, a, "ip", "addr", "add", "10.0.0.1/24", "dev", "v0")
	run(t, b, "ip", "addr", "add", "10.0.0.2/24", "dev", "v0")
	run(t, a, "ip", "-6", "addr", "add", "fd00::1/64", "dev", "v0", "nodad")
	run(t, b, "ip", "-6", "addr", "add", "fd00::2/64", "dev", "v0", "nodad")
	ping(t, a, "10.0.0.2", 1)
	ping(t, a, "fd00::2", 1)
	if out := run(t, "", "ip", "netns", "list"); !strings.Contains(out, a) || !strings.Contains(out, b) {
		t.Errorf("ip netns list lacks %s or %s:\n%s", a, b, out)
	}
}

func TestVLANOnVeth(t *testing.T) {
	guest(t)
	a, b := newNS(t, "a"), newNS(t, "b")
	vethPair(t, a, "eth2", b, "eth2")
	for i, ns := range []string{a, b} {
		run(t, ns, "ip", "link", "add", "link", "eth2", "name", "eth2.4", "type", "vlan", "id", "4")
		run(t, ns, "ip", "link", "set", "eth2.4", "up")
		run(t, ns, "ip", "addr", "add", fmt.Sprintf("10.4.0.%d/24", i+1), "dev", "eth2.4")
	}
	mustContain(t, "ip -d link show eth2.4", run(t, a, "ip", "-d", "link", "show", "eth2.4"), "vlan protocol 802.1Q id 4")
	// The untagged veth has no address: the reply can only come over the VLAN.
	ping(t, a, "10.4.0.2", 1)

	// The project's Go netlink library sees it too, from a handle into the
	// namespace (the thread never moves).
	h, err := netns.GetFromName(a)
	if err != nil {
		t.Fatalf("netns %s: %v", a, err)
	}
	defer h.Close()
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		t.Fatalf("netlink handle in %s: %v", a, err)
	}
	defer nl.Close()
	link, err := nl.LinkByName("eth2.4")
	if err != nil {
		t.Fatalf("netlink: eth2.4 in %s: %v", a, err)
	}
	if v, ok := link.(*netlink.Vlan); !ok || v.VlanId != 4 {
		t.Errorf("netlink: eth2.4 is %T %+v, want a VLAN with id 4", link, link.Attrs())
	}
}

// TestSixRD builds a 6rd customer edge (CE) and border relay (BR) from
// pkg/sixrd's arithmetic and checks that the kernel's sit driver agrees with
// it: traffic inside the 6rd domain goes straight to the IPv4 address
// embedded in the destination, traffic beyond it goes to the relay through
// the ::a.b.c.d next hop.
func TestSixRD(t *testing.T) {
	guest(t)
	prefix := netip.MustParsePrefix("2001:db8::/32")
	const maskLen = 8 // the 6rd domain is 192.0.0.0/8: 24 IPv4 bits in the prefix
	ceV4, brV4 := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	beyond := "2001:db9::1" // outside the 6rd prefix: reached through the relay

	ce, br := newNS(t, "ce"), newNS(t, "br")
	vethPair(t, ce, "wan0", br, "wan0")
	addrs := map[string]netip.Addr{}
	for _, n := range []struct {
		ns string
		v4 netip.Addr
	}{{ce, ceV4}, {br, brV4}} {
		delegated, err := sixrd.Delegated(prefix, maskLen, n.v4)
		if err != nil {
			t.Fatal(err)
		}
		subnet, err := sixrd.Subnet(delegated, 0)
		if err != nil {
			t.Fatal(err)
		}
		relayPrefix, err := sixrd.RelayPrefix(n.v4, maskLen)
		if err != nil {
			t.Fatal(err)
		}
		addrs[n.ns] = sixrd.LANAddr(subnet)
		run(t, n.ns, "ip", "addr", "add", n.v4.String()+"/24", "dev", "wan0")
		run(t, n.ns, "ip", "tunnel", "add", "6rd", "mode", "sit", "local", n.v4.String(), "ttl", "64")
		run(t, n.ns, "ip", "tunnel", "6rd", "dev", "6rd", "6rd-prefix", prefix.String(), "6rd-relay_prefix", relayPrefix.String())
		run(t, n.ns, "ip", "link", "set", "6rd", "up")
		// The address with the 6rd prefix's length puts the whole domain on
		// the tunnel.
		run(t, n.ns, "ip", "-6", "addr", "add", fmt.Sprintf("%s/%d", addrs[n.ns], prefix.Bits()), "dev", "6rd", "nodad")
		mustContain(t, "ip -d link show 6rd", run(t, n.ns, "ip", "-d", "link", "show", "6rd"),
			"6rd-prefix "+prefix.String(), "6rd-relay_prefix "+relayPrefix.String())
	}
	if want := netip.MustParseAddr("2001:db8:2:100::1"); addrs[ce] != want {
		t.Fatalf("CE address %s, want %s", addrs[ce], want)
	}
	run(t, br, "ip", "-6", "addr", "add", beyond+"/128", "dev", "lo")
	run(t, ce, "ip", "-6", "route", "add", "::/0", "via", sixrd.RelayNextHop(brV4).String(), "dev", "6rd")

	ping(t, ce, addrs[br].String(), 2)
	ping(t, ce, beyond, 2)
	// Both went as IPv4 protocol 41 between the two IPv4 addresses.
	if out := run(t, ce, "ip", "-s", "link", "show", "6rd"); !regexp.MustCompile(`TX:.*\n\s+[0-9]+\s+[1-9]`).MatchString(out) {
		t.Errorf("6rd tunnel counted no transmitted packets:\n%s", out)
	}
}

func TestNetem(t *testing.T) {
	guest(t)
	a, b := newNS(t, "a"), newNS(t, "b")
	vethPair(t, a, "v0", b, "v0")
	run(t, a, "ip", "addr", "add", "10.0.0.1/24", "dev", "v0")
	run(t, b, "ip", "addr", "add", "10.0.0.2/24", "dev", "v0")
	run(t, a, "tc", "qdisc", "add", "dev", "v0", "root", "netem", "delay", "100ms")
	mustContain(t, "tc qdisc show", run(t, a, "tc", "qdisc", "show", "dev", "v0"), "netem", "delay 100ms")
	out := ping(t, a, "10.0.0.2", 3)
	// Emulation only ever adds delay: assert the lower bound.
	m := regexp.MustCompile(`rtt min/avg/max/mdev = ([0-9.]+)/`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no RTT in ping output:\n%s", out)
	}
	if low, _ := strconv.ParseFloat(m[1], 64); low < 100 {
		t.Errorf("minimum RTT %.1f ms through netem delay 100ms, want >= 100 ms", low)
	}
}

// TestNATAndConntrack routes a client through a router that SNATs it to its
// WAN address. The server has no route back to the client's range, so an
// answer proves the translation; conntrack must show it.
func TestNATAndConntrack(t *testing.T) {
	guest(t)
	for _, backend := range []string{"nft", "legacy"} {
		t.Run(backend, func(t *testing.T) {
			iptables := "iptables-" + backend
			c, r, s := newNS(t, "c"), newNS(t, "r"), newNS(t, "s")
			vethPair(t, c, "eth0", r, "lan0")
			vethPair(t, r, "wan0", s, "eth0")
			run(t, c, "ip", "addr", "add", "10.1.0.2/24", "dev", "eth0")
			run(t, c, "ip", "route", "add", "default", "via", "10.1.0.1")
			run(t, r, "ip", "addr", "add", "10.1.0.1/24", "dev", "lan0")
			run(t, r, "ip", "addr", "add", "192.0.2.1/24", "dev", "wan0")
			run(t, r, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
			run(t, s, "ip", "addr", "add", "192.0.2.2/24", "dev", "eth0")

			run(t, r, iptables, "-t", "nat", "-A", "POSTROUTING", "-o", "wan0", "-s", "10.1.0.0/24",
				"-m", "comment", "--comment", "ifisp-selftest", "-j", "SNAT", "--to-source", "192.0.2.1")
			mustContain(t, iptables+" -S", run(t, r, iptables, "-t", "nat", "-S", "POSTROUTING"),
				`--comment ifisp-selftest -j SNAT --to-source 192.0.2.1`)
			ping(t, c, "192.0.2.2", 2)

			ct := run(t, r, "conntrack", "-L", "-p", "icmp")
			mustContain(t, "conntrack -L", ct, "src=10.1.0.2 dst=192.0.2.2", "src=192.0.2.2 dst=192.0.2.1")
			// What ifisp-conntrack will do: delete by NAT state.
			run(t, r, "conntrack", "-D", "--src-nat")
			if out, _ := try(r, "conntrack", "-L", "-p", "icmp"); strings.Contains(out, "src=10.1.0.2") {
				t.Errorf("conntrack -D --src-nat left the entry:\n%s", out)
			}
		})
	}
}

// TestIfupdown brings an interface up and down with ifupdown in a namespace,
// with the namespace's own /etc/network (ip netns exec binds
// /etc/netns/NS/network over it), and checks that hooks ran through
// run-parts with the stanza's options in their environment.
func TestIfupdown(t *testing.T) {
	guest(t)
	mustContain(t, "ifup --version", run(t, "", "ifup", "--version"), "ifup version 0.8")

	x, y := newNS(t, "x"), newNS(t, "y")
	vethPair(t, x, "wan0", y, "eth0")
	run(t, x, "ip", "link", "set", "wan0", "down")
	etc := filepath.Join("/etc/netns", x, "network")
	t.Cleanup(func() { os.RemoveAll(filepath.Dir(etc)) })
	record := filepath.Join(t.TempDir(), "hooks")
	write := func(path, content string, mode os.FileMode) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(etc, "interfaces"), `iface wan0 inet static
	address 198.51.100.2/24
	gateway 198.51.100.1
	isp-table 100
`, 0o644)
	hook := "#!/bin/sh\necho \"$PHASE $IFACE $ADDRFAM $METHOD $IF_ADDRESS $IF_NETMASK $IF_ISP_TABLE\" >>" + record + "\n"
	for _, d := range []string{"if-pre-up.d", "if-up.d", "if-down.d", "if-post-down.d"} {
		write(filepath.Join(etc, d, "selftest"), hook, 0o755)
	}
	state := t.TempDir()

	run(t, x, "ifup", "--state-dir", state, "wan0")
	mustContain(t, "ip addr", run(t, x, "ip", "-4", "addr", "show", "dev", "wan0"), "inet 198.51.100.2/24")
	mustContain(t, "ip route", run(t, x, "ip", "-4", "route", "show", "default"), "default via 198.51.100.1 dev wan0")
	mustContain(t, "ifquery --state", run(t, x, "ifquery", "--state-dir", state, "--state"), "wan0=wan0")
	run(t, x, "ifdown", "--state-dir", state, "wan0")
	if out := run(t, x, "ip", "-4", "addr", "show", "dev", "wan0"); strings.Contains(out, "198.51.100.2") {
		t.Errorf("ifdown left the address:\n%s", out)
	}

	got, err := os.ReadFile(record)
	if err != nil {
		t.Fatalf("no hook ran: %v", err)
	}
	want := `pre-up wan0 inet static 198.51.100.2 255.255.255.0 100
post-up wan0 inet static 198.51.100.2 255.255.255.0 100
pre-down wan0 inet static 198.51.100.2 255.255.255.0 100
post-down wan0 inet static 198.51.100.2 255.255.255.0 100
`
	if string(got) != want {
		t.Errorf("hooks ran as\n%s\nwant\n%s", got, want)
	}
}

// TestProjectBinaries checks that vm/run.sh put the project's binaries on
// the guest's PATH.
func TestProjectBinaries(t *testing.T) {
	guest(t)
	dir := os.Getenv("IFISP_VM_BIN")
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) == 0 {
		t.Fatalf("IFISP_VM_BIN=%q: %d binaries, %v", dir, len(entries), err)
	}
	for _, e := range entries {
		p, err := exec.LookPath(e.Name())
		if err != nil || p != filepath.Join(dir, e.Name()) {
			t.Errorf("%s resolves to %q (%v), want %s", e.Name(), p, err, filepath.Join(dir, e.Name()))
		}
	}
}
