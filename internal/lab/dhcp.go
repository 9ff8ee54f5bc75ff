package lab

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// DHCPTwoISPs is TwoISPs with ISP B's IPv4 from DHCP: `iface wanb inet
// dhcp`, its address and gateway whatever dhclient got from the DHCP
// server StartDHCP runs at ISP B (the reservation, 203.0.113.2 first; the
// router option, 203.0.113.1). ifupdown's dhcp method runs dhclient, whose
// dhclient-script adds the address and the main table's default route
// through the router option (metric 0, as TwoISPs' `gateway` line makes
// it). wana and both inet6 stanzas are TwoISPs' own.
var DHCPTwoISPs = Replace(TwoISPs, "wanb", "inet", `iface wanb inet dhcp
	isp-table ispb
	snat-from 10.1.0.0/24
`)

// The DHCP server's timers. dnsmasq gives no lease shorter than two
// minutes, DHCPLease; the renewal (T1, option 58) and rebinding (T2,
// option 59) times it sends are the lab's own, a few seconds, so that
// dhclient renews every few seconds and a moved reservation reaches the
// router soon. dhclient adds its randomness to T1 in whole seconds (3/4
// of T1, plus up to a quarter of it, rounded up) and counts from the
// whole second it got the ACK in: in the lab it renews every 2.6 to 4.5 s
// (dnsmasq's ACKs, dhclient's RENEW events). A reservation moved is NAKed
// at the router's next renewal, at most about 5 s later.
const (
	DHCPLease  = 2 * time.Minute
	DHCPRenew  = 3 * time.Second
	DHCPRebind = 6 * time.Second
)

// DHCPServer is dnsmasq serving DHCPv4 on one ISP's edge (its "cpe"
// interface, facing the router's WAN) with one reservation: the router's
// WAN MAC gets one fixed address. It is authoritative: a client asking
// for any other address (a renewal of the address the reservation moved
// away from) gets a DHCPNAK and starts over. It serves no DNS (--port=0)
// and reads none of the host's dnsmasq or hosts files; its lease, pid,
// hosts and options files live in a folder of its own, and what it logs
// is kept for failure messages (Log). It runs until Stop or the lab's
// removal.
type DHCPServer struct {
	l   *Lab
	ISP *ISP
	MAC string // the router's WAN MAC, the reservation's key

	dir  string // hosts, opts, leases, pid
	log  *lineLog
	d    *daemon     // the dnsmasq that runs or ran last
	addr string      // the reserved address
	opts DHCPOptions // the options now
}

// DHCPOptions are the options a DHCPServer sends beyond the address,
// netmask, lease time and T1/T2.
type DHCPOptions struct {
	// NoRouter sends no router option (3) at all; without it, the
	// router option is the ISP's gateway, ISP.Gate.
	NoRouter bool
	// Extra are more options, each as dnsmasq's --dhcp-option takes it
	// ("option:domain-name,example.net", "26,1400"), sent when the
	// client asks for them (Debian's dhclient.conf asks for subnet-mask,
	// broadcast-address, time-offset, routers, domain-name,
	// domain-name-servers, domain-search, host-name, netbios-name-servers,
	// netbios-scope, interface-mtu, rfc3442-classless-static-routes and
	// ntp-servers).
	Extra []string
	// Forced are options sent whether the client asked for them or not
	// (--dhcp-option-force).
	Forced []string
}

// hostName matches the options that set the router's host name: the
// router's namespace shares the host's UTS namespace, and
// dhclient-script runs `hostname NEW_HOST_NAME` when the host's name is
// empty, "(none)", "localhost", or the previous lease's host-name. The
// lab never sends one.
var hostName = regexp.MustCompile(`^(option:host-name|12)(,|$)`)

