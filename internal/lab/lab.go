// Package lab builds docs/design.md's test network in network namespaces of
// its own and always removes it: a LAN host, the router, two ISPs whose spoof
// filters drop and count packets with foreign source addresses, and an
// "internet" host behind both.
//
//	lan 10.1.0.10 ── lan0 [router] wanb 203.0.113.2 ── cpe [ispb] uplink ── ispb [inet 192.0.2.100]
//	                               wana 198.51.100.2 ── cpe [ispa] uplink ── ispa
//
// The router's WAN interfaces come without addresses: the tests configure
// them with real ifupdown, reading /etc/netns/ROUTER/network/interfaces.
// Only documentation and private ranges are used, and traffic never leaves
// the lab's namespaces. It is a test helper; it needs root.
package lab

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/ifisp/ifisp/pkg/rundir"
)

// T is the part of testing.TB the lab needs, so that a program (make demo)
// can build a lab as well as a test can.
type T interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	Cleanup(func())
}

// ISP describes one of the lab's two ISPs.
type ISP struct {
	Name                     string // "ispa" or "ispb": the router's table name for it too
	Iface                    string // the router's WAN interface toward it
	Table                    int    // the number the lab's rt_tables gives Name
	NS                       string // namespace of the ISP's router
	Router                   string // the router's address on the link (IPv4)
	Gate                     string // the ISP's address on the link (IPv4), the gateway
	Net                      string // the customer range the spoof filter accepts (IPv4)
	Router6, Gate6, Net6     string
	core, core6, inet, inet6 string // link to the internet host
}

// Addresses of the lab, fixed so tests and interfaces files can name them.
const (
	LANNet     = "10.1.0.0/24"
	LANRouter  = "10.1.0.1"
	LANHost    = "10.1.0.10"
	LANNet6    = "fd00:1::/64"
	LANRouter6 = "fd00:1::1"
	LANHost6   = "fd00:1::10"
	Internet   = "192.0.2.100"
	Internet6  = "2001:db8:ffff::100"
)

// Lab is one built lab. Its namespaces have names unique to it.
type Lab struct {
	ID     string
	LAN    string // namespace of the LAN host
	Router string // namespace of the router
	Inet   string // namespace of the internet host
	A, B   ISP

	// RunDir is the router's ifisp run directory: the one package rundir
	// gives the router's named namespace, so each lab has its own.
	RunDir string

	t       T
	state   string // ifupdown's --state-dir for the router
	hadBase bool   // whether rundir.Base was there before the lab
}

// VLANWAN is the name of ISP B's WAN when NewVLAN builds the lab: VLAN 4 on
// the router's eth2, as the seed site's WANs are. ifupdown creates it.
const VLANWAN = "eth2.4"

// NewVLAN builds the lab with ISP B behind a VLAN: the router's veth is
// eth2, and the stanza for ISP B names VLANWAN; ISP B's edge is VLAN 4 too.
// It needs a kernel with 8021q (the VM tier's).
func NewVLAN(t T) *Lab {
	return newLab(t, true)
}

// New builds a lab and registers its removal with t.Cleanup, which runs also
// when the test fails.
func New(t T) *Lab {
	return newLab(t, false)
}

func newLab(t T, vlan bool) *Lab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the lab needs root: it makes network namespaces")
	}
	id := randomID()
	l := &Lab{
		ID:     id,
		LAN:    "ifisp-lan-" + id,
		Router: "ifisp-rtr-" + id,
		Inet:   "ifisp-net-" + id,
		A: ISP{Name: "ispa", Iface: "wana", Table: 100, NS: "ifisp-ispa-" + id,
			Router: "198.51.100.2", Gate: "198.51.100.1", Net: "198.51.100.0/24",
			Router6: "2001:db8:a::2", Gate6: "2001:db8:a::1", Net6: "2001:db8:a::/48",
			core: "10.255.1.1", core6: "fd00:255:1::1", inet: "10.255.1.2", inet6: "fd00:255:1::2"},
		B: ISP{Name: "ispb", Iface: "wanb", Table: 101, NS: "ifisp-ispb-" + id,
			Router: "203.0.113.2", Gate: "203.0.113.1", Net: "203.0.113.0/24",
			Router6: "2001:db8:b::2", Gate6: "2001:db8:b::1", Net6: "2001:db8:b::/48",
			core: "10.255.2.1", core6: "fd00:255:2::1", inet: "10.255.2.2", inet6: "fd00:255:2::2"},
		t: t,
	}
	if vlan {
		l.B.Iface = VLANWAN
	}
	t.Cleanup(l.remove)
	state, err := os.MkdirTemp("", "ifisp-ifstate-")
	if err != nil {
		t.Fatal(err)
	}
	l.state = state
	l.RunDir = filepath.Join(rundir.Base, "netns", l.Router)
	_, err = os.Stat(rundir.Base)
	l.hadBase = err == nil
	l.build(vlan)
	return l
}

