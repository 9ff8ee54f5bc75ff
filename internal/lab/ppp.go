package lab

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The lab's PPPoE: ISP B as a PPPoE access concentrator on its edge
// (pppoe-server, which runs a pppd for each session), the router dialling
// it with pppd's kernel-mode PPPoE (the rp-pppoe plugin) on wanb, started
// by ifupdown's `inet ppp` method (pon and poff). It needs the kernel's
// ppp_generic, ppp_async and pppoe: the VM tier's.
//
//	lan ── lan0 [router] ppp0 203.0.113.2 ══ PPPoE on wanb ══ cpe [ispb] ppp0 203.0.113.1 ── uplink
//	                     wana 198.51.100.2 ── cpe [ispa]
//
// ISP B's edge then has no IPv4 address on cpe (PPPoE is layer 2): its
// 203.0.113.1 is on its side of each session, the session's peer address a
// /32 route there, and the rest of 203.0.113.0/24 unreachable, as a
// broadband access server's pool is.

// PPPProvider is the router's peers file (/etc/ppp/peers/dsl) and the
// stanza that dials it: pon's provider, pppd's ipparam.
const PPPProvider = "dsl"

// PPPoEStanzas is the router's interfaces file for the PPPoE lab: wana
// as in TwoISPs (the backup, its main-table default from isp-metric 1),
// and ISP B by PPPoE, preferred, in place of TwoISPs' wanb stanzas: the
// `inet ppp` stanza dsl, whose session gets its main-table default from
// isp-metric 0, ifisp's own. Not from pppd's `defaultroute` (off in
// PPPPeers): pppd 2.4.9 adds none while another default is there ("not
// replacing default route to wana [198.51.100.1]", with
// `defaultroute-metric 0` too), `replacedefaultroute` would delete wana's,
// and a default pppd adds comes before ip-up, so before the session's SNAT
// rules and guard, and is not one ifisp withdraws at ifdown. Its pre-up
// line brings up the Ethernet PPPoE runs on, as pppoeconf writes it.
var PPPoEStanzas = Replace(Replace(TwoISPs, "wanb", "inet6", ""), "wanb", "inet", `iface dsl inet ppp
	pre-up ip link set dev wanb up
	provider dsl
	isp-table ispb
	isp-metric 0
	snat-from 10.1.0.0/24
`)

// PPPPeers is the router's /etc/ppp/peers/dsl: kernel-mode PPPoE on wanb,
// no authentication either way, the address from the ISP, redial at once
// (1 s) and for ever, a dead peer found in 3 s (LCP echoes), and ipparam
// naming the stanza for ifisp-lease. No defaultroute (PPPoEStanzas says
// why) and no usepeerdns.
const PPPPeers = `# The lab router's PPPoE provider (ifupdown's ` + "`inet ppp`" + ` stanza dsl runs pon dsl).
plugin rp-pppoe.so
nic-wanb
noauth
noipdefault
nodefaultroute
persist
maxfail 0
holdoff 1
lcp-echo-interval 1
lcp-echo-failure 3
ipparam dsl
noaccomp
default-asyncmap
mtu 1492
mru 1492
`

// pppServerOptions is ISP B's /etc/ppp/pppoe-server-options, read by the
// pppd pppoe-server runs for each session. noauth: pppd requires a peer
// to authenticate when its system has a default route, and ISP B's has.
const pppServerOptions = `# The lab's ISP B: the pppd of each PPPoE session.
noauth
lcp-echo-interval 1
lcp-echo-failure 3
debug
`

// pppEdge is the interface pattern of ISP B's sessions in its spoof
// filter.
const pppEdge = "ppp+"

// PPPoEServer is pppoe-server on ISP B's edge, with one session at most,
// whose peer gets Remote. It runs until Stop or the lab's removal.
type PPPoEServer struct {
	l      *Lab
	ISP    *ISP
	Remote string // the address the next session's peer gets

	dir  string // output of each run
	runs int
	d    *daemon // the pppoe-server that runs or ran last
}