// DHCPShellBreaker is an option value made to break a shell that
// evaluates it (eval, an unquoted expansion inside sh -c, a generated
// script): each of its parts, run, creates PwnedFile in the router's
// /etc. It is for bad-input tests of the exit hook. dnsmasq sends it as
// is; what reaches dhclient-script is dhclient's choice (isc-dhcp-client
// 4.4, as measured in the lab):
//
//   - domain-name, domain-search, host-name, nis-domain, netbios-scope
//     and root-path holding it are dropped (new_domain_name and the rest
//     are then missing from the environment, not empty);
//   - bootfile-name and tftp-server ("option:bootfile-name," +
//     DHCPShellBreaker, forced: the client does not ask for them; dnsmasq
//     may put them in the header's file and sname fields) reach the hooks
//     as new_bootfile_name and new_tftp_server_name, with a backslash put
//     before $, `, \, " and ', but ; and spaces as they were.
//
// Several long options at once overflow the 576-byte reply: dnsmasq then
// leaves some out (new_dhcp_option_overload says it used file and sname).
const DHCPShellBreaker = "x;touch /etc/dhcp/pwned;`touch /etc/dhcp/pwned`$(touch /etc/dhcp/pwned)"

// PwnedFile is the file DHCPShellBreaker creates, as the router's
// namespace sees it (/etc there is l.Etc()).
const PwnedFile = "/etc/dhcp/pwned"

// Pwned reports whether PwnedFile exists in the router's /etc: whether
// something evaluated DHCPShellBreaker.
func (l *Lab) Pwned() bool {
	_, err := os.Stat(l.etcPath(PwnedFile))
	return err == nil
}

// StartDHCP starts dnsmasq as the DHCPv4 server of isp, on its edge
// facing the router, with isp.Router reserved for the router's WAN and
// the router option isp.Gate, and waits until it listens. It also lets
// DHCP through the ISP's spoof filter: a client with no address yet
// sends from 0.0.0.0, which is not spoofing (and which the filter would
// drop, and count, before dnsmasq saw it).
func (l *Lab) StartDHCP(isp *ISP) *DHCPServer {
	l.t.Helper()
	dir, err := os.MkdirTemp("", "ifisp-dhcp-")
	if err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(func() { os.RemoveAll(dir) })
	s := &DHCPServer{l: l, ISP: isp, MAC: l.wanMAC(isp), dir: dir, log: &lineLog{}, addr: isp.Router}
	l.returnBeforeSpoofed(isp.NS, "iptables", "-i", "cpe", "-s", "0.0.0.0/32", "-p", "udp", "--sport", "68", "--dport", "67",
		"-m", "comment", "--comment", "lab-dhcp", "-j", "RETURN")
	s.writeHosts()
	s.writeOpts()
	s.start()
	return s
}

// wanMAC returns the MAC of the router's WAN toward isp. A VLAN WAN
// (VLANWAN) does not exist before ifup: it has the MAC of the interface
// it is on.
func (l *Lab) wanMAC(isp *ISP) string {
	l.t.Helper()
	dev := isp.Iface
	if dev == VLANWAN {
		dev = "eth2"
	}
	f := strings.Fields(l.Must("", "ip", "-n", l.Router, "-br", "link", "show", "dev", dev))
	if len(f) < 3 {
		l.t.Fatalf("no MAC for %s in the router", dev)
	}
	if _, err := net.ParseMAC(f[2]); err != nil {
		l.t.Fatalf("the MAC of %s in the router: %v", dev, err)
	}
	return f[2]
}

// returnBeforeSpoofed adds rule, once, to the raw PREROUTING chain of
// namespace ns (an ISP's edge), by iptables or ip6tables, before its jump
// to "spoofed": rule ends in RETURN, and what it matches, Seen counts
// neither as legit nor as spoofed. It reports whether it added the rule,
// false when the chain had it already.
func (l *Lab) returnBeforeSpoofed(ns, iptables string, rule ...string) bool {
	l.t.Helper()
	if _, err := l.Exec(ns, append([]string{iptables, "-w", "-t", "raw", "-C", "PREROUTING"}, rule...)...); err == nil {
		return false
	}
	pos := 0
	for _, line := range strings.Split(l.Must(ns, iptables, "-w", "-t", "raw", "-S", "PREROUTING"), "\n") {
		if !strings.HasPrefix(line, "-A PREROUTING") {
			continue
		}
		pos++
		if strings.HasSuffix(line, "-j spoofed") {
			break
		}
	}
	l.Must(ns, append([]string{iptables, "-w", "-t", "raw", "-I", "PREROUTING", strconv.Itoa(pos)}, rule...)...)
	return true
}

