package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mdlayher/ndp"

	"github.com/ifisp/ifisp/pkg/registry"
)

// DHCPv6 prefix delegation in the lab: ISP B runs isc-dhcp-server's
// `dhcpd -6` on its edge (StartDHCPv6), which gives the router's WAN an
// address (IA_NA, from range6) and delegates it a /56 (IA_PD, from a
// prefix6 pool); the router's default comes by router advertisement, which
// the test sends when it wants (AdvertiseDefault), as an ISP's router
// would, perhaps minutes after the DHCPv6 exchange.

// PDTwoISPs is TwoISPs with ISP B's IPv6 from DHCPv6: `iface wanb inet6
// dhcp` asks for a prefix (request_prefix 1, dhclient -6 -P -N under
// ifupdown 0.8), takes its default from ISP B's router advertisements
// (accept_ra 2: the router forwards), and numbers lan0 from the delegated
// prefix (isp-lan lan0). wana, and wanb's IPv4, are TwoISPs' own; lan0
// has only ISP B's prefix.
var PDTwoISPs = Replace(TwoISPs, "wanb", "inet6", `iface wanb inet6 dhcp
	request_prefix 1
	accept_ra 2
	isp-table ispb
	isp-lan lan0
`)

// The DHCPv6 server's lifetimes and timers, short so that dhclient renews
// every few seconds: it sends a Renew T1 after each Reply (to the server
// that sent it), and a Rebind to any server once T2 has passed without a
// Reply (see Restart). dhcpd's own
// lease reuse (cache-threshold, 25% of the valid lifetime) answers a renewal
// within 15 s of the last with the lifetimes left, so new_max_life counts
// down 60, 57, 54, ... between fresh leases.
const (
	DHCP6Valid     = 60 * time.Second // default-lease-time: the valid lifetime of the address and the prefix
	DHCP6Preferred = 30 * time.Second // preferred-lifetime
	DHCP6Renew     = 3 * time.Second  // option dhcp-renewal-time (T1)
	DHCP6Rebind    = 6 * time.Second  // option dhcp-rebinding-time (T2)
	// DelegatedBits is the length of the prefixes the server delegates.
	DelegatedBits = 56
)

// ISP B's prefix delegation pools: /56s out of a /40 each, outside its
// customer range (2001:db8:b::/48, Net6), so that the spoof filter passes
// them only because StartDHCPv6 and Restart say so.
var (
	PDPoolB1 = netip.MustParsePrefix("2001:db8:b100::/40")
	PDPoolB2 = netip.MustParsePrefix("2001:db8:b200::/40")
)

// DHCP6Server is isc-dhcp-server's dhcpd in DHCPv6 mode on one ISP's edge
// (its "cpe" interface), in the foreground, logging to standard error
// (kept, with the time of each line: Log, Replies); its configuration,
// lease file and pid file are in a folder of its own. It runs until Stop
// or the lab's removal.
type DHCP6Server struct {
	l   *Lab
	ISP *ISP

	dir  string
	log  *lineLog
	d    *daemon // the dhcpd that runs or ran last
	pool netip.Prefix
}

// StartDHCPv6 starts dhcpd -6 as isp's DHCPv6 server on its edge facing
// the router: one subnet6, the ISP's link (its Gate6's /64), addresses
// from its ::100 to ::1ff, and /56s (DelegatedBits) from pool, with the
// lifetimes and timers above; it waits until the server runs. The ISP
// routes pool to the router's WAN (its link-local address) and passes it
// through its spoof filter; the internet host routes it back through the
// ISP (RouteDelegations).
//
// At ifup, dhclient -6 -P -N runs dhclient-script once per binding of the
// server's Reply, the address first (isc-dhcp-client 4.4.3, measured):
//
//	PREINIT6
//	BOUND6 new_ip6_address=ADDRESS new_max_life=60 new_preferred_life=30
//	BOUND6 new_ip6_prefix=PREFIX new_max_life=60 new_preferred_life=30
//
// and the same pair as RENEW6 (with old_ip6_address, old_ip6_prefix, and
// the lifetimes left) every T1.
func (l *Lab) StartDHCPv6(isp *ISP, pool netip.Prefix) *DHCP6Server {
	l.t.Helper()
	dir, err := os.MkdirTemp("", "ifisp-dhcp6-")
	if err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(func() { os.RemoveAll(dir) })
	s := &DHCP6Server{l: l, ISP: isp, dir: dir, log: &lineLog{}}
	s.setPool(pool)
	s.freshLeases()
	s.start()
	return s
}