// StartPPPoE makes ISP B a PPPoE access concentrator: its edge without
// IPv4 on cpe, its spoof filter on its sessions too (packets from a source
// its route to does not lead back to the session, uRPF as access servers
// do: an address of an earlier session is spoofed), its /etc/ppp (the
// namespace's own), and pppoe-server on cpe handing the peer of its one
// session remote, itself ISP B's gateway address. It waits until the
// server listens.
func (l *Lab) StartPPPoE(remote string) *PPPoEServer {
	l.t.Helper()
	isp := &l.B
	l.Must(isp.NS, "ip", "-4", "addr", "flush", "dev", "cpe")
	l.Must(isp.NS, "ip", "route", "add", "unreachable", isp.Net)
	for _, r := range [][]string{
		{"-s", isp.Net, "-p", "icmp", "-m", "length", "--length", strconv.Itoa(20 + 8 + TracerSize), "-m", "rpfilter", "-m", "comment", "--comment", "lab-tracer", "-j", "RETURN"},
		{"-s", isp.Net, "-m", "rpfilter", "-j", "RETURN"},
		{"-j", "spoofed"},
	} {
		l.Must(isp.NS, append([]string{"iptables", "-w", "-t", "raw", "-A", "PREROUTING", "-i", pppEdge}, r...)...)
	}
	// What the spoofed packets were, for messages: the LAN's own
	// source (not NATed), another address of the ISP's pool (an earlier
	// session's), ISP A's (a flow NATed to wana), anything else.
	for i, kind := range []struct{ src, comment string }{{"10.0.0.0/8", "lab-private"}, {isp.Net, "lab-pool"}, {l.A.Net, "lab-ispa"}} {
		l.Must(isp.NS, "iptables", "-w", "-t", "raw", "-I", "spoofed", strconv.Itoa(i+1), "-s", kind.src, "-m", "comment", "--comment", kind.comment, "-j", "DROP")
	}
	etc := filepath.Join("/etc/netns", isp.NS, "ppp")
	l.WriteFile(filepath.Join(etc, "options"), "# The lab's ISP B: pppd's system options (none).\n")
	l.WriteFile(filepath.Join(etc, "pppoe-server-options"), pppServerOptions)
	dir, err := os.MkdirTemp("", "ifisp-pppoe-")
	if err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(func() { os.RemoveAll(dir) })
	s := &PPPoEServer{l: l, ISP: isp, Remote: remote, dir: dir}
	l.t.Cleanup(s.Stop)
	s.start()
	return s
}

// start starts pppoe-server with s.Remote and waits until it has its
// discovery socket (ethertype 0x8863) open.
func (s *PPPoEServer) start() {
	s.l.t.Helper()
	s.runs++
	out, err := os.Create(filepath.Join(s.dir, fmt.Sprintf("run%d.log", s.runs)))
	if err != nil {
		s.l.t.Fatal(err)
	}
	defer out.Close()
	// -o: each run numbers its sessions apart from the last's, whose
	// relay may not have seen its end yet.
	args := []string{"pppoe-server", "-F", "-I", "cpe", "-C", "lab-" + s.ISP.Name,
		"-L", s.ISP.Gate, "-R", s.Remote, "-N", "1", "-o", strconv.Itoa(100 * s.runs)}
	s.d = s.l.startDaemon("pppoe-server at "+s.ISP.Name, s.ISP.NS, args, out, "listening (a discovery socket)", 10*time.Second, func() bool {
		packet, _ := s.l.Exec(s.ISP.NS, "cat", "/proc/net/packet")
		return strings.Contains(packet, " 8863 ")
	}, s.Log)
}

// Log returns what pppoe-server printed, every run (it logs to syslog
// too: Syslog).
func (s *PPPoEServer) Log() string {
	var b strings.Builder
	for i := 1; i <= s.runs; i++ {
		out, _ := os.ReadFile(filepath.Join(s.dir, fmt.Sprintf("run%d.log", i)))
		fmt.Fprintf(&b, "run %d:\n%s", i, out)
	}
	return b.String()
}

// Restart ends the server and its session and starts it again, the next
// session's peer getting remote: the ISP ends the session (its pppd sends
// the router an LCP terminate request), and the router's pppd dials
// again. The new server listens before the old session ends, so the
// router's first discovery finds it.
func (s *PPPoEServer) Restart(remote string) {
	s.l.t.Helper()
	sessions := s.sessionPIDs()
	s.d.stop(syscall.SIGKILL) // the server only: its session lives on
	s.Remote = remote
	s.start()
	s.endSessions(sessions)
}

// Stop ends the server and its sessions and waits until they are gone.
func (s *PPPoEServer) Stop() {
	s.l.t.Helper()
	sessions := s.sessionPIDs()
	s.d.stop(syscall.SIGKILL)
	s.endSessions(sessions)
}

// session is one PPPoE session's processes at ISP B.
type session struct{ pppd, relays []int }

// sessionPIDs returns the session processes in ISP B's namespace: the
// pppds pppoe-server started and their relays (pppoe).
func (s *PPPoEServer) sessionPIDs() session {
	return session{s.l.processes(s.ISP.NS, "pppd"), s.l.processes(s.ISP.NS, "pppoe")}
}