func (s *DHCPServer) path(name string) string { return filepath.Join(s.dir, name) }

// writeHosts writes the reservation as dnsmasq's --dhcp-hostsfile reads
// it: the MAC and the address, no name (a name would be sent as the
// host-name option).
func (s *DHCPServer) writeHosts() {
	s.l.t.Helper()
	s.l.WriteFile(s.path("hosts"), s.MAC+","+s.addr+"\n")
}

// writeOpts writes the options dnsmasq re-reads on SIGHUP
// (--dhcp-optsfile): the router and Extra. An option given with no value
// is one dnsmasq does not send, its own default included.
func (s *DHCPServer) writeOpts() {
	s.l.t.Helper()
	lines := []string{"option:router," + s.ISP.Gate}
	if s.opts.NoRouter {
		lines = []string{"option:router"}
	}
	lines = append(lines, s.opts.Extra...)
	s.l.WriteFile(s.path("opts"), strings.Join(lines, "\n")+"\n")
}

// args are dnsmasq's arguments.
func (s *DHCPServer) args() []string {
	_, network, _ := net.ParseCIDR(s.ISP.Net)
	args := []string{"/usr/sbin/dnsmasq",
		"--keep-in-foreground", "--conf-file=/dev/null", "--no-hosts", "--no-resolv", "--port=0",
		"--user=root", "--group=root", // it re-reads its files, in a folder only root may read, on SIGHUP
		"--log-facility=-", "--log-dhcp",
		"--interface=cpe", "--bind-interfaces",
		"--dhcp-authoritative", "--no-ping",
		// No host-name option (12): dnsmasq would echo the name the
		// client sent (Debian's dhclient.conf sends the host's), and
		// dhclient-script would run `hostname` with it: see hostName.
		"--dhcp-ignore-names",
		fmt.Sprintf("--dhcp-range=%s,static,%s,%ds", network.IP, net.IP(network.Mask), int(DHCPLease.Seconds())),
		fmt.Sprintf("--dhcp-option=option:T1,%d", int(DHCPRenew.Seconds())),
		fmt.Sprintf("--dhcp-option=option:T2,%d", int(DHCPRebind.Seconds())),
		"--dhcp-hostsfile=" + s.path("hosts"),
		"--dhcp-optsfile=" + s.path("opts"),
		"--dhcp-leasefile=" + s.path("leases"),
		"--pid-file=" + s.path("pid"),
	}
	for _, o := range s.opts.Forced {
		args = append(args, "--dhcp-option-force="+o)
	}
	return args
}

// start starts dnsmasq and waits until it listens on port 67.
func (s *DHCPServer) start() {
	s.l.t.Helper()
	s.d = s.l.startDaemon("dnsmasq at "+s.ISP.Name, s.ISP.NS, s.args(), s.log, "listening on port 67", 5*time.Second, func() bool {
		out, _ := s.l.Exec(s.ISP.NS, "ss", "-Hlun", "sport = :67")
		return strings.TrimSpace(out) != ""
	}, s.Log)
}

// running returns dnsmasq's process while it runs, nil once it has
// exited or was stopped.
func (s *DHCPServer) running() *daemon {
	if !s.d.running() {
		return nil
	}
	return s.d
}

// Stop kills dnsmasq (SIGKILL: a server that vanishes, sending nothing
// more) and waits until it is gone. Its lease file stays, for Start.
func (s *DHCPServer) Stop() {
	s.l.t.Helper()
	s.d.stop(syscall.SIGKILL)
}

