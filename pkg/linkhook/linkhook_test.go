package linkhook

import (
	"slices"
	"strings"
	"testing"

	"github.com/ifisp/ifisp/hooks"
	"github.com/ifisp/ifisp/pkg/stanza"
)

// Every hook of hooks/layout is a binary Run knows, and every binary Run
// knows is in the layout: otherwise ifisp-lease would skip a step of ifup.
func TestByBinaryIsTheLayout(t *testing.T) {
	for b := range hooks.Binaries() {
		if ByBinary[b] == nil {
			t.Errorf("hooks/layout runs %s, which ByBinary lacks", b)
		}
	}
	for b := range ByBinary {
		if !hooks.Binaries()[b] {
			t.Errorf("ByBinary has %s, which hooks/layout never runs", b)
		}
	}
	layout, err := hooks.Layout()
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range layout {
		if phases[h.Folder] == "" {
			t.Errorf("hooks/layout puts %s in %s, which Run does not know", h.Binary, h.Folder)
		}
	}
}

// Each hook has work only for the stanzas it acts on; for the others it
// exits before the lock and netlink (hook.Step.For). A step wrongly
// skipped would leave an ifup half done, so every binary and phase of the
// layout is listed for each kind of stanza.
func TestStepsFor(t *testing.T) {
	stanzas := map[string][]string{
		"static inet": {"IFACE=wana", "ADDRFAM=inet", "METHOD=static", "IF_ADDRESS=198.51.100.2/24",
			"IF_GATEWAY=198.51.100.1", "IF_ISP_TABLE=200", "IF_SNAT_FROM=10.1.0.0/24"},
		"static inet6": {"IFACE=wana", "ADDRFAM=inet6", "METHOD=static", "IF_ADDRESS=2001:db8:a::2/64", "IF_GATEWAY=2001:db8:a::1", "IF_ISP_TABLE=200"},
		"dhcp inet":    {"IFACE=wanb", "ADDRFAM=inet", "METHOD=dhcp", "IF_ISP_TABLE=201", "IF_SNAT_FROM=10.1.0.0/24"},
		"6rd": {"IFACE=sixrd", "ADDRFAM=inet6", "METHOD=v4tunnel", "IF_LOCAL=203.0.113.2", "IF_6RD_PREFIX=2001:db8::/32",
			"IF_6RD_RELAY=192.0.2.254", "IF_6RD_IPV4_MASKLEN=8"},
		"ppp": {"IFACE=dsl", "ADDRFAM=inet", "METHOD=ppp", "IF_PROVIDER=dsl", "IF_ISP_TABLE=202", "IF_SNAT_FROM=10.1.0.0/24"},
	}
	// want lists, per stanza, the binary/phase pairs that have work.
	want := map[string][]string{
		"static inet":  {"ifisp-route post-up", "ifisp-route pre-down", "ifisp-route post-down", "ifisp-snat pre-up", "ifisp-snat post-down", "ifisp-conntrack post-up", "ifisp-conntrack pre-down"},
		"static inet6": {"ifisp-route post-up", "ifisp-route pre-down", "ifisp-route post-down", "ifisp-snat pre-up", "ifisp-snat post-down"},
		"dhcp inet":    {"ifisp-route post-up", "ifisp-route pre-down", "ifisp-route post-down", "ifisp-snat pre-up", "ifisp-snat post-up", "ifisp-snat post-down", "ifisp-conntrack post-up", "ifisp-conntrack pre-down"},
		"6rd":          {"ifisp-6rd post-up", "ifisp-6rd post-down", "ifisp-route pre-down", "ifisp-snat pre-up", "ifisp-snat post-down"},
		"ppp":          {"ifisp-route post-up", "ifisp-route pre-down", "ifisp-route post-down"},
	}
	layout, err := hooks.Layout()
	if err != nil {
		t.Fatal(err)
	}
	for name, e := range stanzas {
		c, err := stanza.Parse(append(e, "LOGICAL="+strings.TrimPrefix(e[0], "IFACE="), "MODE=start", "PHASE=post-up"), t.TempDir())
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var got []string
		for _, h := range layout {
			if ByBinary[h.Binary].For(c, phases[h.Folder]) != nil {
				got = append(got, h.Binary+" "+phases[h.Folder])
			}
		}
		slices.Sort(got)
		w := slices.Sorted(slices.Values(want[name]))
		if !slices.Equal(got, w) {
			t.Errorf("%s: steps with work\n got %q\nwant %q", name, got, w)
		}
	}
}