// endSessions sends the sessions' pppds SIGTERM, which terminate their
// sessions with LCP through their relays and end them, and waits until
// every one is gone; SIGKILL after 5 s.
func (s *PPPoEServer) endSessions(ss session) {
	s.l.t.Helper()
	for _, p := range ss.pppd {
		syscall.Kill(p, syscall.SIGTERM)
	}
	pids := append(slices.Clone(ss.pppd), ss.relays...)
	if !waitGone(pids, 5*time.Second) {
		for _, p := range pids {
			syscall.Kill(p, syscall.SIGKILL)
		}
		waitGone(pids, 5*time.Second)
	}
}

// RouterPPPDs returns the router's pppd processes.
func (l *Lab) RouterPPPDs() []int { return l.processes(l.Router, "pppd") }

// WaitNoRouterPPPD waits until the router runs no pppd, and fails the test
// after timeout.
func (l *Lab) WaitNoRouterPPPD(timeout time.Duration) {
	l.t.Helper()
	if pids := l.RouterPPPDs(); !waitGone(pids, timeout) {
		l.t.Fatalf("the router's pppd (%v) still runs %s later", pids, timeout)
	}
}

// InstallPPP gives the router its own /etc/ppp (`ip netns exec` binds
// the namespace's over /etc/ppp, whole, when it exists): ppp's options,
// ip-up and ip-down as Debian ships them (the guest's, from vm/base.sh),
// the peers file PPPPeers, ifisp's ip-up.d and ip-down.d scripts
// (hooks/ppp-hook.sh.in as `make install` makes them, with @SBINDIR@
// binDir), and after each a recorder of its runs, for ScriptRuns.
func (l *Lab) InstallPPP(binDir string) {
	l.t.Helper()
	etc := filepath.Join(l.Etc(), "ppp")
	for _, f := range []string{"options", "ip-up", "ip-down"} {
		b, err := os.ReadFile(filepath.Join("/etc/ppp", f))
		if err != nil {
			l.t.Fatalf("ppp's /etc/ppp/%s: %v (is ppp installed?)", f, err)
		}
		mode := os.FileMode(0o755)
		if f == "options" {
			mode = 0o644
		}
		l.writeFile(filepath.Join(etc, f), string(b), mode)
	}
	l.WriteFile(filepath.Join(etc, "peers", PPPProvider), PPPPeers)
	for _, s := range []struct{ script, what, dir string }{
		{"ip-up", "up on the session's address", "up"},
		{"ip-down", "down", "down"},
	} {
		hook := l.hookFile("ppp-hook.sh.in", binDir, "@SCRIPT@", s.script, "@WHAT@", s.what, "@DIR@", s.dir)
		l.WriteScript(filepath.Join(etc, s.script+".d", "ifisp"), hook)
		// Its name sorts after ifisp's: it runs once ifisp-lease has returned.
		l.WriteScript(filepath.Join(etc, s.script+".d", "zz-lab-env"), "#!/bin/sh\n"+recorder(pppRuns, s.script))
	}
	l.mkdirEtc(pppRuns)
}

// RecordHookLinks adds a hook to each of the router's if-*.d folders that
// records its interfaces and addresses as the hooks see them, for
// HookLinks: whether an interface exists yet when ifupdown runs them.
func (l *Lab) RecordHookLinks() {
	l.t.Helper()
	l.recordHooks("links", "ip -br addr")
}

// HookLinks returns `ip -br addr` as the hooks of the last ifup or ifdown
// of iface, family and phase saw it.
func (l *Lab) HookLinks(iface, family, phase string) string {
	l.t.Helper()
	return l.hookRecord("links", iface, family, phase)
}

// Syslog is what the guest's processes sent to syslog (/dev/log): pppd's
// and pppoe-server's log, ifisp-lease's one line per event.
type Syslog struct {
	log  *lineLog
	mu   sync.Mutex
	errs []error
}

// SyslogLine is one message, with the time the lab received it.
type SyslogLine struct {
	At       time.Time
	Priority int    // facility*8 + severity; severity 7 is debug
	Text     string // "pppd[123]: ...": the message without priority and date
}

