package explain

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ifisp/ifisp/pkg/nat"
	"github.com/ifisp/ifisp/pkg/stanza"
)

// tables is an iptables backend that has the tables save holds.
type tables struct{ save string }

func (t tables) Save() (string, error)                  { return t.save, nil }
func (t tables) Restore(string) error                   { panic("explain changed the tables") }
func (t tables) fam(stanza.Family) (nat.Backend, error) { return t, nil }

// TestWrite splices the hooks' commands into what ifup --no-act printed
// (a stand-in that prints what ifupdown 0.8.41 does for the stanza), at
// the hooks installed in the folders, in run-parts order.
func TestWrite(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "interfaces")
	write(t, file, "iface wana inet static\n\taddress 198.51.100.2/24\n\tisp-table ispa\n\tisp-gateway 198.51.100.1\n\tisp-metric 1\n\tsnat-from 10.1.0.0/24\n", 0o644)
	ifup := fakeIfup(t, dir, "\nrun-parts --exit-on-error /etc/network/if-pre-up.d\n"+
		"ip addr add 198.51.100.2/255.255.255.0 broadcast 198.51.100.255 \t  dev wana label wana\nip link set dev wana   up\n\n"+
		"run-parts --exit-on-error /etc/network/if-up.d\n")
	network := installHooks(t, dir)
	write(t, filepath.Join(network, "if-up.d", "ethtool"), "#!/bin/sh\n", 0o755)
	write(t, filepath.Join(network, "if-up.d", "not.run"), "#!/bin/sh\n", 0o755)
	write(t, filepath.Join(network, "if-up.d", "not-executable"), "#!/bin/sh\n", 0o644)

	var b bytes.Buffer
	err := Write(&b, file, "wana", Options{Root: "../../testdata/rt", NetworkDir: network, Ifup: ifup, Backend: tables{}.fam})
	if err != nil {
		t.Fatal(err)
	}
	want := `# ifup wana, as commands, for FILE (nothing has been changed).
# ifupdown's own, from ifup --no-act, and at each run-parts the hooks it runs.

# FILE:1: iface wana inet static
# run-parts /etc/network/if-pre-up.d:
#   ifisp-snat: checks the stanza, then SNAT and the egress guard, before the address exists
iptables-restore --noflush <<'EOF'
*mangle
:IFISP-ARRIVE - [0:0]
:IFISP-ARRIVE-wana - [0:0]
:IFISP-LEAVE - [0:0]
:IFISP-LEAVE-wana - [0:0]
-A IFISP-ARRIVE -m connmark --mark 0x80000000/0x80000000 -m conntrack --ctdir REPLY -m comment --comment "ifisp: replies of inbound connections" -j CONNMARK --restore-mark --nfmask 0xff000000 --ctmask 0xff000000
-A IFISP-ARRIVE -m connmark --mark 0x0/0x80000000 -m conntrack --ctdir ORIGINAL -m comment --comment "ifisp: outbound flows, for isp-sticky" -j CONNMARK --restore-mark --nfmask 0xff000000 --ctmask 0xff000000
-A IFISP-ARRIVE -m conntrack ! --ctstate NEW -m comment --comment "ifisp: marks are set on the first packet only" -j RETURN
-A IFISP-ARRIVE -i wana -m comment --comment "ifisp: wana" -j IFISP-ARRIVE-wana
-A IFISP-ARRIVE-wana -m connmark --mark 0x0/0xff000000 -m comment --comment "ifisp: wana inbound" -j CONNMARK --set-xmark 0xe4000000/0xff000000
-A IFISP-LEAVE -m conntrack ! --ctstate NEW -m comment --comment "ifisp: marks are set on the first packet only" -j RETURN
-A IFISP-LEAVE -o wana -m comment --comment "ifisp: wana" -j IFISP-LEAVE-wana
-A IFISP-LEAVE-wana -m connmark --mark 0x0/0xff000000 -m comment --comment "ifisp: wana outbound" -j CONNMARK --set-xmark 0x64000000/0xff000000
-I POSTROUTING 1 -m comment --comment ifisp -j IFISP-LEAVE
-I PREROUTING 1 -m comment --comment ifisp -j IFISP-ARRIVE
COMMIT
*nat
:IFISP-SNAT - [0:0]
:IFISP-SNAT-wana - [0:0]
-A IFISP-SNAT -o wana -m comment --comment "ifisp: wana" -j IFISP-SNAT-wana
-A IFISP-SNAT-wana -s 10.1.0.0/24 -o wana -m comment --comment "ifisp: wana snat" -j SNAT --to-source 198.51.100.2
-I POSTROUTING 1 -m comment --comment ifisp -j IFISP-SNAT
COMMIT
*filter
:IFISP-GUARD - [0:0]
:IFISP-GUARD-wana - [0:0]
-A IFISP-GUARD -o wana -m comment --comment "ifisp: wana" -j IFISP-GUARD-wana
-A IFISP-GUARD-wana -m conntrack --ctrepldst 198.51.100.2 --ctdir ORIGINAL -m comment --comment "ifisp: wana" -j RETURN
-A IFISP-GUARD-wana -m conntrack --ctorigdst 198.51.100.2 --ctdir REPLY -m comment --comment "ifisp: wana" -j RETURN
-A IFISP-GUARD-wana -s 10.1.0.0/24 -m conntrack ! --ctstatus CONFIRMED -m comment --comment "ifisp: wana new flow, SNAT follows" -j RETURN
-A IFISP-GUARD-wana -m comment --comment "ifisp: wana egress guard" -j DROP
-I FORWARD 1 -m comment --comment ifisp -j IFISP-GUARD
-I OUTPUT 1 -m comment --comment ifisp -j IFISP-GUARD
COMMIT
EOF
ip addr add 198.51.100.2/255.255.255.0 broadcast 198.51.100.255 	  dev wana label wana
ip link set dev wana   up
# run-parts /etc/network/if-up.d:
#   ethtool: not ifisp's (explain cannot tell what it does)
#   ifisp-6rd: nothing for this stanza here
#   ifisp-route: the ISP table, the ` + "`from`" + ` rules, the isp-metric default
ip route replace default via 198.51.100.1 dev wana table 100 proto 71
ip route replace throw 10.0.0.0/8 table 100 proto 71
ip route replace throw 172.16.0.0/12 table 100 proto 71
ip route replace throw 192.168.0.0/16 table 100 proto 71
ip rule add from 198.51.100.2 lookup 100 pref 10000 proto 71
ip rule add fwmark 0xe4000000/0xff000000 lookup 100 pref 10200 proto 71
ip route add default via 198.51.100.1 dev wana metric 1 proto 71
#     and records the link for ifisp-watch: RUNDIR/links/wana.inet.json
#   ifisp-snat: nothing for this stanza here
#   zz-ifisp-conntrack: only if wana now has the main table's preferred default: for each other link that is up, not isp-sticky,
#     conntrack -D -f ipv4 --mark ITS-OUTBOUND-MARK/0xff000000 --src-nat   (in one kernel request each)
`
	got := strings.ReplaceAll(b.String(), file, "FILE")
	got = strings.ReplaceAll(got, os.Getenv("IFISP_RUN_DIR"), "RUNDIR")
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
}