func (s *DHCP6Server) path(name string) string { return filepath.Join(s.dir, name) }

// setPool makes pool the one the next start delegates from, and lets it
// through the ISP.
func (s *DHCP6Server) setPool(pool netip.Prefix) {
	s.l.t.Helper()
	if !pool.Addr().Is6() || pool.Bits() > DelegatedBits || pool.Masked() != pool {
		s.l.t.Fatalf("DHCPv6 pool %s: not an IPv6 prefix of /%d or shorter", pool, DelegatedBits)
	}
	s.l.RouteDelegations(s.ISP, pool)
	s.pool = pool
	subnet := netip.PrefixFrom(netip.MustParseAddr(s.ISP.Gate6), 64).Masked()
	first, last := subnet.Addr().As16(), subnet.Addr().As16()
	first[14], first[15] = 1, 0x00
	last[14], last[15] = 1, 0xff
	s.l.WriteFile(s.path("dhcpd6.conf"), fmt.Sprintf(`# The lab's: %s's DHCPv6 server.
default-lease-time %d;
preferred-lifetime %d;
max-lease-time %d;
option dhcp-renewal-time %d;
option dhcp-rebinding-time %d;
subnet6 %s {
	range6 %s %s;
	prefix6 %s %s /%d;
}
`, s.ISP.Name, int(DHCP6Valid.Seconds()), int(DHCP6Preferred.Seconds()), int(DHCP6Valid.Seconds()),
		int(DHCP6Renew.Seconds()), int(DHCP6Rebind.Seconds()),
		subnet, netip.AddrFrom16(first), netip.AddrFrom16(last),
		pool.Addr(), lastPrefix(pool, DelegatedBits).Addr(), DelegatedBits))
}

// lastPrefix is the last /bits of p.
func lastPrefix(p netip.Prefix, bits int) netip.Prefix {
	a := p.Addr().As16()
	for i := p.Bits(); i < bits; i++ {
		a[i/8] |= 0x80 >> (i % 8)
	}
	return netip.PrefixFrom(netip.AddrFrom16(a), bits)
}

// freshLeases empties the server's lease file (dhcpd wants one to exist):
// its next start knows no binding, and makes itself a new server DUID.
func (s *DHCP6Server) freshLeases() {
	s.l.t.Helper()
	s.l.WriteFile(s.path("leases"), "")
}

// dhcpdReady is dhcpd's line once it serves.
const dhcpdReady = "Server starting service."

// start starts dhcpd and waits until it says it serves.
func (s *DHCP6Server) start() {
	s.l.t.Helper()
	// dhcpd refuses to start while its pid file names a process that
	// runs, whichever it is.
	os.Remove(s.path("pid"))
	started := len(s.log.Lines())
	s.d = s.l.startDaemon("dhcpd -6 at "+s.ISP.Name, s.ISP.NS, []string{"/usr/sbin/dhcpd", "-6", "-f", "-d",
		"-cf", s.path("dhcpd6.conf"), "-lf", s.path("leases"), "-pf", s.path("pid"), "cpe"}, s.log, "serving", 5*time.Second, func() bool {
		return slices.ContainsFunc(s.log.Lines()[started:], func(line LogLine) bool { return line.Text == dhcpdReady })
	}, s.Log)
}

// Stop stops dhcpd (SIGTERM: it sends nothing more) and waits until it is
// gone.
func (s *DHCP6Server) Stop() {
	s.l.t.Helper()
	s.d.stop(syscall.SIGTERM)
}