// Namespaces lists the lab's namespaces.
func (l *Lab) Namespaces() []string {
	return []string{l.LAN, l.Router, l.A.NS, l.B.NS, l.Inet}
}

// ISPs returns both ISPs.
func (l *Lab) ISPs() []*ISP { return []*ISP{&l.A, &l.B} }

func (l *Lab) build(vlan bool) {
	for _, ns := range l.Namespaces() {
		l.Must("", "ip", "netns", "add", ns)
		// Before any interface exists, so every one inherits it: DAD
		// would hold IPv6 addresses tentative for a second.
		l.sysctls(ns, "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0",
			"net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1", "net.ipv6.conf.default.forwarding=1")
	}
	l.sysctls(l.Router, "net.ipv4.conf.all.rp_filter=2", "net.ipv4.conf.default.rp_filter=2")
	l.sysctls(l.LAN, "net.ipv4.ip_forward=0", "net.ipv6.conf.all.forwarding=0")

	wanb, cpeb := "wanb", "cpe"
	if vlan {
		wanb, cpeb = "eth2", "cpe0"
	}
	l.ipBatch("",
		fmt.Sprintf("link add eth0 netns %s type veth peer lan0 netns %s", l.LAN, l.Router),
		fmt.Sprintf("link add wana netns %s type veth peer cpe netns %s", l.Router, l.A.NS),
		fmt.Sprintf("link add %s netns %s type veth peer %s netns %s", wanb, l.Router, cpeb, l.B.NS),
		fmt.Sprintf("link add uplink netns %s type veth peer ispa netns %s", l.A.NS, l.Inet),
		fmt.Sprintf("link add uplink netns %s type veth peer ispb netns %s", l.B.NS, l.Inet),
	)
	l.ipBatch(l.LAN,
		"link set lo up", "link set eth0 up",
		"addr add "+LANHost+"/24 dev eth0", "addr add "+LANHost6+"/64 dev eth0",
		"route add default via "+LANRouter, "route add default via "+LANRouter6)
	l.ipBatch(l.Router,
		"link set lo up", "link set lan0 up",
		"addr add "+LANRouter+"/24 dev lan0", "addr add "+LANRouter6+"/64 dev lan0")
	if vlan {
		// ISP B's edge speaks VLAN 4 on cpe0; its spoof filter stays on cpe.
		l.ipBatch(l.B.NS, "link set cpe0 up", "link add link cpe0 name cpe type vlan id 4")
	}
	// nodad: a tentative address cannot be a route's src, even on lo for
	// the moment before the kernel calls its DAD done.
	inet := []string{"link set lo up",
		"addr add " + Internet + "/32 dev lo", "addr add " + Internet6 + "/128 dev lo nodad"}
	for _, isp := range l.ISPs() {
		l.ipBatch(isp.NS,
			"link set lo up", "link set cpe up", "link set uplink up",
			"addr add "+isp.Gate+"/24 dev cpe", "addr add "+isp.Gate6+"/64 dev cpe",
			"addr add "+isp.core+"/30 dev uplink", "addr add "+isp.core6+"/64 dev uplink",
			"route add default via "+isp.inet, "route add default via "+isp.inet6)
		dev := isp.Name
		inet = append(inet, "link set "+dev+" up",
			"addr add "+isp.inet+"/30 dev "+dev, "addr add "+isp.inet6+"/64 dev "+dev,
			// From its public address, as a host on the internet would
			// be: a reply to it is no throw route's.
			"route add "+isp.Net+" via "+isp.core+" src "+Internet, "route add "+isp.Net6+" via "+isp.core6+" src "+Internet6)
		l.spoofFilter(isp)
	}
	l.ipBatch(l.Inet, inet...)

	// The router's /etc/iproute2 inside its namespace: the host's files
	// plus the lab's table names.
	etc := l.Etc()
	l.Must("", "mkdir", "-p", filepath.Join(etc, "iproute2"), filepath.Join(etc, "network/if-pre-up.d"),
		filepath.Join(etc, "network/if-up.d"), filepath.Join(etc, "network/if-down.d"), filepath.Join(etc, "network/if-post-down.d"))
	l.Must("", "cp", "-a", "/etc/iproute2/.", filepath.Join(etc, "iproute2"))
	l.WriteFile(filepath.Join(etc, "iproute2/rt_tables.d/lab.conf"),
		fmt.Sprintf("%d\t%s\n%d\t%s\n", l.A.Table, l.A.Name, l.B.Table, l.B.Name))
}

