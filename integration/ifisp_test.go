package integration

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ifisp/ifisp/internal/lab"
	"github.com/ifisp/ifisp/pkg/interfaces"
	"github.com/ifisp/ifisp/pkg/status"
)

// TestIfispCheckEnv is the ground `ifisp check` stands on: the environment
// it builds for each stanza of the lab's file and of the README's example
// is, variable for variable, the one real ifupdown gives the hooks in
// if-pre-up.d.
func TestIfispCheckEnv(t *testing.T) {
	example, err := os.ReadFile(filepath.Join(lab.Root(), "examples/two-isp.interfaces"))
	if err != nil {
		t.Fatal(err)
	}
	for name, file := range map[string]string{"lab": lab.TwoISPs, "example": string(example)} {
		t.Run(name, func(t *testing.T) {
			l := lab.New(t)
			l.Install(bin)
			l.RecordHookEnv()
			l.Interfaces(file)
			l.MustIfup("wana", "wanb")
			f, err := interfaces.Read(filepath.Join(l.Etc(), "network/interfaces"))
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range append(f.Find("wana"), f.Find("wanb")...) {
				got := s.Env("", "pre-up")
				var want []string
				for _, kv := range l.HookEnv(s.Name, s.Family, "pre-up") {
					name, _, _ := strings.Cut(kv, "=")
					// The shell of the recording hook adds these.
					if name != "PWD" && name != "SHLVL" && name != "_" {
						want = append(want, kv)
					}
				}
				slices.Sort(got)
				slices.Sort(want)
				if !slices.Equal(got, want) {
					t.Errorf("%s %s: Env\n\t%q\nifupdown\n\t%q", s.Name, s.Family, got, want)
				}
			}
		})
	}
}

// TestIfispCheck runs the binary in the router, on the lab's file and on
// one that shares a table and a metric between the ISPs.
func TestIfispCheck(t *testing.T) {
	l := lab.New(t)
	l.Interfaces(lab.TwoISPs)
	out, err := l.Exec(l.Router, binary("ifisp"), "check")
	if err != nil || out != "/etc/network/interfaces: ok (4 ifisp stanzas in 1 file)\n" {
		t.Errorf("ifisp check of the lab's file: %v\n%s", err, out)
	}
	bad := strings.Replace(strings.Replace(lab.TwoISPs, "isp-table ispb\n\tsnat-from", "isp-table ispa\n\tsnat-from", 1),
		"isp-metric 2", "isp-metric 1", 1)
	l.Interfaces(bad)
	out, err = l.Exec(l.Router, binary("ifisp"), "check")
	want := "/etc/network/interfaces:19: wanb: isp-table \"ispa\": table 100's inet routes would be wana's too (/etc/network/interfaces:4): each ISP link needs a table of its own\n" +
		"/etc/network/interfaces:25: wanb: metric \"1\": wana has the main table's isp-metric default at metric 1 already (/etc/network/interfaces:14): two defaults at one metric leave the choice of ISP to chance (give each ISP a metric of its own)\n"
	if exitCode(err) != 1 || out != want {
		t.Errorf("ifisp check of a bad file (exit %d):\n%s\nwant exit 1 and\n%s", exitCode(err), out, want)
	}

	// --kernel: with wanb up, the lab's file is still clean (wanb's own
	// routes are its own); a default of someone else's at metric 7 makes
	// a stanza with isp-metric 7 wrong only for the kernel check.
	l.Install(bin)
	l.Interfaces(lab.TwoISPs)
	l.MustIfup("wanb")
	if out, err := l.Exec(l.Router, binary("ifisp"), "check", "--kernel"); err != nil {
		t.Errorf("--kernel with wanb up: %v\n%s", err, out)
	}
	l.Must(l.Router, "ip", "route", "add", "default", "via", l.B.Gate, "dev", "wanb", "metric", "7")
	l.Interfaces(lab.TwoISPs + "\niface wanc inet static\n\taddress 192.0.2.2/24\n\tisp-table 102\n\tisp-gateway 192.0.2.1\n\tisp-metric 7\n")
	if out, err := l.Exec(l.Router, binary("ifisp"), "check", "-q"); err != nil || out != "" {
		t.Errorf("without --kernel: %v\n%s", err, out)
	}
	out, err = l.Exec(l.Router, binary("ifisp"), "check", "--kernel")
	want = "/etc/network/interfaces:32: wanc: isp-metric \"7\": the main table already has default via 203.0.113.1 metric 7 (dev wanb): pick another isp-metric\n"
	if exitCode(err) != 1 || out != want {
		t.Errorf("--kernel with a default at metric 7 (exit %d):\n%s\nwant exit 1 and\n%s", exitCode(err), out, want)
	}

	// A file without wanb whose link takes the mark wanb has in the
	// kernel: only the kernel check knows.
	l.Interfaces("\niface wanc inet static\n\taddress 192.0.2.2/24\n\tisp-table 102\n\tisp-gateway 192.0.2.1\n\tisp-mark 101\n")
	if out, err := l.Exec(l.Router, binary("ifisp"), "check", "-q"); err != nil || out != "" {
		t.Errorf("without --kernel, wanb's mark: %v\n%s", err, out)
	}
	out, err = l.Exec(l.Router, binary("ifisp"), "check", "--kernel")
	want = "/etc/network/interfaces:6: wanc: isp-mark \"101\": wanb has this link id already (each ISP stanza needs its own isp-mark; it defaults to the table's number, folded into the mask's ids when larger)\n"
	if exitCode(err) != 1 || out != want {
		t.Errorf("--kernel with wanb's mark (exit %d):\n%s\nwant exit 1 and\n%s", exitCode(err), out, want)
	}
}

