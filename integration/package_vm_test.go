//go:build vmtest

package integration

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ifisp/ifisp/internal/lab"
	"github.com/ifisp/ifisp/pkg/registry"
	"github.com/ifisp/ifisp/pkg/rundir"
	"github.com/ifisp/ifisp/pkg/stanza"
	"github.com/ifisp/ifisp/pkg/status"
)

// packagedStanzas is the guest's own /etc/network/interfaces in
// TestPackagedWAN: one WAN, inet and inet6, brought up at boot. The ISP's
// router is at .1 and ::1 of the WAN's prefixes.
const packagedStanzas = `auto lo
iface lo inet loopback

auto wan0
iface wan0 inet static
	address 192.0.2.2/24
	isp-table 100
	isp-gateway 192.0.2.1
	isp-metric 10
	snat-from 10.9.0.0/24

iface wan0 inet6 static
	address 2001:db8:9::2/64
	dad-attempts 0
	isp-table 100
	isp-gateway 2001:db8:9::1
	isp-metric 10
`

// TestPackagedWAN is ifisp as the Debian package installs it, on the
// guest's own network: vm/run.sh has unpacked the package that make deb
// built into the guest's root (IFISP_VM_DEB), the WAN's stanzas are in
// /etc/network/interfaces, and ifup -a, as networking.service runs it at
// boot, runs the packaged hook scripts of /etc/network/if-*.d, which run
// the packaged /usr/sbin binaries. The routing, rules and chains are in
// the kernel, the packaged ifisp check and ifisp status --json agree on
// them, and ifdown -a, as the service stops, leaves nothing behind.
func TestPackagedWAN(t *testing.T) {
	if os.Getenv("IFISP_VM") != "1" {
		t.Skip("runs only in the VM guest (vm/run.sh sets IFISP_VM=1): it configures the machine's own network")
	}
	pkg, err := os.ReadFile("/ifisp-vm/package")
	if err != nil {
		t.Fatalf("no Debian package in the guest (%v): make test-vm installs the one make deb builds; by hand, vm/run.sh with IFISP_VM_DEB=bin/deb/ifisp_VERSION_amd64.deb", err)
	}
	t.Logf("package: %s", strings.TrimSpace(string(pkg)))
	ifisp := "/usr/sbin/ifisp" // the package's, not vm/run.sh's in /usr/local/sbin
	sh := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	state := func() string {
		t.Helper()
		return strings.Join(slices.Concat(lab.NormRules(sh("ip", "-4", "rule")), lab.NormRules(sh("ip", "-6", "rule")),
			lab.NormRoutes(sh("ip", "-4", "route", "show", "table", "all")), lab.NormRoutes(sh("ip", "-6", "route", "show", "table", "all"))), "\n")
	}

	// The ISP: wan0's peer in a namespace of its own, its router's
	// addresses on it.
	isp := fmt.Sprintf("ifisp-pkg-isp-%d", os.Getpid())
	sh("ip", "netns", "add", isp)
	t.Cleanup(func() {
		exec.Command("ip", "netns", "del", isp).Run()
		os.RemoveAll(filepath.Join("/etc/netns", isp))
	})
	sh("ip", "link", "add", "wan0", "type", "veth", "peer", "isp0", "netns", isp)
	t.Cleanup(func() { exec.Command("ip", "link", "del", "wan0").Run() })
	for _, args := range [][]string{{"addr", "add", "192.0.2.1/24", "dev", "isp0"}, {"addr", "add", "2001:db8:9::1/64", "dev", "isp0", "nodad"}, {"link", "set", "isp0", "up"}} {
		sh(append([]string{"ip", "-n", isp}, args...)...)
	}
	const interfaces = "/etc/network/interfaces"
	before, err := os.ReadFile(interfaces)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(interfaces, []byte(packagedStanzas), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		exec.Command("ifdown", "-a", "--read-environment", "--exclude=lo").Run()
		os.WriteFile(interfaces, before, 0o644)
	})
	pristine := state()

	out := sh("ifup", "-a", "--read-environment")
	t.Logf("ifup -a:\n%s", out)
	// Whole lines, as ip prints them (less its trailing blanks); ifisp's
	// route protocol by name, from the package's rt_protos.d entry.
	for _, c := range []struct {
		cmd  []string
		want string
	}{
		{[]string{"ip", "-4", "rule"}, "10000:\tfrom 192.0.2.2 lookup 100 proto ifisp"},
		{[]string{"ip", "-6", "rule"}, "10000:\tfrom 2001:db8:9::2 lookup 100 proto ifisp"},
		{[]string{"ip", "-4", "rule"}, "10200:\tfrom all fwmark 0xe4000000/0xff000000 lookup 100 proto ifisp"},
		{[]string{"ip", "-6", "rule"}, "10200:\tfrom all fwmark 0xe4000000/0xff000000 lookup 100 proto ifisp"},
		{[]string{"ip", "-4", "route", "show", "table", "100"}, "default via 192.0.2.1 dev wan0 proto ifisp"},
		{[]string{"ip", "-4", "route", "show", "table", "100"}, "throw 10.0.0.0/8 proto ifisp"},
		{[]string{"ip", "-6", "route", "show", "table", "100"}, "default via 2001:db8:9::1 dev wan0 proto ifisp metric 1024 pref medium"},
		{[]string{"ip", "-6", "route", "show", "table", "100"}, "throw fc00::/7 dev lo proto ifisp metric 1024 pref medium"},
		{[]string{"ip", "-4", "route"}, "default via 192.0.2.1 dev wan0 proto ifisp metric 10"},
		{[]string{"ip", "-6", "route"}, "default via 2001:db8:9::1 dev wan0 proto ifisp metric 10 pref medium"},
		{[]string{"iptables-save", "-t", "nat"}, `-A IFISP-SNAT-wan0 -s 10.9.0.0/24 -o wan0 -m comment --comment "ifisp: wan0 snat" -j SNAT --to-source 192.0.2.2`},
		{[]string{"iptables-save", "-t", "filter"}, `-A IFISP-GUARD-wan0 -m comment --comment "ifisp: wan0 egress guard" -j DROP`},
		{[]string{"iptables-save", "-t", "mangle"}, `-A IFISP-LEAVE-wan0 -m connmark --mark 0x0/0xff000000 -m comment --comment "ifisp: wan0 outbound" -j CONNMARK --set-xmark 0x64000000/0xff000000`},
	} {
		got := sh(c.cmd...)
		if !slices.ContainsFunc(strings.Split(got, "\n"), func(l string) bool { return strings.TrimRight(l, " ") == c.want }) {
			t.Errorf("%s lacks the line %q:\n%s", strings.Join(c.cmd, " "), c.want, got)
		}
	}
	// The router reaches its ISP from the WAN's address.
	sh("ping", "-c", "1", "-W", "5", "-I", "192.0.2.2", "192.0.2.1")

	// ifisp check: clean, also against the kernel, and it counts the
	// stanzas that status must show.
	if out := sh(ifisp, "check"); out != interfaces+": ok (2 ifisp stanzas in 1 file)\n" {
		t.Errorf("ifisp check: %q", out)
	}
	sh(ifisp, "check", "--kernel", "-q")
	readStatus := func() status.Status {
		t.Helper()
		var s status.Status
		if out := sh(ifisp, "status", "--json"); json.Unmarshal([]byte(out), &s) != nil {
			t.Fatalf("ifisp status --json is not its JSON:\n%s", out)
		}
		return s
	}
	s := readStatus()
	if s.RunDir != rundir.Base {
		t.Errorf("status: run dir %s, want %s", s.RunDir, rundir.Base)
	}
	a := netip.MustParseAddr
	wants := []status.Link{
		{Iface: "wan0", Family: stanza.Inet, Table: 100, Address: a("192.0.2.2"), Gateway: a("192.0.2.1")},
		{Iface: "wan0", Family: stanza.Inet6, Table: 100, Address: a("2001:db8:9::2"), Gateway: a("2001:db8:9::1")},
	}
	if len(s.Links) != len(wants) {
		t.Fatalf("status: %d links, want the %d stanzas ifisp check counted: %+v", len(s.Links), len(wants), s.Links)
	}
	for i, w := range wants {
		got := s.Links[i]
		name := w.Iface + " " + string(w.Family)
		main := []status.Route{{Gateway: w.Gateway, Metric: 10, Protocol: 71}}
		switch {
		case got.Iface != w.Iface || got.Family != w.Family || got.Table != w.Table || got.Address != w.Address || got.Gateway != w.Gateway:
			t.Errorf("status link %d: %s %s table %d %s via %s, want %s table %d %s via %s", i, got.Iface, got.Family, got.Table, got.Address, got.Gateway, name, w.Table, w.Address, w.Gateway)
		case !got.Present || !got.Carrier || len(got.Problems) > 0:
			t.Errorf("status %s: present %v, carrier %v, problems %q", name, got.Present, got.Carrier, got.Problems)
		case !slices.Equal(got.Rules, []status.Rule{{Priority: 10000, From: netip.PrefixFrom(w.Address, w.Address.BitLen())}, {Priority: 10200, Fwmark: "0xe4000000/0xff000000"}}):
			t.Errorf("status %s: rules %+v", name, got.Rules)
		case got.TableDefault == nil || got.TableDefault.Gateway != w.Gateway:
			t.Errorf("status %s: table default %+v, want via %s", name, got.TableDefault, w.Gateway)
		case !slices.Equal(got.MainDefaults, main) || !slices.Equal(got.RecordedDefaults, main):
			t.Errorf("status %s: main defaults %+v, recorded %+v, want %+v", name, got.MainDefaults, got.RecordedDefaults, main)
		case got.GuardDropped == nil:
			t.Errorf("status %s: no egress guard", name)
		}
	}
	if snat := s.Links[0].SNAT; len(snat) != 1 || snat[0].From != netip.MustParsePrefix("10.9.0.0/24") || snat[0].To != a("192.0.2.2") {
		t.Errorf("status wan0 inet: SNAT %+v, want 10.9.0.0/24 to 192.0.2.2", snat)
	}

	// ifupdown's own inet6 down prints "RTNETLINK answers: Cannot assign
	// requested address": the inet stanza's `ip link set dev wan0 down`
	// has taken the IPv6 address already (the kernel drops IPv6
	// addresses with the link), and ifdown still exits 0.
	out = sh("ifdown", "-a", "--read-environment", "--exclude=lo")
	t.Logf("ifdown -a:\n%s", out)
	if after := state(); after != pristine {
		t.Errorf("ifdown -a left rules or routes:\n--- before ifup\n%s\n--- after ifdown\n%s", pristine, after)
	}
	for _, save := range []string{"iptables-save", "ip6tables-save"} {
		if out := sh(save); strings.Contains(out, "IFISP") {
			t.Errorf("ifdown -a left ifisp's chains in %s:\n%s", save, out)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(rundir.Base, registry.Folder, "*")); len(left) > 0 {
		t.Errorf("ifdown -a left links in the registry: %q", left)
	}
	if links := readStatus().Links; len(links) != 0 {
		t.Errorf("ifisp status after ifdown -a: %+v, want no links", links)
	}
}