// TracerSize is the payload of the echo requests PingRun sends: the ISPs'
// edges count them apart (Counts.Tracer) from other traffic, the health
// monitor's probes included.
const TracerSize = 1000

// spoofFilter makes the ISP drop, at its edge, every packet from the router
// whose source is not the customer's range, and count it in chain
// "spoofed". Packets with the customer's sources are counted by the RETURN
// rules, so a test can tell which link a flow left by; PingRun's echo
// requests by a RETURN rule of their own.
func (l *Lab) spoofFilter(isp *ISP) {
	for _, f := range []struct {
		cmd, net, proto string
		length          int
	}{{"iptables", isp.Net, "icmp", 20 + 8 + TracerSize}, {"ip6tables", isp.Net6, "ipv6-icmp", 40 + 8 + TracerSize}} {
		l.Must(isp.NS, f.cmd, "-w", "-t", "raw", "-N", "spoofed")
		l.Must(isp.NS, f.cmd, "-w", "-t", "raw", "-A", "spoofed", "-j", "DROP")
		l.Must(isp.NS, f.cmd, "-w", "-t", "raw", "-A", "PREROUTING", "-i", "cpe", "-s", f.net, "-p", f.proto,
			"-m", "length", "--length", strconv.Itoa(f.length), "-m", "comment", "--comment", "lab-tracer", "-j", "RETURN")
		l.Must(isp.NS, f.cmd, "-w", "-t", "raw", "-A", "PREROUTING", "-i", "cpe", "-s", f.net, "-j", "RETURN")
		if f.cmd == "ip6tables" {
			// Neighbour discovery and DAD are not spoofing.
			l.Must(isp.NS, f.cmd, "-w", "-t", "raw", "-A", "PREROUTING", "-i", "cpe", "-s", "fe80::/10", "-j", "RETURN")
			l.Must(isp.NS, f.cmd, "-w", "-t", "raw", "-A", "PREROUTING", "-i", "cpe", "-s", "::/128", "-j", "RETURN")
		}
		l.Must(isp.NS, f.cmd, "-w", "-t", "raw", "-A", "PREROUTING", "-i", "cpe", "-j", "spoofed")
	}
}

// Counts is what an ISP's edge saw from the router.
type Counts struct {
	Legit   int // packets with the customer's own sources
	Tracer  int // of those, PingRun's echo requests
	Spoofed int // packets with any other source, dropped
}

// Seen returns the ISP's edge counters for one family (4 or 6): its
// spoof filter's on cpe, and on its PPPoE sessions (StartPPPoE).
func (l *Lab) Seen(isp *ISP, family int) Counts {
	l.t.Helper()
	cmd, net := "iptables", isp.Net
	if family == 6 {
		cmd, net = "ip6tables", isp.Net6
	}
	out := l.Must(isp.NS, cmd, "-w", "-t", "raw", "-nvxL", "PREROUTING")
	var c Counts
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 9 || (f[5] != "cpe" && f[5] != pppEdge) {
			continue
		}
		n, _ := strconv.Atoi(f[0])
		switch {
		case f[2] == "RETURN" && f[7] == net:
			c.Legit += n
			if strings.Contains(line, "lab-tracer") {
				c.Tracer += n
			}
		case f[2] == "spoofed":
			c.Spoofed += n
		}
	}
	return c
}

// Spoofed returns the packets both ISPs dropped as spoofed, both families.
func (l *Lab) Spoofed() int {
	n := 0
	for _, isp := range l.ISPs() {
		n += l.Seen(isp, 4).Spoofed + l.Seen(isp, 6).Spoofed
	}
	return n
}

// Etc returns the folder that `ip netns exec ROUTER` shows as /etc.
func (l *Lab) Etc() string { return filepath.Join("/etc/netns", l.Router) }