// sixrdStanza is ISP B's 6rd tunnel of the VM tier's scenario
// (integration/sixrd_test.go): prefix 2001:db8:6000::/40, 8 bits of IPv4
// shared, the /64 of 203.0.113.2 on lan0.
const sixrdStanza = `iface sixrd inet6 v4tunnel
	endpoint any
	local 203.0.113.2
	ttl 64
	isp-table ispb
	isp-metric 1
	6rd-prefix 2001:db8:6000::/40
	6rd-ipv4-masklen 8
	6rd-relay 203.0.113.1
	6rd-lan lan0
`

// sixrdIfup is what ifupdown 0.8.41's ifup --no-act prints for
// sixrdStanza.
const sixrdIfup = `
run-parts --exit-on-error /etc/network/if-pre-up.d
modprobe -q net-pf-10 > /dev/null 2>&1 || true # ignore failure.
ip tunnel add sixrd mode sit remote any local 203.0.113.2        ttl 64
ip link set sixrd up

run-parts --exit-on-error /etc/network/if-up.d
`

// TestWriteSixRD: a 6rd stanza's if-up.d is ifisp-6rd's commands for the
// tunnel ifupdown makes, computed by sixrdlink from the stanza's IPv4
// address: `local`, or a literal 6rd-local (an interface's needs the
// kernel, which this test does not ask).
func TestWriteSixRD(t *testing.T) {
	head := `# ifup sixrd, as commands, for FILE (nothing has been changed).
# ifupdown's own, from ifup --no-act, and at each run-parts the hooks it runs.

# FILE:1: iface sixrd inet6 v4tunnel
# run-parts /etc/network/if-pre-up.d:
#   ifisp-snat: checks the stanza, then SNAT and the egress guard, before the address exists
#     nothing: a 6rd tunnel's sources come from its delegated prefix, which ifisp-6rd computes
modprobe -q net-pf-10 > /dev/null 2>&1 || true # ignore failure.
ip tunnel add sixrd mode sit remote any local 203.0.113.2        ttl 64
ip link set sixrd up
# run-parts /etc/network/if-up.d:
#   ifisp-6rd: the tunnel's 6rd parameters, the address from the delegated prefix, its routing
`
	tail := `#   ifisp-route: nothing for this stanza here
#   ifisp-snat: nothing for this stanza here
#   zz-ifisp-conntrack: nothing for this stanza here
`
	for _, tc := range []struct{ name, stanza, want string }{
		{"6rd-lan, isp-table", sixrdStanza, `ip tunnel 6rd dev sixrd 6rd-prefix 2001:db8:6000::/40 6rd-relay_prefix 203.0.0.0/8
ip -6 addr replace 2001:db8:6000:7102::1/64 dev lan0
ip -6 route replace default via ::203.0.113.1 dev sixrd table 101 proto 71
ip -6 route replace throw fc00::/7 table 101 proto 71
ip -6 route replace throw 2001:db8:6000:7102::/64 table 101 proto 71
ip -6 rule add from 2001:db8:6000:7102::1 lookup 101 pref 10000 proto 71
ip -6 rule add from 2001:db8:6000:7102::/64 lookup 101 pref 10100 proto 71
ip -6 route add default via ::203.0.113.1 dev sixrd metric 1 proto 71
#     and records the delegated prefix 2001:db8:6000:7102::/64 (of 203.0.113.2) with the link's plan: RUNDIR/links/sixrd.inet6.json
`},
		// 6rd-local's address wins over local's; without 6rd-lan the
		// tunnel is numbered, with the 6rd prefix's length; without
		// isp-table, isp-metric is a main-table default.
		{"6rd-local address, no 6rd-lan, no isp-table", strings.NewReplacer("\tisp-table ispb\n", "", "\t6rd-ipv4-masklen 8\n", "",
			"6rd-prefix 2001:db8:6000::/40", "6rd-prefix 2001:db8::/32",
			"6rd-lan lan0", "6rd-local 198.51.100.7", "isp-metric 1", "isp-metric 3").Replace(sixrdStanza),
			`ip tunnel 6rd dev sixrd 6rd-prefix 2001:db8::/32 6rd-relay_prefix 0.0.0.0/0
ip -6 addr replace 2001:db8:c633:6407::1/32 dev sixrd
ip -6 route replace default via ::203.0.113.1 dev sixrd metric 3 proto 71
#     and records the delegated prefix 2001:db8:c633:6407::/64 (of 198.51.100.7) with the link's plan: RUNDIR/links/sixrd.inet6.json
`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := explainSixRD(t, tc.stanza)
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(head+tc.want+tail, got); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
	for _, tc := range []struct{ name, stanza, want string }{
		{"no IPv4 address", strings.Replace(sixrdStanza, "\tlocal 203.0.113.2\n", "", 1),
			"ifup would stop in if-pre-up.d: sixrd: local: missing: ifupdown's v4tunnel cannot create a sit tunnel without it (it would be sit0's twin); with 6rd-local IFACE any unicast IPv4 address will do, the tunnel's local address follows IFACE's"},
		{"6rd-local interface without the kernel", strings.Replace(sixrdStanza, "6rd-lan lan0", "6rd-local wanb", 1),
			"sixrd: 6rd-local wanb: explaining needs the kernel, which knows the interface's address"},
	} {
		if _, err := explainSixRD(t, tc.stanza); err == nil || err.Error() != tc.want {
			t.Errorf("%s: got %v, want %q", tc.name, err, tc.want)
		}
	}
}

// explainSixRD explains ifup sixrd for the 6rd stanza, with ifisp's hooks
// installed.
func explainSixRD(t *testing.T, stanza string) (string, error) {
	dir := t.TempDir()
	file := filepath.Join(dir, "interfaces")
	write(t, file, stanza, 0o644)
	var b bytes.Buffer
	err := Write(&b, file, "sixrd", Options{Root: "../../testdata/rt", NetworkDir: installHooks(t, dir), Ifup: fakeIfup(t, dir, sixrdIfup), Backend: tables{}.fam})
	got := strings.ReplaceAll(b.String(), file, "FILE")
	return strings.ReplaceAll(got, os.Getenv("IFISP_RUN_DIR"), "RUNDIR"), err
}

// TestBadStanza: a stanza the hooks would refuse is explained as refused.
func TestBadStanza(t *testing.T) {
	const bad = "iface wana inet static\n\taddress 198.51.100.2/24\n\tisp-table ispa\n\tisp-metirc 1\n"
	const noAct = "run-parts --exit-on-error /etc/network/if-pre-up.d\n"
	if _, err := explainStanza(t, bad, "wana", noAct, "if-pre-up.d", "ifisp-snat"); err == nil || !strings.Contains(err.Error(), `ifup would stop in if-pre-up.d: wana: isp-metirc "1": unknown option`) {
		t.Errorf("got %v", err)
	}
	if _, err := explainStanza(t, bad, "wanb", noAct, "if-pre-up.d", "ifisp-snat"); err == nil || !strings.Contains(err.Error(), "no iface wanb stanza") {
		t.Errorf("unknown interface: %v", err)
	}
}

// fakeIfup writes a stand-in for ifup --no-act that prints output.
func fakeIfup(t *testing.T, dir, output string) string {
	t.Helper()
	ifup := filepath.Join(dir, "ifup")
	write(t, ifup, "#!/bin/sh\ncat <<'EOF'\n"+output+"EOF\n", 0o755)
	return ifup
}

// installHooks links ifisp's hooks into the folders under dir/network as
// hooks/layout says (to stand-in binaries), and returns that folder.
func installHooks(t *testing.T, dir string) string {
	t.Helper()
	layout, err := os.ReadFile("../../hooks/layout")
	if err != nil {
		t.Fatal(err)
	}
	network := filepath.Join(dir, "network")
	for _, line := range strings.Split(string(layout), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 || strings.HasPrefix(f[0], "#") {
			continue
		}
		bin := filepath.Join(dir, "bin", f[2])
		if _, err := os.Stat(bin); err != nil {
			write(t, bin, "#!/bin/true\n", 0o755)
		}
		link(t, bin, filepath.Join(network, f[0], f[1]))
	}
	return network
}

// TestWriteLAN: with isp-lan, ifisp-route's commands start with the LAN
// address and the ISP table throws the LAN's /64 back to main.
func TestWriteLAN(t *testing.T) {
	out, err := explainStanza(t, "iface wanb inet6 static\n\taddress 2001:db8:b::2/64\n\tisp-table ispb\n\tisp-gateway 2001:db8:b::1\n\tisp-source 2001:db8:b100::/56\n\tisp-lan lan0:2\n",
		"wanb", "run-parts --exit-on-error /etc/network/if-pre-up.d\nrun-parts --exit-on-error /etc/network/if-up.d\n", "if-up.d", "ifisp-route")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"#   ifisp-route: the ISP table, the `from` rules, the isp-metric default\nip -6 addr replace 2001:db8:b100:2::1/64 dev lan0\n",
		"ip -6 route replace throw 2001:db8:b100:2::/64 table 101 proto 71\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in\n%s", want, out)
		}
	}
}

// explainStanza explains iface of a file holding stanza, with an ifup
// --no-act that prints noAct and the one hook installed in folder.
func explainStanza(t *testing.T, stanza, iface, noAct, folder, hook string) (string, error) {
	t.Helper()
	dir := t.TempDir()
	file := filepath.Join(dir, "interfaces")
	write(t, file, stanza, 0o644)
	ifup := fakeIfup(t, dir, noAct)
	network := filepath.Join(dir, "network")
	write(t, filepath.Join(network, folder, hook), "#!/bin/true\n", 0o755)
	var b bytes.Buffer
	err := Write(&b, file, iface, Options{Root: "../../testdata/rt", NetworkDir: network, Ifup: ifup, Backend: tables{}.fam})
	return b.String(), err
}

func write(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

func link(t *testing.T, target, path string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, path); err != nil {
		t.Fatal(err)
	}
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ifisp-explain-run-")
	if err != nil {
		panic(err)
	}
	os.Setenv("IFISP_RUN_DIR", dir)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