// TestIfispStatus brings both ISPs up with ifisp-watch running and reads
// `ifisp status --json` in the router: every link as ifup left it, the
// monitor's verdict, the SNAT counters and flows of the LAN's traffic; then
// ISP B's modem loses its carrier, and the status shows wanb withdrawn.
func TestIfispStatus(t *testing.T) {
	l := lab.New(t)
	l.Install(bin)
	l.Interfaces(lab.Checked(lab.TwoISPs))
	l.MustIfup("wana", "wanb")
	w := l.StartWatch(bin)
	defer w.Stop()
	if got := l.Ping(l.LAN, lab.Internet, 3); got != 3 {
		t.Fatalf("LAN ping: %d of 3 answered", got)
	}
	s := ifispStatus(t, l)
	if s.Monitor == nil || s.Monitor.PID != w.Pid() || !s.Monitor.Running {
		t.Errorf("monitor: %+v, want pid %d running", s.Monitor, w.Pid())
	}
	if s.RunDir != l.RunDir {
		t.Errorf("run dir %s, want the router's %s", s.RunDir, l.RunDir)
	}
	type want struct {
		iface, family, address string
		table                  int
		main                   status.Route
	}
	a := netip.MustParseAddr
	wants := []want{
		{"wana", "inet", l.A.Router, 100, status.Route{Gateway: a(l.A.Gate), Metric: 1, Protocol: 71}},
		{"wana", "inet6", l.A.Router6, 100, status.Route{Gateway: a(l.A.Gate6), Metric: 2, Protocol: 71}},
		{"wanb", "inet", l.B.Router, 101, status.Route{Gateway: a(l.B.Gate), Metric: 0, Protocol: 3}},
		{"wanb", "inet6", l.B.Router6, 101, status.Route{Gateway: a(l.B.Gate6), Metric: 1, Protocol: 3}},
	}
	if len(s.Links) != len(wants) {
		t.Fatalf("%d links, want %d: %+v", len(s.Links), len(wants), s.Links)
	}
	for i, w := range wants {
		got := s.Links[i]
		name := w.iface + " " + w.family
		switch {
		case got.Iface != w.iface || string(got.Family) != w.family || got.Address != a(w.address) || got.Table != w.table:
			t.Errorf("link %d: %s %s %s table %d, want %s %s table %d", i, got.Iface, got.Family, got.Address, got.Table, name, w.address, w.table)
		case !got.Present || !got.Carrier || len(got.Problems) > 0:
			t.Errorf("%s: present %v, carrier %v, problems %q", name, got.Present, got.Carrier, got.Problems)
		case got.TableDefault == nil || len(got.Rules) < 2 || got.Rules[0] != status.Rule{Priority: 10000, From: netip.PrefixFrom(got.Address, got.Address.BitLen())} ||
			got.Rules[len(got.Rules)-1] != status.Rule{Priority: 10200, Fwmark: fmt.Sprintf("%#x/0xff000000", 0x80000000|w.table<<24)}:
			t.Errorf("%s: table default %+v, rules %+v", name, got.TableDefault, got.Rules)
		case !slices.Equal(got.MainDefaults, []status.Route{w.main}) || !slices.Equal(got.RecordedDefaults, got.MainDefaults):
			t.Errorf("%s: main defaults %+v, recorded %+v, want %+v", name, got.MainDefaults, got.RecordedDefaults, w.main)
		case got.Health == nil || got.Health.State != "up" || got.Health.Withdrawn:
			t.Errorf("%s: health %+v, want up", name, got.Health)
		case got.GuardDropped == nil || got.Flows == nil:
			t.Errorf("%s: guard %+v, flows %v", name, got.GuardDropped, got.Flows)
		}
	}
	wanb := s.Links[2]
	if len(wanb.SNAT) != 1 || wanb.SNAT[0].From != netip.MustParsePrefix(lab.LANNet) || wanb.SNAT[0].To != a(l.B.Router) || wanb.SNAT[0].Packets == 0 {
		t.Errorf("wanb's SNAT: %+v, want %s to %s with the LAN ping's packet", wanb.SNAT, lab.LANNet, l.B.Router)
	}
	if *wanb.Flows == 0 {
		t.Error("wanb inet: no flows, want the LAN ping's")
	}

	// ISP B's modem loses carrier: the monitor withdraws wanb at once.
	l.Carrier(&l.B, false)
	var b status.Link
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if b = ifispStatus(t, l).Links[2]; b.Health != nil && b.Health.Withdrawn {
			break
		}
	}
	if b.Carrier || b.Health == nil || b.Health.State != "down" || !b.Health.Withdrawn || len(b.MainDefaults) != 0 || len(b.RecordedDefaults) != 1 {
		t.Errorf("wanb inet without carrier: carrier %v, health %+v, main %+v, recorded %+v", b.Carrier, b.Health, b.MainDefaults, b.RecordedDefaults)
	}
	if !slices.Equal(b.Problems, []string{"no carrier"}) {
		t.Errorf("wanb inet without carrier: problems %q, want only \"no carrier\"", b.Problems)
	}
	text := l.Must(l.Router, binary("ifisp"), "status")
	t.Logf("ifisp status:\n%s", text)
	if !strings.Contains(text, "health     down, withdrawn since") {
		t.Errorf("the text status does not say wanb is withdrawn:\n%s", text)
	}
	l.Carrier(&l.B, true)
}