// Exec runs a command in namespace ns ("" for the test's own namespace,
// which is never the host's network: only lab setup runs there) and
// returns its combined output.
func (l *Lab) Exec(ns string, args ...string) (string, error) {
	if ns != "" {
		args = append([]string{"ip", "netns", "exec", ns}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		err = fmt.Errorf("%s: %w\n%s", strings.Join(args, " "), err, out.String())
	}
	return out.String(), err
}

// Must is Exec that fails the test on error.
func (l *Lab) Must(ns string, args ...string) string {
	l.t.Helper()
	out, err := l.Exec(ns, args...)
	if err != nil {
		l.t.Fatal(err)
	}
	return out
}

// WriteFile writes a file, failing the test on error.
func (l *Lab) WriteFile(path, content string) {
	l.t.Helper()
	l.writeFile(path, content, 0o644)
}

// WriteScript writes an executable file (a hook, a notify script), failing
// the test on error.
func (l *Lab) WriteScript(path, content string) {
	l.t.Helper()
	l.writeFile(path, content, 0o755)
}

// Symlink makes path a symbolic link to target, failing the test on error.
func (l *Lab) Symlink(target, path string) {
	l.t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		l.t.Fatal(err)
	}
	os.Remove(path)
	if err := os.Symlink(target, path); err != nil {
		l.t.Fatal(err)
	}
}

func (l *Lab) writeFile(path, content string, mode os.FileMode) {
	l.t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		l.t.Fatal(err)
	}
	// WriteFile's mode is only for a new file: Chmod makes it so for an
	// old one too (and past the umask).
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		l.t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		l.t.Fatal(err)
	}
}

func (l *Lab) ipBatch(ns string, cmds ...string) {
	l.t.Helper()
	args := []string{"ip"}
	if ns != "" {
		args = append(args, "-n", ns)
	}
	cmd := exec.Command(args[0], append(args[1:], "-batch", "-")...)
	cmd.Stdin = strings.NewReader(strings.Join(cmds, "\n") + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		l.t.Fatalf("ip -n %s -batch: %v\n%s", ns, err, out)
	}
}

func (l *Lab) sysctls(ns string, kv ...string) {
	l.t.Helper()
	l.Must(ns, append([]string{"sysctl", "-q", "-w"}, kv...)...)
}

// remove kills what still runs in the lab and deletes its namespaces and
// /etc/netns folders; it runs however the test ended.
func (l *Lab) remove() {
	for _, ns := range l.Namespaces() {
		if pids, err := l.Exec("", "ip", "netns", "pids", ns); err == nil {
			for _, p := range strings.Fields(pids) {
				if pid, err := strconv.Atoi(p); err == nil {
					if proc, err := os.FindProcess(pid); err == nil {
						proc.Kill()
					}
				}
			}
		}
		l.Exec("", "ip", "netns", "del", ns)
		os.RemoveAll(filepath.Join("/etc/netns", ns))
	}
	for _, d := range []string{l.state, l.RunDir} {
		if d != "" {
			os.RemoveAll(d)
		}
	}
	// The parents too, when no other lab uses them and the lab made them.
	os.Remove(filepath.Dir(l.RunDir))
	if !l.hadBase {
		os.Remove(rundir.Base)
	}
}

func randomID() string {
	b := make([]byte, 3)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// pingLoss matches ping's summary line.
var pingLoss = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)

// Ping sends count echo requests from ns to dst (with ping's extra
// arguments, e.g. "-I", src) at 50 per second and returns how many were
// answered. It is bounded: it stops after count requests.
func (l *Lab) Ping(ns, dst string, count int, extra ...string) int {
	l.t.Helper()
	args := append([]string{"ping", "-n", "-q", "-c", strconv.Itoa(count), "-i", "0.02", "-W", "1"}, extra...)
	out, _ := l.Exec(ns, append(args, dst)...)
	m := pingLoss.FindStringSubmatch(out)
	if m == nil {
		l.t.Fatalf("ping %s from %s: no summary:\n%s", dst, ns, out)
	}
	n, _ := strconv.Atoi(m[2])
	return n
}

// Impair puts netem on the ISP's uplink toward the internet host, e.g.
// Impair(&l.B, "delay", "50ms", "loss", "10%"): the lossy or dead upstream
// behind a modem that keeps carrier. With no arguments it removes it. It
// needs sch_netem (the VM tier's kernel).
func (l *Lab) Impair(isp *ISP, netem ...string) {
	l.t.Helper()
	if len(netem) == 0 {
		l.Must(isp.NS, "tc", "qdisc", "del", "dev", "uplink", "root")
		return
	}
	l.Must(isp.NS, append([]string{"tc", "qdisc", "replace", "dev", "uplink", "root", "netem"}, netem...)...)
}
