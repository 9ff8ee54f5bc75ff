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
	ifup := filepath.Join(dir, "ifup")
	write(t, ifup, "#!/bin/sh\ncat <<'EOF'\n\nrun-parts --exit-on-error /etc/network/if-pre-up.d\n"+
		"ip addr add 198.51.100.2/255.255.255.0 broadcast 198.51.100.255 \t  dev wana label wana\nip link set dev wana   up\n\n"+
		"run-parts --exit-on-error /etc/network/if-up.d\nEOF\n", 0o755)
	network := filepath.Join(dir, "network")
	bin := filepath.Join(dir, "bin")
	for _, b := range []string{"ifisp-route", "ifisp-snat", "ifisp-conntrack", "ifisp-6rd"} {
		write(t, filepath.Join(bin, b), "#!/bin/true\n", 0o755)
	}
	link(t, filepath.Join(bin, "ifisp-snat"), filepath.Join(network, "if-pre-up.d", "ifisp-snat"))
	for name, b := range map[string]string{"ifisp-route": "ifisp-route", "zz-ifisp-conntrack": "ifisp-conntrack", "ifisp-snat": "ifisp-snat"} {
		link(t, filepath.Join(bin, b), filepath.Join(network, "if-up.d", name))
	}
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
*nat
:IFISP-SNAT - [0:0]
:IFISP-SNAT-wana - [0:0]
-A IFISP-SNAT -o wana -m comment --comment "ifisp: wana" -j IFISP-SNAT-wana
-A IFISP-SNAT-wana -s 10.1.0.0/24 -o wana -m comment --comment "ifisp: wana snat" -j SNAT --to-source 198.51.100.2
-I POSTROUTING 1 -m comment --comment ifisp -j IFISP-SNAT
COMMIT
EOF
ip addr add 198.51.100.2/255.255.255.0 broadcast 198.51.100.255 	  dev wana label wana
ip link set dev wana   up
# run-parts /etc/network/if-up.d:
#   ethtool: not ifisp's (explain cannot tell what it does)
#   ifisp-route: the ISP table, the ` + "`from`" + ` rules, the isp-metric default
ip route replace default via 198.51.100.1 dev wana table 100 proto 71
ip route replace throw 10.0.0.0/8 table 100 proto 71
ip route replace throw 172.16.0.0/12 table 100 proto 71
ip route replace throw 192.168.0.0/16 table 100 proto 71
ip rule add from 198.51.100.2 lookup 100 pref 10000 proto 71
ip route add default via 198.51.100.1 dev wana metric 1 proto 71
#     and records the link for ifisp-watch: RUNDIR/links/wana.inet.json
#   ifisp-snat: nothing for this stanza here
#   zz-ifisp-conntrack: deletes the conntrack entries whose NAT no longer fits the route they now take (which ones, only the moment tells)
`
	got := strings.ReplaceAll(b.String(), file, "FILE")
	got = strings.ReplaceAll(got, os.Getenv("IFISP_RUN_DIR"), "RUNDIR")
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
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
	ifup := filepath.Join(dir, "ifup")
	write(t, ifup, "#!/bin/sh\ncat <<'EOF'\n"+noAct+"EOF\n", 0o755)
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