// ListenSyslog receives syslog's messages at /dev/log until the lab's
// removal. /dev/log must not exist: it is a machine's syslog daemon's,
// and the lab never takes it over (the VM tier's guest has none).
func (l *Lab) ListenSyslog() *Syslog {
	l.t.Helper()
	const path = "/dev/log"
	if _, err := os.Lstat(path); err == nil {
		l.t.Fatalf("%s exists: this machine has a syslog daemon, and the lab reads syslog only where none runs (the VM tier's guest)", path)
	}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		l.t.Fatal(err)
	}
	s := &Syslog{log: &lineLog{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 64<<10)
		for {
			n, _, err := conn.ReadFrom(buf)
			if err != nil {
				if !errors.Is(err, net.ErrClosed) {
					s.mu.Lock()
					s.errs = append(s.errs, err)
					s.mu.Unlock()
				}
				return
			}
			msg := bytes.TrimRight(buf[:n], "\n\x00")
			s.log.Write(append(bytes.ReplaceAll(msg, []byte("\n"), []byte(" ")), '\n'))
		}
	}()
	l.t.Cleanup(func() {
		conn.Close()
		<-done
		os.Remove(path)
	})
	return s
}

// Lines returns the messages so far, oldest first.
func (s *Syslog) Lines() []SyslogLine {
	var lines []SyslogLine
	for _, g := range s.log.Lines() {
		lines = append(lines, parseSyslog(g))
	}
	return lines
}

// parseSyslog reads "<PRI>Mmm dd hh:mm:ss TAG: MSG" (glibc's and Go's
// log/syslog's local format).
func parseSyslog(g LogLine) SyslogLine {
	line := SyslogLine{At: g.At, Priority: -1, Text: g.Text}
	rest, ok := strings.CutPrefix(g.Text, "<")
	if !ok {
		return line
	}
	pri, rest, ok := strings.Cut(rest, ">")
	if !ok {
		return line
	}
	if p, err := strconv.Atoi(pri); err == nil {
		line.Priority = p
	}
	// The date: "Mmm dd hh:mm:ss " (Go's: RFC 3339), then the tag.
	if len(rest) > 16 && rest[3] == ' ' && rest[15] == ' ' {
		rest = rest[16:]
	} else if d, r, ok := strings.Cut(rest, " "); ok && strings.Contains(d, "T") {
		rest = r
	}
	line.Text = rest
	return line
}

// Matching returns the messages that contain every one of subs.
func (s *Syslog) Matching(subs ...string) []SyslogLine {
	var m []SyslogLine
	for _, line := range s.Lines() {
		ok := true
		for _, sub := range subs {
			ok = ok && strings.Contains(line.Text, sub)
		}
		if ok {
			m = append(m, line)
		}
	}
	return m
}

// String lists the messages, debug ones (pppd's packet log) too when
// debug is true, each after the time the lab received it.
func (s *Syslog) String(debug bool) string {
	var b strings.Builder
	for _, line := range s.Lines() {
		if !debug && line.Priority%8 == 7 {
			continue
		}
		fmt.Fprintf(&b, "%s %s\n", line.At.Format("15:04:05.000"), line.Text)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, err := range s.errs {
		fmt.Fprintf(&b, "(reading syslog: %v)\n", err)
	}
	return b.String()
}

// PPPAddr returns the IPv4 address and peer of the router's interface
// iface, a PPP session's (invalid when it has none).
func (l *Lab) PPPAddr(iface string) (local, peer netip.Addr) {
	l.t.Helper()
	out, err := l.Exec(l.Router, "ip", "-4", "-o", "addr", "show", "dev", iface)
	if err != nil {
		return
	}
	f := strings.Fields(out)
	for i := 0; i+1 < len(f); i++ {
		switch f[i] {
		case "inet":
			local, _ = netip.ParseAddr(f[i+1])
		case "peer":
			if p, err := netip.ParsePrefix(f[i+1]); err == nil {
				peer = p.Addr()
			}
		}
	}
	return
}

// SpoofedKinds says what the packets ISP B dropped as spoofed were, once
// StartPPPoE sorted them: "private N, pool N, ispa N, other N" (sources
// in 10.0.0.0/8, the LAN's not NATed; in the ISP's range, an earlier
// session's address; in ISP A's, NATed to wana; the rest).
func (l *Lab) SpoofedKinds() string {
	l.t.Helper()
	out := l.Must(l.B.NS, "iptables", "-w", "-t", "raw", "-nvxL", "spoofed")
	var kinds []string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 3 || f[2] != "DROP" {
			continue
		}
		kind := "other"
		for _, k := range []string{"private", "pool", "ispa"} {
			if strings.Contains(line, "lab-"+k) {
				kind = k
			}
		}
		kinds = append(kinds, kind+" "+f[0])
	}
	return strings.Join(kinds, ", ")
}
