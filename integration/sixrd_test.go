//go:build vmtest

package integration

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ifisp/ifisp/internal/lab"
	"github.com/ifisp/ifisp/pkg/watch"
)

// The 6rd domain of the lab's ISP B: prefix 2001:db8:6000::/40, the
// leading 8 bits of its IPv4 addresses shared, its border relay at ISP B's
// edge. The router's 203.0.113.2 thus delegates 2001:db8:6000:7102::/64.
const (
	sixrdPrefix    = "2001:db8:6000::/40"
	sixrdDelegated = "2001:db8:6000:7102::/64"
	sixrdLANHost   = "2001:db8:6000:7102::10"
)

// sixrdStanzas is ISP B with IPv6 only through 6rd, the tunnel's /64 on
// the LAN.
const sixrdStanzas = `
iface wanb inet static
	address 203.0.113.2/24
	isp-table ispb
	isp-gateway 203.0.113.1
	isp-metric 0
	snat-from 10.1.0.0/24

iface sixrd inet6 v4tunnel
	endpoint any
	local 203.0.113.2
	ttl 64
	isp-table ispb
	isp-metric 1
	6rd-prefix ` + sixrdPrefix + `
	6rd-ipv4-masklen 8
	6rd-relay 203.0.113.1
	6rd-lan lan0
`

// borderRelay makes ISP B's edge the 6rd domain's border relay: a 6rd sit
// device for the whole domain, named relay, and the internet host's route
// to the domain through ISP B.
func borderRelay(l *lab.Lab) {
	l.Must(l.B.NS, "ip", "tunnel", "add", "relay", "mode", "sit", "local", l.B.Gate, "ttl", "64")
	l.Must(l.B.NS, "ip", "tunnel", "6rd", "dev", "relay", "6rd-prefix", sixrdPrefix, "6rd-relay_prefix", "203.0.0.0/8")
	l.Must(l.B.NS, "ip", "link", "set", "relay", "up")
	l.Must(l.B.NS, "ip", "addr", "add", "2001:db8:6000:7101::1/40", "dev", "relay")
	l.Must(l.Inet, "ip", "route", "add", sixrdPrefix, "via", "fd00:255:2::1")
}