// Restart stops the server and starts it again with an empty lease file
// and another pool: a server that lost its bindings and its identity (a
// new server DUID) and delegates from elsewhere. As measured in the lab
// (isc-dhcp-server and isc-dhcp-client 4.4.3): the router's next Renew,
// sent to the old server's DUID, is discarded ("not our server
// identifier"), and dhclient sends its Rebind only when that Renew's
// retransmission timer runs out (about 10 s, REN_TIMEOUT: it is not cut
// short at T2), 10 to 13 s after the restart. The new server's Reply
// holds the router's address, the old prefix with lifetimes 0 and a new
// prefix, and dhclient runs dhclient-script once for each, then two more
// times for the old prefix:
//
//	REBIND6 new_ip6_address=ADDRESS new_max_life=60 old_ip6_address=ADDRESS
//	REBIND6 new_ip6_prefix=OLD new_max_life=0 new_preferred_life=0 old_ip6_prefix=OLD
//	REBIND6 new_ip6_prefix=NEW new_max_life=60 new_preferred_life=30
//	DEPREF6 cur_ip6_prefix=OLD
//	EXPIRE6 old_ip6_prefix=OLD
func (s *DHCP6Server) Restart(pool netip.Prefix) {
	s.l.t.Helper()
	s.Stop()
	s.setPool(pool)
	s.freshLeases()
	s.start()
}

// Pool returns the pool the server delegates from now.
func (s *DHCP6Server) Pool() netip.Prefix { return s.pool }

// Log returns what dhcpd logged, every run of it, each line after the
// time the lab read it.
func (s *DHCP6Server) Log() string { return s.log.String() }

// iaprefix matches a delegated prefix's binding in dhcpd's lease file.
var iaprefix = regexp.MustCompile(`(?m)^\s*iaprefix (\S+) \{\s*binding state (\w+);`)

// Delegated returns the prefix the server's lease file last records as
// delegated (binding state active); ok is false when there is none.
func (s *DHCP6Server) Delegated() (netip.Prefix, bool) {
	b, _ := os.ReadFile(s.path("leases"))
	var last netip.Prefix
	for _, m := range iaprefix.FindAllStringSubmatch(string(b), -1) {
		if p, err := netip.ParsePrefix(m[1]); err == nil && m[2] == "active" {
			last = p
		}
	}
	return last, last.IsValid()
}

// DHCP6Reply is one prefix the server's log says it sent in a Reply.
type DHCP6Reply struct {
	At     time.Time // when the lab read dhcpd's log line
	Prefix netip.Prefix
}

// replyPD matches dhcpd's line for a prefix in a Reply: "Reply PD:
// address 2001:db8:b1ff::/56 to client with duid ...".
var replyPD = regexp.MustCompile(`^Reply PD: address (\S+) to client`)

// Replies returns the prefixes the server sent in its Replies so far,
// oldest first.
func (s *DHCP6Server) Replies() []DHCP6Reply {
	var replies []DHCP6Reply
	for _, line := range s.log.Lines() {
		if m := replyPD.FindStringSubmatch(line.Text); m != nil {
			if p, err := netip.ParsePrefix(m[1]); err == nil {
				replies = append(replies, DHCP6Reply{At: line.At, Prefix: p})
			}
		}
	}
	return replies
}

// RouteDelegations makes isp carry the prefixes of pool, as an ISP does
// for the prefixes it delegates: its edge routes pool to the router (via
// the router's WAN's link-local address, EUI-64 from its MAC, which the
// kernel gives the WAN when ifup brings it up), its spoof filter passes
// packets from pool (a RETURN before the jump to "spoofed", which Seen
// counts neither as legit nor as spoofed; CountFrom6 counts a prefix's
// packets apart), and the internet host routes pool back through the ISP.
// lab.go's spoofFilter is left as it is: it knows only the ISP's customer
// range, Net6, and a delegation pool is not in it. Once per pool.
func (l *Lab) RouteDelegations(isp *ISP, pool netip.Prefix) {
	l.t.Helper()
	if !l.returnBeforeSpoofed(isp.NS, "ip6tables", "-i", "cpe", "-s", pool.String(), "-m", "comment", "--comment", "lab-delegated-"+pool.String(), "-j", "RETURN") {
		return // the pool's routes are there too
	}
	ll := l.wanLinkLocal(isp)
	l.ipBatch(isp.NS, "route add "+pool.String()+" via "+ll.String()+" dev cpe")
	l.ipBatch(l.Inet, "route add "+pool.String()+" via "+isp.core6+" src "+Internet6)
}