// Start starts dnsmasq again after Stop, with the same reservation,
// options and lease file.
func (s *DHCPServer) Start() {
	s.l.t.Helper()
	if s.running() != nil {
		s.l.t.Fatalf("dnsmasq at %s runs already", s.ISP.Name)
	}
	s.start()
}

// reload makes dnsmasq re-read its hosts and options files (SIGHUP) and
// waits until it said so: it logs "read FILE" for each.
func (s *DHCPServer) reload() {
	s.l.t.Helper()
	d := s.running()
	if d == nil {
		return // the next Start reads them
	}
	count := func() int {
		return len(s.log.Matching(func(line string) bool {
			return strings.Contains(line, "read "+s.path("hosts")) || strings.Contains(line, "read "+s.path("opts"))
		}))
	}
	before := count()
	d.cmd.Process.Signal(syscall.SIGHUP)
	for deadline := time.Now().Add(5 * time.Second); count() < before+2; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			s.l.t.Fatalf("dnsmasq at %s did not re-read its files 5s after SIGHUP:\n%s", s.ISP.Name, s.Log())
		}
	}
}

// Reserve moves the router's reservation to addr (the same /24 as
// isp.Router: 203.0.113.3 for ISP B). dnsmasq re-reads it at once (it
// keeps running: no renewal goes unanswered), and answers the router's
// next renewal, at most about 5 s later, with a DHCPNAK, being
// authoritative; dhclient then drops its address (reason EXPIRE), starts
// over and is bound to addr (reason BOUND).
func (s *DHCPServer) Reserve(addr string) {
	s.l.t.Helper()
	a, err := netip.ParseAddr(addr)
	if err != nil || !netip.MustParsePrefix(s.ISP.Net).Contains(a) {
		s.l.t.Fatalf("reservation %s: not an address in %s", addr, s.ISP.Net)
	}
	s.addr = addr
	s.writeHosts()
	s.reload()
}

// Reserved returns the reserved address.
func (s *DHCPServer) Reserved() string { return s.addr }

// SetOptions replaces the options the server sends from the router's next
// renewal on. A change of Forced restarts dnsmasq (its --dhcp-optsfile
// cannot force an option); anything else it re-reads on SIGHUP. An option
// that sets a host name fails the test (see hostName).
func (s *DHCPServer) SetOptions(o DHCPOptions) {
	s.l.t.Helper()
	for _, opt := range append(slices.Clone(o.Extra), o.Forced...) {
		if hostName.MatchString(opt) {
			s.l.t.Fatalf("DHCP option %q: dhclient-script would set the host's name", opt)
		}
	}
	restart := !slices.Equal(o.Forced, s.opts.Forced)
	s.opts = DHCPOptions{NoRouter: o.NoRouter, Extra: slices.Clone(o.Extra), Forced: slices.Clone(o.Forced)}
	s.writeOpts()
	if !restart {
		s.reload()
		return
	}
	if s.running() != nil {
		s.Stop()
		s.start()
	}
}

// Log returns what dnsmasq logged, every run of it, each line after the
// time the lab read it.
func (s *DHCPServer) Log() string { return s.log.String() }

// Leases returns dnsmasq's lease file: one line per lease, "EXPIRY MAC
// ADDRESS NAME CLIENT-ID", EXPIRY in seconds since 1970 (a renewal
// moves it to DHCPLease from then).
func (s *DHCPServer) Leases() string {
	b, _ := os.ReadFile(s.path("leases"))
	return string(b)
}

// DHCPReply is one DHCPACK or DHCPNAK the server logged.
type DHCPReply struct {
	At   time.Time // when the lab read dnsmasq's log line
	Kind string    // "DHCPACK", "DHCPNAK"
	Addr string    // the address acknowledged, or the one refused
}