// TestSixRD is the 6rd scenario end to end on a real kernel: ifupdown makes
// the sit tunnel, ifisp-6rd gives it its 6rd parameters and the LAN its /64
// from the delegated prefix; a LAN host numbered from it reaches the IPv6
// internet host through the tunnel and ISP B's border relay; ifdown leaves
// nothing of ifisp's.
func TestSixRD(t *testing.T) {
	l := lab.New(t)
	borderRelay(l)
	run := l.RunDir
	l.Install(bin)
	l.RecordHookEnv()
	l.Interfaces(sixrdStanzas)
	l.MustIfup("wanb")
	// What ifup sixrd will run, as ifisp explain says; run by hand
	// below, it must leave what ifup leaves.
	explained := l.Must(l.Router, binary("ifisp"), "explain", "sixrd")
	t.Logf("ifisp explain sixrd:\n%s", explained)
	l.MustIfup("sixrd")
	byIfup, tunnelByIfup := l.State(), sixrdTunnel(t, l)

	if out := l.Must(l.Router, "ip", "-d", "link", "show", "sixrd"); !strings.Contains(out, "6rd-prefix "+sixrdPrefix+" 6rd-relay_prefix 203.0.0.0/8") {
		t.Errorf("the tunnel lacks its 6rd parameters:\n%s", out)
	}
	if out := l.Must(l.Router, "ip", "-6", "addr", "show", "dev", "lan0"); !strings.Contains(out, "2001:db8:6000:7102::1/64") {
		t.Errorf("lan0 lacks the delegated /64's ::1:\n%s", out)
	}
	if out := l.Must(l.Router, "ip", "-6", "rule"); !strings.Contains(out, "from "+sixrdDelegated+" lookup ispb proto ifisp") {
		t.Errorf("no rule for the delegated prefix:\n%s", out)
	}
	if out := l.Must(l.Router, "ip", "-6", "route", "show", "table", "ispb"); !strings.Contains(out, "default via ::203.0.113.1 dev sixrd proto ifisp") {
		t.Errorf("table ispb lacks the default via the relay:\n%s", out)
	}
	// Without isp-check the tunnel is not the monitor's (its default
	// target, the relay's ::IPV4, need not answer), but its record holds
	// its plan, the delegated prefix included.
	record, err := os.ReadFile(filepath.Join(run, "links", "sixrd.inet6.json"))
	if err != nil || !strings.Contains(string(record), `"unwatched": true`) || !strings.Contains(string(record), `"prefix": "`+sixrdDelegated+`"`) {
		t.Errorf("the tunnel's record (unwatched, with the delegated prefix): %s, %v", record, err)
	}

	// The up hooks again, as ifupdown ran them: nothing changes.
	up := routingState(l) + l.Must(l.Router, "ip", "-6", "addr", "show", "dev", "lan0")
	for _, hook := range []string{"ifisp-6rd", "ifisp-route"} {
		if out, err := l.RunHook(binary(hook), l.HookEnv("sixrd", "inet6", "post-up")); err != nil {
			t.Fatal(err, out)
		}
	}
	if again := routingState(l) + l.Must(l.Router, "ip", "-6", "addr", "show", "dev", "lan0"); again != up {
		t.Errorf("the up hooks run twice changed the state:\n--- once\n%s--- twice\n%s", up, again)
	}

	l.Must(l.LAN, "ip", "addr", "add", sixrdLANHost+"/64", "dev", "eth0")
	l.Must(l.LAN, "ip", "-6", "route", "replace", "default", "via", "2001:db8:6000:7102::1")
	before := l.Seen(&l.B, 4).Legit
	if got := l.Ping(l.LAN, lab.Internet6, 5, "-I", sixrdLANHost); got != 5 {
		t.Errorf("LAN host %s to %s: %d of 5 answered", sixrdLANHost, lab.Internet6, got)
	}
	if d := l.Seen(&l.B, 4).Legit - before; d < 5 {
		t.Errorf("ISP B's edge saw %d IPv4 (6rd) packets from the router, want >= 5: the tunnel did not carry them", d)
	}
	noSpoofing(t, l)

	l.MustIfdown("sixrd", "wanb")
	if out := routingState(l); strings.Contains(out, "proto ifisp") {
		t.Errorf("ifisp state left after ifdown:\n%s", out)
	}
	if out := l.Must(l.Router, "ip", "-6", "addr", "show", "dev", "lan0"); strings.Contains(out, "2001:db8:6000") {
		t.Errorf("lan0 keeps the 6rd address after ifdown:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(run, "links", "sixrd.inet6.json")); err == nil {
		t.Error("the tunnel's record is left after ifdown")
	}

	// The explained commands by hand, with wanb up as it was: the same
	// tunnel, rules, routes, addresses and chains as ifup sixrd made
	// (they publish no prefix: explain says ifisp-6rd does).
	l.MustIfup("wanb")
	if out, err := l.Exec(l.Router, "sh", "-e", "-c", explained); err != nil {
		t.Fatalf("running the explained commands: %v\n%s", err, out)
	}
	// Only ifisp's registry differs: explain says that ifisp-6rd records
	// the link, and does not write the file.
	byHand := l.State()
	byIfup.Registry, byHand.Registry = nil, nil
	if d := lab.StateDiff(byIfup, byHand); d != "" {
		t.Errorf("the explained commands differ from ifup sixrd (-ifup +by hand):\n%s", d)
	}
	if byHand := sixrdTunnel(t, l); byHand != tunnelByIfup {
		t.Errorf("the explained commands made the tunnel\n%s\nifup made\n%s", byHand, tunnelByIfup)
	}
}

// sixrdTunnel returns the sixrd tunnel's parameters, 6rd's included, as
// `ip -d link` prints them.
func sixrdTunnel(t *testing.T, l *lab.Lab) string {
	t.Helper()
	for _, line := range strings.Split(l.Must(l.Router, "ip", "-d", "link", "show", "sixrd"), "\n") {
		if strings.Contains(line, "6rd-prefix") {
			return strings.TrimSpace(line)
		}
	}
	t.Fatal("ip -d link show sixrd: no 6rd parameters")
	return ""
}

// TestSixRDBadInput: 6rd-lan or 6rd-local naming an interface that is not
// there, or one without IPv4, is refused in one line and changes nothing.
func TestSixRDBadInput(t *testing.T) {
	for _, tc := range []struct{ option, want string }{
		{"6rd-lan nosuch0", `ifisp-6rd: sixrd: 6rd-lan "nosuch0": no such interface (fix the name, or bring the interface up before this stanza)`},
		{"6rd-local nosuch0", `ifisp-6rd: sixrd: 6rd-local "nosuch0": no such interface (fix the name, or bring the interface up before this stanza)`},
		{"6rd-local lan0", `ifisp-6rd: sixrd: 6rd-local "lan0": the interface has no IPv4 address yet (bring it up before this stanza)`},
	} {
		l := lab.New(t)
		l.Install(bin)
		l.RecordHookEnv()
		l.Must(l.Router, "ip", "-4", "addr", "flush", "dev", "lan0")
		l.Interfaces(strings.Replace(sixrdStanzas, "6rd-lan lan0", tc.option, 1))
		l.MustIfup("wanb")
		before := routingState(l)
		out, err := l.Ifup("sixrd")
		if err == nil || !strings.Contains(out, tc.want+"\n") {
			t.Errorf("%s: ifup said (%v):\n%s\nwant the line %q", tc.option, err, out, tc.want)
		}
		if after := routingState(l); after != before {
			t.Errorf("%s: refused, yet the routing changed:\n%s", tc.option, after)
		}
		// Refused in if-pre-up.d: ifupdown never made the tunnel.
		if out, err := l.Exec(l.Router, "ip", "link", "show", "sixrd"); err == nil {
			t.Errorf("%s: refused, yet the tunnel is there:\n%s", tc.option, out)
		}
	}
}

// TestSixRDStaleTunnel: an ifup killed after ifupdown made the tunnel
// leaves it behind, and ifupdown, which takes the stanza for down, cannot
// make it again. The next ifup repairs it.
func TestSixRDStaleTunnel(t *testing.T) {
	l := lab.New(t)
	l.Install(bin)
	l.Interfaces(sixrdStanzas)
	l.MustIfup("wanb")
	l.Must(l.Router, "ip", "tunnel", "add", "sixrd", "mode", "sit", "local", "203.0.113.2", "ttl", "64")
	l.MustIfup("sixrd")
	if out := l.Must(l.Router, "ip", "-d", "link", "show", "sixrd"); !strings.Contains(out, "6rd-prefix "+sixrdPrefix) {
		t.Errorf("the tunnel lacks its 6rd parameters after the repairing ifup:\n%s", out)
	}
	// A device of that name that is no sit tunnel is not ifisp's to remove.
	l.MustIfdown("sixrd")
	l.Must(l.Router, "ip", "link", "add", "sixrd", "type", "dummy")
	out, err := l.Ifup("sixrd")
	if want := `ifisp-route: sixrd: iface "sixrd": a dummy device of this name exists already`; err == nil || !strings.Contains(out, want) {
		t.Errorf("ifup beside a dummy sixrd said (%v):\n%s\nwant %q", err, out, want)
	}
	if out := l.Must(l.Router, "ip", "-d", "link", "show", "sixrd"); !strings.Contains(out, "dummy") {
		t.Errorf("the dummy device is gone:\n%s", out)
	}
}

// besideNative is ISP B by 6rd (sixrdStanzas, its IPv4 address taken from
// wanb) and ISP A with native IPv6, its delegated /56 as isp-source; the
// last stanza is A's inet6 one.
var besideNative = strings.Replace(sixrdStanzas, "local 203.0.113.2", "local 203.0.113.2\n\t6rd-local wanb", 1) + `
iface wana inet static
	address 198.51.100.2/24
	isp-table ispa
	isp-gateway 198.51.100.1
	isp-metric 1

iface wana inet6 static
	address 2001:db8:a::2/64
	isp-table ispa
	isp-gateway 2001:db8:a::1
	isp-metric 2
	isp-source 2001:db8:a:100::/56
`

// TestSixRDBesideNative: ISP A native IPv6, ISP B 6rd, side by side in the
// same table numbers as their IPv4 stanzas; a LAN host numbered from each
// ISP's prefix leaves by that ISP, and neither ISP sees a spoofed packet.
// Then ISP B's IPv4 address changes and ifup's hook, run again, moves the
// 6rd prefix along.
func TestSixRDBesideNative(t *testing.T) {
	l := lab.New(t)
	borderRelay(l)
	// ISP A routes the customer's /56 to the router.
	l.Must(l.A.NS, "ip", "route", "add", "2001:db8:a:100::/56", "via", l.A.Router6)
	l.Install(bin)
	l.RecordHookEnv()
	l.Interfaces(besideNative)
	l.MustIfup("wana", "wanb", "sixrd")
	l.Must(l.Router, "ip", "addr", "add", "2001:db8:a:100::1/64", "dev", "lan0")
	hostA := "2001:db8:a:100::10"
	l.Must(l.LAN, "ip", "addr", "add", hostA+"/64", "dev", "eth0")
	l.Must(l.LAN, "ip", "addr", "add", sixrdLANHost+"/64", "dev", "eth0")
	l.Must(l.LAN, "ip", "-6", "route", "replace", "default", "via", "2001:db8:6000:7102::1")

	for _, tc := range []struct {
		src    string
		isp    *lab.ISP
		family int // what the ISP's edge sees: IPv6, or 6rd's IPv4
	}{{hostA, &l.A, 6}, {sixrdLANHost, &l.B, 4}} {
		before := l.Seen(tc.isp, tc.family).Legit
		if got := l.Ping(l.LAN, lab.Internet6, 5, "-I", tc.src); got != 5 {
			t.Errorf("from %s: %d of 5 answered", tc.src, got)
		}
		if d := l.Seen(tc.isp, tc.family).Legit - before; d < 5 {
			t.Errorf("from %s: %s's edge saw %d packets, want >= 5", tc.src, tc.isp.Name, d)
		}
	}
	noSpoofing(t, l)

	// ISP B renumbers the router: the hook, run again, follows.
	l.Must(l.Router, "ip", "addr", "del", "203.0.113.2/24", "dev", "wanb")
	l.Must(l.Router, "ip", "addr", "add", "203.0.113.3/24", "dev", "wanb")
	if out, err := l.RunHook(binary("ifisp-6rd"), l.HookEnv("sixrd", "inet6", "post-up")); err != nil {
		t.Fatal(err, out)
	}
	addrs := l.Must(l.Router, "ip", "-6", "addr", "show", "dev", "lan0")
	if !strings.Contains(addrs, "2001:db8:6000:7103::1/64") || strings.Contains(addrs, "2001:db8:6000:7102::1") {
		t.Errorf("after renumbering, lan0 has:\n%s", addrs)
	}
	rules := l.Must(l.Router, "ip", "-6", "rule")
	if !strings.Contains(rules, "from 2001:db8:6000:7103::/64 lookup ispb") || strings.Contains(rules, "7102") {
		t.Errorf("after renumbering, the rules are:\n%s", rules)
	}
}

// TestSixRDWatched: ISP A native IPv6, ISP B by 6rd and preferred, both
// numbering lan0, a SLAAC host on it, ifisp-watch probing each through its
// own link. B's border relay dies (the IPv4 underlay stays up): the
// tunnel's default is withdrawn, its LAN prefix deprecated in the next
// advertisement, and the host's new connections leave by A with A's
// prefix; the relay returns: full lifetimes, and the host's new
// connections use the 6rd prefix again.
func TestSixRDWatched(t *testing.T) {
	l := lab.New(t)
	borderRelay(l)
	l.Install(bin)
	l.Interfaces(lab.Checked(besideNative + "\tisp-lan lan0\n"))
	pa, p6rd := l.A.LAN6(), netip.MustParsePrefix(sixrdDelegated)
	w, cap := startSLAAC(t, l, []string{"wana", "wanb", "sixrd"}, pa, p6rd)
	if w.Link("sixrd", "inet6") == nil {
		t.Fatalf("ifisp-watch does not watch the tunnel, which has an isp-check: %+v", w.Status())
	}
	waitRA(t, w, cap, time.Time{}, 5*time.Second, "both up", pa, p6rd, is(full), is(full))
	d := l.StartDialer(1500) // 30 s at most
	defer d.Stop()
	answered(t, d, time.Now(), p6rd, 5*time.Second, "both up")

	cut := time.Now()
	// The relay stops taking 6in4 (protocol 41); B's IPv4 stays up.
	l.Must(l.B.NS, "iptables", "-w", "-I", "INPUT", "-p", "41", "-j", "DROP")
	w.WaitFor("sixrd", "inet6", watch.Down, true, 10*time.Second)
	if out := l.Must(l.Router, "ip", "-6", "route", "show", "default"); strings.Contains(out, "dev sixrd") {
		t.Errorf("the relay is dead, yet the main table still has the tunnel's default:\n%s", out)
	}
	waitRA(t, w, cap, cut, 3*time.Second, "relay dead", pa, p6rd, is(full), is(deprecated))
	viaA := answered(t, d, cut, pa, 5*time.Second, "relay dead").Done
	t.Logf("relay dead: first new connection via A answered %s after", viaA.Sub(cut).Round(time.Millisecond))

	healed := time.Now()
	l.Must(l.B.NS, "iptables", "-w", "-D", "INPUT", "-p", "41", "-j", "DROP")
	w.WaitFor("sixrd", "inet6", watch.Up, false, 10*time.Second)
	back := waitRA(t, w, cap, healed, 3*time.Second, "relay back", pa, p6rd, is(full), is(full))
	answered(t, d, back.At, p6rd, 5*time.Second, "relay back")
	noSpoofing(t, l)

	// ifdown lets the monitor go of the tunnel before it goes.
	l.MustIfdown("sixrd")
	w.WaitGone("sixrd", "inet6", 5*time.Second)
	if tr := w.Transitions(); len(tr) != 2 {
		t.Errorf("transitions: %q, want sixrd's down and up only (ifdown is no failure)", tr)
	}
}