// wanLinkLocal returns the link-local address the kernel gives the
// router's WAN toward isp when it comes up: EUI-64 from its MAC
// (addr_gen_mode 0, which the test fails without).
func (l *Lab) wanLinkLocal(isp *ISP) netip.Addr {
	l.t.Helper()
	mode := strings.TrimSpace(l.Must(l.Router, "sysctl", "-n", "net.ipv6.conf."+isp.Iface+".addr_gen_mode"))
	if mode != "0" {
		l.t.Fatalf("the router's %s has addr_gen_mode %s: its link-local address is not EUI-64", isp.Iface, mode)
	}
	mac, err := net.ParseMAC(l.wanMAC(isp))
	if err != nil || len(mac) != 6 {
		l.t.Fatalf("the MAC of the router's %s: %v", isp.Iface, err)
	}
	return netip.AddrFrom16([16]byte{0: 0xfe, 1: 0x80, 8: mac[0] ^ 2, 9: mac[1], 10: mac[2], 11: 0xff, 12: 0xfe, 13: mac[3], 14: mac[4], 15: mac[5]})
}

// dhclient6Files are the files ifupdown 0.8's inet6 dhcp method gives
// dhclient for iface: `dhclient -6 -v -pf /run/dhclient6.IFACE.pid -lf
// /var/lib/dhcp/dhclient6.IFACE.leases -I -P -N -df
// /var/lib/dhcp/dhclient.IFACE.leases IFACE` with request_prefix 1. They
// are the host's, as dhclientFiles' are; the lease file is also the DUID
// file (-df) of the IPv4 dhclient of the same interface.
func dhclient6Files(iface string) (pid, leases string) {
	return "/run/dhclient6." + iface + ".pid", "/var/lib/dhcp/dhclient6." + iface + ".leases"
}

// InstallDHCP6Hook is InstallDHCPHook for `inet6 dhcp` stanzas too: the
// pid and lease files of dhclient -6 (dhclient6Files) are readied and
// removed at the end as dhclient's are, a stale lease file being the
// lab's when every address and prefix in it is documentation space,
// 2001:db8::/32, so that dhclient -6 starts with no binding.
func (l *Lab) InstallDHCP6Hook(binDir string) {
	l.t.Helper()
	l.installDHCPHook(binDir, true)
}

// leaseAddr6 matches an address or a prefix in a dhclient -6 lease file.
var leaseAddr6 = regexp.MustCompile(`(?m)^\s*(iaaddr|iaprefix) (\S+) \{`)

// labLeases6 reports whether a dhclient -6 lease file holds only
// addresses and prefixes of documentation space, the lab's (or none).
func labLeases6(b []byte) bool {
	doc := netip.MustParsePrefix("2001:db8::/32")
	for _, m := range leaseAddr6.FindAllStringSubmatch(string(b), -1) {
		p, err := netip.ParsePrefix(m[2])
		if err != nil {
			a, aerr := netip.ParseAddr(m[2])
			if aerr != nil {
				return false
			}
			p = netip.PrefixFrom(a, 128)
		}
		if !doc.Contains(p.Addr()) {
			return false
		}
	}
	return true
}

// AdvertiseDefault makes isp's edge send the router one router
// advertisement with router lifetime lifetime (and the M flag, no prefix
// information: the router takes its addresses and prefix by DHCPv6), as
// the ISP's router does: with accept_ra 2 the router's WAN gets a default
// route via the ISP's link-local address. It returns when the
// advertisement was sent: the moment before the helper handed it to the
// kernel.
func (l *Lab) AdvertiseDefault(isp *ISP, lifetime time.Duration) time.Time {
	l.t.Helper()
	return l.advertise(isp, lifetime)
}