// dhcpReply matches dnsmasq's log line of an ACK or a NAK: "DHCPACK(cpe)
// 203.0.113.2 02:..." or "DHCPNAK(cpe) 203.0.113.2 02:... static lease
// available".
var dhcpReply = regexp.MustCompile(`\b(DHCPACK|DHCPNAK)\([^)]*\) (\S+)`)

// Replies returns the server's DHCPACKs and DHCPNAKs so far, oldest first:
// the renewals it answered, and when.
func (s *DHCPServer) Replies() []DHCPReply {
	var replies []DHCPReply
	for _, line := range s.log.Lines() {
		if m := dhcpReply.FindStringSubmatch(line.Text); m != nil {
			replies = append(replies, DHCPReply{At: line.At, Kind: m[1], Addr: m[2]})
		}
	}
	return replies
}

// lineLog keeps a process's output by line, each with the time it came.
type lineLog struct {
	mu      sync.Mutex
	partial []byte
	lines   []LogLine
}

// LogLine is one line a process printed, with the time it came.
type LogLine struct {
	At   time.Time
	Text string
}

func (g *lineLog) Write(p []byte) (int, error) {
	now := time.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	g.partial = append(g.partial, p...)
	for {
		i := bytes.IndexByte(g.partial, '\n')
		if i < 0 {
			break
		}
		g.lines = append(g.lines, LogLine{At: now, Text: string(g.partial[:i])})
		g.partial = g.partial[i+1:]
	}
	return len(p), nil
}

// Lines returns the complete lines so far.
func (g *lineLog) Lines() []LogLine {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.lines)
}

// Matching returns the lines for which ok is true.
func (g *lineLog) Matching(ok func(string) bool) []LogLine {
	var m []LogLine
	for _, l := range g.Lines() {
		if ok(l.Text) {
			m = append(m, l)
		}
	}
	return m
}