// ifispStatus runs `ifisp status --json` in the router, which must exit
// 0: the kernel has every link's plan.
func ifispStatus(t *testing.T, l *lab.Lab) status.Status {
	t.Helper()
	s, code, out := statusJSON(t, l)
	if code != 0 {
		t.Fatalf("ifisp status --json: exit %d:\n%s", code, out)
	}
	return s
}

// TestIfispExplain is the honest test of `ifisp explain wana`: its output,
// run by hand as a shell script in the router, leaves exactly the kernel
// state that `ifup wana` leaves (rules, every routing table, iptables,
// links and addresses), alone and beside wanb. Only ifisp's registry
// differs: explain says that ifisp-route records the link, and does not
// write the file.
func TestIfispExplain(t *testing.T) {
	for _, beside := range []string{"", "wanb"} {
		name := "alone"
		if beside != "" {
			name = "beside " + beside
		}
		t.Run(name, func(t *testing.T) {
			l := lab.New(t)
			l.Install(bin)
			l.Interfaces(lab.TwoISPs)
			if beside != "" {
				l.MustIfup(beside)
			}
			before := l.State()
			script := l.Must(l.Router, binary("ifisp"), "explain", "wana")
			t.Logf("ifisp explain wana:\n%s", script)
			if after := l.State(); lab.StateDiff(before, after) != "" {
				t.Fatalf("explain changed the state (-before +after):\n%s", lab.StateDiff(before, after))
			}
			l.MustIfup("wana")
			byIfup := l.State()
			l.MustIfdown("wana")
			// Down again; in a namespace that had no tables, the empty
			// filter and nat tables that nf_tables' first iptables-restore
			// makes stay.
			down, pristine := l.State(), before
			if len(before.IPTables) == 0 {
				if strings.Contains(strings.Join(append(down.IPTables, down.IP6Tables...), "\n"), "IFISP") {
					t.Fatalf("ifdown wana left ifisp's chains:\n%q\n%q", down.IPTables, down.IP6Tables)
				}
				pristine.IPTables, pristine.IP6Tables, down.IPTables, down.IP6Tables = nil, nil, nil, nil
			}
			if d := lab.StateDiff(pristine, down); d != "" {
				t.Fatalf("ifdown wana did not put the lab back (-before +after):\n%s", d)
			}
			if out, err := l.Exec(l.Router, "sh", "-e", "-c", script); err != nil {
				t.Fatalf("running the explained commands: %v\n%s", err, out)
			}
			byHand := l.State()
			if len(byHand.Registry) != len(before.Registry) {
				t.Errorf("the commands wrote the registry: %q", byHand.Registry)
			}
			byIfup.Registry, byHand.Registry = nil, nil
			if d := lab.StateDiff(byIfup, byHand); d != "" {
				t.Errorf("the explained commands differ from ifup wana (-ifup +by hand):\n%s", d)
			}
		})
	}
}