// AdvertiseSLAAC is AdvertiseDefault with prefix information for the WAN's
// own SLAAC addresses: each of prefixes (a /64 the router numbers itself
// from) with the valid and preferred lifetimes given.
func (l *Lab) AdvertiseSLAAC(isp *ISP, lifetime time.Duration, prefixes ...PIO) time.Time {
	l.t.Helper()
	return l.advertise(isp, lifetime, prefixes...)
}

// PIO is one prefix information option of AdvertiseSLAAC.
type PIO struct {
	Prefix           netip.Prefix
	Valid, Preferred time.Duration
}

func (l *Lab) advertise(isp *ISP, lifetime time.Duration, prefixes ...PIO) time.Time {
	l.t.Helper()
	args := []string{"ra-router", "cpe", strconv.Itoa(int(lifetime.Seconds()))}
	for _, p := range prefixes {
		args = append(args, fmt.Sprintf("%s,%d,%d", p.Prefix, int(p.Valid.Seconds()), int(p.Preferred.Seconds())))
	}
	var sent time.Time
	cmd, done := l.helper(isp.NS, func(s string) { json.Unmarshal([]byte(s), &sent) }, args...)
	<-done
	if err := cmd.Wait(); err != nil || sent.IsZero() {
		l.t.Fatalf("the router advertisement from %s: %v", isp.Name, err)
	}
	return sent
}

// raRouter sends one router advertisement on iface with the router
// lifetime seconds (and the M flag, the source link-layer address, and a
// prefix information option for each of prefixes, "PREFIX,VALID,PREFERRED"
// in seconds) to ff02::1, and prints when it handed it to the kernel, as
// JSON.
func raRouter(iface, seconds string, prefixes []string) error {
	s, err := strconv.Atoi(seconds)
	if err != nil || s < 0 || s > 9000 {
		return fmt.Errorf("router lifetime %q: not 0 to 9000 seconds", seconds)
	}
	var pios []ndp.Option
	for _, arg := range prefixes {
		f := strings.Split(arg, ",")
		if len(f) != 3 {
			return fmt.Errorf("prefix %q: not PREFIX,VALID,PREFERRED", arg)
		}
		p, err := netip.ParsePrefix(f[0])
		valid, verr := strconv.Atoi(f[1])
		preferred, perr := strconv.Atoi(f[2])
		if err := errors.Join(err, verr, perr); err != nil {
			return fmt.Errorf("prefix %q: %w", arg, err)
		}
		pios = append(pios, &ndp.PrefixInformation{
			PrefixLength: uint8(p.Bits()), OnLink: true, AutonomousAddressConfiguration: true,
			ValidLifetime: time.Duration(valid) * time.Second, PreferredLifetime: time.Duration(preferred) * time.Second, Prefix: p.Addr(),
		})
	}
	at, err := sendRA(iface, func(ifi *net.Interface) *ndp.RouterAdvertisement {
		return &ndp.RouterAdvertisement{
			CurrentHopLimit: 64, ManagedConfiguration: true, RouterLifetime: time.Duration(s) * time.Second,
			Options: append([]ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: ifi.HardwareAddr}}, pios...),
		}
	})
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(at)
}

// CountFrom6 starts counting, at isp's edge, the IPv6 packets from the
// router whose source is in p, whatever the spoof filter then makes of
// them: CountFrom for IPv6, for a delegated prefix that went away. It
// returns the count so far.
func (l *Lab) CountFrom6(isp *ISP, p netip.Prefix) func() int {
	l.t.Helper()
	return l.countFrom(isp, "ip6tables", p.String())
}

// LinkRecord reads the router's registry record of iface and family ("inet",
// "inet6"): nil when there is none. Its text is returned too, for
// messages.
func (l *Lab) LinkRecord(iface, family string) (*registry.Link, string) {
	l.t.Helper()
	b, err := os.ReadFile(filepath.Join(l.RunDir, registry.Folder, iface+"."+family+".json"))
	if os.IsNotExist(err) {
		return nil, ""
	}
	if err != nil {
		l.t.Fatal(err)
	}
	var r registry.Link
	if err := json.Unmarshal(b, &r); err != nil {
		l.t.Fatalf("%s.%s.json: %v\n%s", iface, family, err, b)
	}
	return &r, string(b)
}