func (g *lineLog) String() string {
	var b strings.Builder
	for _, l := range g.Lines() {
		fmt.Fprintf(&b, "%s %s\n", l.At.Format("15:04:05.000"), l.Text)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	b.Write(g.partial)
	return b.String()
}

// DHCPClientConf is the router's /etc/dhcp/dhclient.conf:
// isc-dhcp-client's Debian 12 one without its comments.
const DHCPClientConf = `option rfc3442-classless-static-routes code 121 = array of unsigned integer 8;

send host-name = gethostname();
request subnet-mask, broadcast-address, time-offset, routers,
	domain-name, domain-name-servers, domain-search, host-name,
	dhcp6.name-servers, dhcp6.domain-search, dhcp6.fqdn, dhcp6.sntp-servers,
	netbios-name-servers, netbios-scope, interface-mtu,
	rfc3442-classless-static-routes, ntp-servers;
`

// DHCPExitHook is the name of ifisp's hook in the router's
// /etc/dhcp/dhclient-exit-hooks.d: dhclient-script sources what
// `run-parts --list` lists there, names of [A-Za-z0-9_-] only, no dot.
const DHCPExitHook = "ifisp"

// dhclientFiles are the files ifupdown's dhcp method (ifupdown 0.8) gives
// dhclient for iface: `dhclient -4 -v -i -pf /run/dhclient.IFACE.pid -lf
// /var/lib/dhcp/dhclient.IFACE.leases -I -df
// /var/lib/dhcp/dhclient6.IFACE.leases IFACE`. They are the host's:
// `ip netns exec` binds /etc/netns/NAME over /etc, nothing over /run or
// /var/lib/dhcp. Two labs would share them (the names have only the
// interface's); the integration tests run one at a time (go test -p 1,
// as make test runs them, and no lab test is t.Parallel), and
// InstallDHCPHook refuses to start when a dhclient of the same interface
// runs.
func dhclientFiles(iface string) (pid, leases, duid string) {
	return "/run/dhclient." + iface + ".pid", "/var/lib/dhcp/dhclient." + iface + ".leases", "/var/lib/dhcp/dhclient6." + iface + ".leases"
}

// InstallDHCPHook prepares the router for `inet dhcp` stanzas run by the
// real ifupdown and dhclient, and installs ifisp's dhclient exit hook
// (hooks/dhclient-exit-hook with @SBINDIR@ replaced by binDir). In the
// router's /etc:
//
//   - resolv.conf, so that dhclient-script's make_resolv_conf (run when
//     a lease has DNS options) writes the lab's, not the host's: `ip netns
//     exec` binds it over /etc/resolv.conf only when it exists;
//   - dhcp/: dhclient.conf (DHCPClientConf), an empty
//     dhclient-enter-hooks.d and dhclient-exit-hooks.d with ifisp's hook
//     only. It hides the host's /etc/dhcp whole: Debian's exit hooks
//     there (timesyncd's writes the host's /run/systemd) never run in the
//     lab.
//
// What dhclient-script still does outside the namespace's /etc: when a
// lease has DNS options, make_resolv_conf writes its new file next to
// /etc/resolv.conf, in the host's /etc, as resolv.conf.dhclient-new.PID,
// copies it into the (bound) resolv.conf and removes it; a hook that
// fails is reported with `logger` to the host's syslog; and a host-name
// option would run `hostname` in the host's UTS namespace, which the lab's
// server never sends (see hostName).
//
// dhclient daemonizes in the router's namespace once bound; the lab's
// removal kills it with the namespace's other processes, but first this
// cleanup kills it and removes its pid and lease files from the host's
// /run and /var/lib/dhcp (dhclientFiles), for both WANs. A stale pid
// file whose dhclient is gone, and a stale lease file of the lab's (from
// a test run killed before its cleanup), are removed first; a lease
// file that is not the lab's fails the test, and so does a dhclient that
// still runs for a WAN's name.
func (l *Lab) InstallDHCPHook(binDir string) {
	l.t.Helper()
	l.installDHCPHook(binDir, false)
}

// installDHCPHook is InstallDHCPHook, and with v6 InstallDHCP6Hook.
func (l *Lab) installDHCPHook(binDir string, v6 bool) {
	l.t.Helper()
	hook := l.hookFile("dhclient-exit-hook", binDir)
	var files []string // the cleanup's to remove
	for _, isp := range l.ISPs() {
		pid, leases, duid := dhclientFiles(isp.Iface)
		l.clearDhclient("dhclient", isp.Iface, pid, leases, labLeases)
		files = append(files, pid, leases)
		if v6 {
			pid6, leases6 := dhclient6Files(isp.Iface)
			l.clearDhclient("dhclient -6", isp.Iface, pid6, leases6, labLeases6)
			files = append(files, pid6, leases6)
		}
		if _, err := os.Stat(duid); os.IsNotExist(err) {
			files = append(files, duid) // if dhclient makes it, it is the lab's
		}
	}
	l.t.Cleanup(func() { l.removeDhclients(files) })

	etc := l.Etc()
	if _, err := os.Stat(filepath.Join(etc, "resolv.conf")); os.IsNotExist(err) {
		l.WriteFile(filepath.Join(etc, "resolv.conf"), "# the lab router's: dhclient-script writes here\n")
	}
	for _, d := range []string{"dhclient-enter-hooks.d", "dhclient-exit-hooks.d"} {
		if err := os.MkdirAll(filepath.Join(etc, "dhcp", d), 0o755); err != nil {
			l.t.Fatal(err)
		}
	}
	l.WriteFile(filepath.Join(etc, "dhcp/dhclient.conf"), DHCPClientConf)
	// Sourced, not run: 0644, as Debian installs exit hooks.
	l.WriteFile(filepath.Join(etc, "dhcp/dhclient-exit-hooks.d", DHCPExitHook), hook)
}

// DHCPClientConfig appends lines to the router's dhclient.conf, e.g.
// "supersede dhcp-lease-time 20;": dhclient applies supersede statements
// to each lease as it receives it, so its timers (and the environment of
// its script) follow the superseded value. Before ifup, after
// InstallDHCPHook.
func (l *Lab) DHCPClientConfig(lines ...string) {
	l.t.Helper()
	path := filepath.Join(l.Etc(), "dhcp/dhclient.conf")
	b, err := os.ReadFile(path)
	if err != nil {
		l.t.Fatal(err)
	}
	l.WriteFile(path, string(b)+strings.Join(lines, "\n")+"\n")
}

// clearDhclient readies iface for what, dhclient or dhclient -6, whose
// pid file is pid and lease file leases: a stale pid file (whose process
// is gone) is removed, and so is a stale lease file that ours says is the
// lab's; a what that still runs, or a lease file that is not the lab's,
// fails the test.
func (l *Lab) clearDhclient(what, iface, pid, leases string, ours func([]byte) bool) {
	l.t.Helper()
	if p, ok := runningDhclient(pid); ok {
		l.t.Fatalf("a %s (pid %d, %s) runs for %s already: another lab's, or the host's", what, p, pid, iface)
	}
	os.Remove(pid)
	if b, err := os.ReadFile(leases); err == nil {
		if !ours(b) {
			l.t.Fatalf("%s exists and holds %s leases that are not the lab's:\n%s", leases, what, b)
		}
		os.Remove(leases)
	}
}

// runningDhclient returns the process a dhclient pid file names, when
// that is a dhclient that runs.
func runningDhclient(pidFile string) (int, bool) {
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, false
	}
	return pid, running(pid, "dhclient")
}