// TestIfispWatchMetrics: ifisp-watch's metrics file shows every link up
// with its probes' round trips, then wanb withdrawn once its modem loses
// carrier; `ifisp status` reads the same figures; a stopped monitor
// leaves no file.
func TestIfispWatchMetrics(t *testing.T) {
	l := lab.New(t)
	l.Install(bin)
	l.Interfaces(lab.Checked(lab.TwoISPs))
	l.MustIfup("wana", "wanb")
	w := l.StartWatch(bin, "--metrics-interval", "200ms")
	path := filepath.Join(l.RunDir, "ifisp-watch.prom")
	metrics := func(want ...string) string {
		t.Helper()
		var text string
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			b, _ := os.ReadFile(path)
			text = string(b)
			missing := false
			for _, w := range want {
				missing = missing || !strings.Contains(text, w)
			}
			if !missing {
				return text
			}
		}
		t.Fatalf("%s after 5s lacks one of %q:\n%s", path, want, text)
		return ""
	}
	var up []string
	for _, link := range []string{`{iface="wana",family="inet"}`, `{iface="wana",family="inet6"}`, `{iface="wanb",family="inet"}`, `{iface="wanb",family="inet6"}`} {
		up = append(up, "ifisp_link_up"+link+" 1", "ifisp_link_withdrawn"+link+" 0", "ifisp_link_probe_rtt_seconds"+link+" ",
			"ifisp_link_probe_loss_ratio"+link+" 0\n")
	}
	text := metrics(up...)
	t.Logf("%s:\n%s", path, text)
	for _, h := range ifispStatus(t, l).Links {
		if h.Health == nil || h.Health.RTT <= 0 || h.Health.Rounds == 0 || h.Health.Rounds != h.Health.Answered {
			t.Errorf("%s %s: health %+v, want a round trip and every round answered", h.Iface, h.Family, h.Health)
		}
	}

	l.Carrier(&l.B, false)
	metrics(`ifisp_link_up{iface="wanb",family="inet"} 0`, `ifisp_link_withdrawn{iface="wanb",family="inet"} 1`,
		`ifisp_link_transitions_total{iface="wanb",family="inet"} 1`, `ifisp_link_up{iface="wana",family="inet"} 1`)
	l.Carrier(&l.B, true)

	if err := w.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("the stopped monitor left %s (%v)", path, err)
	}
}
