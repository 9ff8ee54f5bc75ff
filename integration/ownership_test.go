package integration

import (
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ifisp/ifisp/internal/lab"
	"github.com/ifisp/ifisp/pkg/connmark"
)

// TestIfdownForceOfRefusedStanza: a stanza wanx that names wanb's table is
// refused at ifup with nothing changed, and `ifdown --force wanx` then
// leaves wanb's rules, table, iptables rules and conntrack entries exactly
// as they were: wanx's record says it owns nothing.
func TestIfdownForceOfRefusedStanza(t *testing.T) {
	l := lab.New(t)
	l.Install(bin)
	l.Must(l.Router, "ip", "link", "add", "wanx", "type", "veth", "peer", "name", "wanxp")
	l.Must(l.Router, "ip", "link", "set", "wanxp", "up")
	l.Interfaces(lab.TwoISPs + `
iface wanx inet static
	address 192.168.99.2/24
	isp-table ispb
	isp-gateway 192.168.99.1
	snat-from 10.1.0.0/24
`)
	l.EchoServers()
	l.MustIfup("wana", "wanb")
	flow := l.StartFlow("udp", 20*time.Second)
	defer flow.Stop()
	if _, ok := l.PingRun(l.LAN, lab.Internet, 5, 5*time.Second); !ok {
		t.Fatal("the LAN cannot reach the internet host")
	}
	mark := connmark.Mark{ID: connmark.DefaultID(l.B.Table, connmark.DefaultMask), Mask: connmark.DefaultMask}
	flows := func() []string { return conntrackIDs(t, l, mark.Out(), mark.Mask) }
	waitFlows(t, flows)
	before, beforeFlows := l.State(), flows()

	out, err := l.Ifup("wanx")
	if err == nil {
		t.Fatalf("ifup wanx was accepted:\n%s", out)
	}
	if !strings.Contains(out, "wanb's already") {
		t.Errorf("ifup wanx refused, but not for the table:\n%s", out)
	}
	if diff := routing(before, l.State()); diff != "" {
		t.Errorf("the refused ifup changed the state (-before +after):\n%s", diff)
	}
	if out, err := l.Ifdown("--force", "wanx"); err != nil {
		t.Logf("ifdown --force wanx: %v\n%s", err, out) // ifupdown's own address removal fails: never added
	}
	if diff := routing(before, l.State()); diff != "" {
		t.Errorf("ifdown --force of the refused wanx changed wanb's state (-before +after):\n%s", diff)
	}
	if after := flows(); !slices.Equal(beforeFlows, after) {
		t.Errorf("conntrack entries under wanb's mark %#x: %v before, %v after ifdown --force wanx", mark.Out(), beforeFlows, after)
	}
	if code, out := statusCode(l); code != 0 {
		t.Errorf("ifisp status: exit %d, want 0:\n%s", code, out)
	}
}

// routing is the difference of the rules, routes and iptables rules of
// two states, and of the registry (the interfaces may differ: wanx went
// up and down).
func routing(want, got lab.State) string {
	want.Links, got.Links = nil, nil
	return lab.StateDiff(want, got)
}

var ctEntryID = regexp.MustCompile(`id=(\d+)`)

// conntrackIDs lists the ids of the conntrack entries under mark/mask.
func conntrackIDs(t *testing.T, l *lab.Lab, mark, mask uint32) []string {
	t.Helper()
	out, _ := l.Exec(l.Router, "conntrack", "-L", "-o", "id", "--mark", fmt.Sprintf("%#x/%#x", mark, mask))
	var ids []string
	for _, m := range ctEntryID.FindAllStringSubmatch(out, -1) {
		ids = append(ids, m[1])
	}
	slices.Sort(ids)
	return ids
}

// waitFlows waits until flows lists an entry (the flow is through), 5 s
// at most.
func waitFlows(t *testing.T, flows func() []string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); len(flows()) == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no conntrack entry under the link's mark")
		}
	}
}

// TestSeedTableNumbers: the seed's rt_tables numbers (200, 201), and the
// largest table (4294967295) with 256 beside it, come up with no extra
// option: each link's id in the connection mark is folded into the mask's
// ids, the LAN reaches the internet and ifdown leaves nothing.
func TestSeedTableNumbers(t *testing.T) {
	for _, tables := range [][2]int{{200, 201}, {4294967295, 256}} {
		t.Run(fmt.Sprintf("%d-%d", tables[0], tables[1]), func(t *testing.T) {
			l := lab.New(t)
			l.Install(bin)
			l.WriteFile(filepath.Join(l.Etc(), "iproute2/rt_tables.d/lab.conf"), fmt.Sprintf("%d\tispa\n%d\tispb\n", tables[0], tables[1]))
			l.Interfaces(lab.TwoISPs)
			empty := l.State()
			l.MustIfup("wana", "wanb")
			rules := l.Must(l.Router, "ip", "-4", "rule")
			for i, name := range []string{"ispa", "ispb"} {
				m := connmark.Mark{ID: connmark.DefaultID(tables[i], connmark.DefaultMask), Mask: connmark.DefaultMask}
				// ip names a table only up to 2^31 - 1.
				want := fmt.Sprintf("fwmark %#x/%#x lookup ", m.In(), m.Mask)
				if !strings.Contains(rules, want+name) && !strings.Contains(rules, fmt.Sprint(want, tables[i])) {
					t.Errorf("no rule %q:\n%s", want+name, rules)
				}
			}
			if _, ok := l.PingRun(l.LAN, lab.Internet, 5, 5*time.Second); !ok {
				t.Error("the LAN cannot reach the internet host")
			}
			if code, out := statusCode(l); code != 0 {
				t.Errorf("ifisp status: exit %d, want 0:\n%s", code, out)
			}
			l.MustIfdown("wana", "wanb")
			// The iptables tables stay, empty: the first ifup loaded them.
			after := l.State()
			for _, line := range append(after.IPTables, after.IP6Tables...) {
				if strings.Contains(strings.ToLower(line), "ifisp") {
					t.Errorf("ifdown left %q", line)
				}
			}
			empty.IPTables, empty.IP6Tables, after.IPTables, after.IP6Tables = nil, nil, nil, nil
			if diff := lab.StateDiff(empty, after); diff != "" {
				t.Errorf("ifdown left state behind (-before ifup +after ifdown):\n%s", diff)
			}
		})
	}
}