// labLeases reports whether a dhclient lease file holds only leases from
// the lab's ISPs' servers (or none: only the DUID dhclient -i writes).
func labLeases(b []byte) bool {
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(strings.TrimSuffix(strings.TrimSpace(line), ";"))
		if len(f) == 3 && f[0] == "option" && f[1] == "dhcp-server-identifier" {
			if a, err := netip.ParseAddr(f[2]); err != nil || !(netip.MustParsePrefix("203.0.113.0/24").Contains(a) || netip.MustParsePrefix("198.51.100.0/24").Contains(a)) {
				return false
			}
		}
	}
	return true
}

// removeDhclients kills the dhclients of the router's namespace (SIGKILL,
// as the lab's removal would) and waits until they are gone, then removes
// files: their pid and lease files, and the DUID files dhclient made.
func (l *Lab) removeDhclients(files []string) {
	pids := l.processes(l.Router, "dhclient")
	for _, p := range pids {
		syscall.Kill(p, syscall.SIGKILL)
	}
	waitGone(pids, 5*time.Second)
	for _, f := range files {
		os.Remove(f)
	}
}

// CountFrom starts counting, at isp's edge, the IPv4 packets from the
// router whose source is addr, whatever the spoof filter then makes of
// them: a rule with no target, first in the ISP's raw PREROUTING, which
// Seen ignores. An address the router's lease no longer holds is, for a
// real ISP, spoofed, although it is in the customer range that the lab's
// filter accepts. It returns the count so far.
func (l *Lab) CountFrom(isp *ISP, addr string) func() int {
	l.t.Helper()
	return l.countFrom(isp, "iptables", addr)
}

// countFrom is CountFrom and CountFrom6: a count of the packets from src
// by iptables or ip6tables.
func (l *Lab) countFrom(isp *ISP, iptables, src string) func() int {
	l.t.Helper()
	comment := "lab-from-" + src
	l.Must(isp.NS, iptables, "-w", "-t", "raw", "-I", "PREROUTING", "1", "-i", "cpe", "-s", src,
		"-m", "comment", "--comment", comment)
	return func() int {
		l.t.Helper()
		for _, line := range strings.Split(l.Must(isp.NS, iptables, "-w", "-t", "raw", "-nvxL", "PREROUTING"), "\n") {
			if strings.Contains(line, "/* "+comment+" */") {
				n, _ := strconv.Atoi(strings.Fields(line)[0])
				return n
			}
		}
		l.t.Fatalf("the counter of packets from %s at %s is gone", src, isp.Name)
		return 0
	}
}
