package lab

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv6"

	"github.com/mdlayher/ndp"
)

// The IPv6 LAN of the site: each ISP delegates a /56 out of its
// customer range, the router numbers lan0 with /64 number 0 of each
// (isp-lan), and the LAN host numbers itself by SLAAC from the router's
// advertisements.

// Delegated6 returns the /56 the ISP delegates to the site: 2001:db8:a:100::/56
// out of ISP A's 2001:db8:a::/48.
func (isp *ISP) Delegated6() netip.Prefix {
	gate := netip.MustParseAddr(isp.Gate6).As16()
	gate[6] = 1
	return netip.PrefixFrom(netip.AddrFrom16(gate), 56).Masked()
}

// LAN6 returns the /64 of the ISP's prefix on the lab's LAN.
func (isp *ISP) LAN6() netip.Prefix {
	return netip.PrefixFrom(isp.Delegated6().Addr(), 64)
}

// WithLAN6 adds, to every inet6 ifisp stanza of interfaces, the ISP's
// delegated prefix as isp-source, `isp-lan lan0`, and the extra lines.
func (l *Lab) WithLAN6(interfaces string, extra ...string) string {
	return afterTable(interfaces, func(inet6 bool, table string) []string {
		if !inet6 {
			return nil
		}
		isp := &l.A
		if table == l.B.Name {
			isp = &l.B
		}
		return append([]string{"isp-source " + isp.Delegated6().String(), "isp-lan lan0"}, extra...)
	})
}

// SLAACHost makes the LAN host an IPv6 host as a real one is: no static
// address or route of its own, router advertisements accepted (the
// kernel's default for a host), and each ISP routes the prefix it
// delegated to the router.
func (l *Lab) SLAACHost() {
	l.t.Helper()
	l.Must(l.LAN, "ip", "-6", "addr", "flush", "dev", "eth0", "scope", "global")
	l.Must(l.LAN, "ip", "-6", "route", "del", "default")
	if got := strings.TrimSpace(l.Must(l.LAN, "sysctl", "-n", "net.ipv6.conf.eth0.accept_ra", "net.ipv6.conf.eth0.forwarding")); got != "1\n0" {
		l.t.Fatalf("the LAN host's eth0 has accept_ra, forwarding = %q, want 1 and 0", got)
	}
	for _, isp := range l.ISPs() {
		l.ipBatch(isp.NS, "route add "+isp.Delegated6().String()+" via "+isp.Router6)
	}
}

// HostAddrs6 returns the LAN host's global IPv6 addresses now, with
// whether each is deprecated (preferred lifetime 0).
func (l *Lab) HostAddrs6() map[netip.Addr]bool {
	l.t.Helper()
	var addrs []struct {
		AddrInfo []struct {
			Local     string `json:"local"`
			Preferred uint64 `json:"preferred_life_time"`
		} `json:"addr_info"`
	}
	if err := json.Unmarshal([]byte(l.Must(l.LAN, "ip", "-j", "-6", "addr", "show", "dev", "eth0", "scope", "global")), &addrs); err != nil {
		l.t.Fatal(err)
	}
	m := map[netip.Addr]bool{}
	for _, a := range addrs {
		for _, ai := range a.AddrInfo {
			if ip, err := netip.ParseAddr(ai.Local); err == nil {
				m[ip] = ai.Preferred == 0
			}
		}
	}
	return m
}

// WhoamiPort is where the internet host tells a TCP client its address.
const WhoamiPort = 7006

// Whoami starts the internet host's TCP server that answers each
// connection with the client's address as it sees it, then closes it: the
// source a LAN host picked, after the ISPs and the router (SNAT). It
// listens on both of the host's addresses, Internet and Internet6.
func (l *Lab) Whoami() {
	l.t.Helper()
	l.server(l.Inet, "the whoami server", WhoamiPort, "whoami", fmt.Sprintf("[::]:%d", WhoamiPort))
}

func whoami(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		ip := c.RemoteAddr().(*net.TCPAddr).IP
		fmt.Fprintln(c, ip)
		c.Close()
	}
}

// Dial is one new TCP connection the LAN host tried.
type Dial struct {
	Start time.Time  `json:"start"`
	Done  time.Time  `json:"done,omitzero"` // when the answer came; zero if none
	Src   netip.Addr `json:"src,omitzero"`  // the source the internet host saw
}

// Dialer is a LAN host opening a new TCP connection to the whoami server
// every 20 ms, each given up after a second.
type Dialer struct {
	stop  func()
	mu    sync.Mutex
	dials []Dial
}

// StartDialer starts a Dialer from the LAN host to the whoami server's
// IPv6 address, for at most n connections.
func (l *Lab) StartDialer(n int) *Dialer { return l.StartDialerTo(Internet6, n) }

// StartDialerTo starts a Dialer from the LAN host to the whoami server at
// address host (Internet: IPv4, NATed by the router), for at most n
// connections.
func (l *Lab) StartDialerTo(host string, n int) *Dialer {
	l.t.Helper()
	d := &Dialer{}
	cmd, _ := l.helper(l.LAN, func(s string) {
		var dl Dial
		if json.Unmarshal([]byte(s), &dl) == nil {
			d.mu.Lock()
			d.dials = append(d.dials, dl)
			d.mu.Unlock()
		}
	}, "dial", net.JoinHostPort(host, strconv.Itoa(WhoamiPort)), fmt.Sprint(n))
	d.stop = func() { stop(cmd) }
	return d
}

// Stop ends the dialer.
func (d *Dialer) Stop() { d.stop() }

// FirstFrom returns the first answered connection started at or after
// from whose source is in p.
func (d *Dialer) FirstFrom(from time.Time, p netip.Prefix) (Dial, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var first Dial
	for _, dl := range d.dials {
		if !dl.Done.IsZero() && !dl.Start.Before(from) && p.Contains(dl.Src) && (first.Done.IsZero() || dl.Done.Before(first.Done)) {
			first = dl
		}
	}
	return first, !first.Done.IsZero()
}

// Answered returns the connections started in [from, to) that were
// answered.
func (d *Dialer) Answered(from, to time.Time) []Dial {
	d.mu.Lock()
	defer d.mu.Unlock()
	var list []Dial
	for _, dl := range d.dials {
		if !dl.Done.IsZero() && !dl.Start.Before(from) && dl.Start.Before(to) {
			list = append(list, dl)
		}
	}
	return list
}

// dial opens a new connection to addr every 20 ms, n in all, and prints a
// Dial for each as it ends (answered or given up after a second).
func dial(addr string, n int) error {
	enc := json.NewEncoder(os.Stdout)
	var mu sync.Mutex
	var wg sync.WaitGroup
	tick := time.NewTicker(flowEvery)
	defer tick.Stop()
	for i := range n {
		if i > 0 {
			<-tick.C
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := Dial{Start: time.Now()}
			if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
				c.SetDeadline(d.Start.Add(time.Second))
				var s string
				if _, err := fmt.Fscanln(c, &s); err == nil {
					d.Src, _ = netip.ParseAddr(s)
					d.Done = time.Now()
				}
				c.Close()
			}
			mu.Lock()
			defer mu.Unlock()
			if enc.Encode(d) != nil {
				os.Exit(1) // the test is gone
			}
		}()
	}
	wg.Wait()
	return nil
}

// RA is one router advertisement the LAN host received, as parsed from
// the packet.
type RA struct {
	At             time.Time                `json:"at"`
	Src            netip.Addr               `json:"src"`
	Dst            netip.Addr               `json:"dst"` // ff02::1, or the host's own address: an answer to its solicitation
	RouterLifetime time.Duration            `json:"router_lifetime"`
	Prefixes       []RAPrefix               `json:"prefixes"`
	RDNSS          []ndp.RecursiveDNSServer `json:"rdnss"`
}

// RAPrefix is one Prefix Information option.
type RAPrefix struct {
	Prefix    netip.Prefix  `json:"prefix"`
	Valid     time.Duration `json:"valid"`
	Preferred time.Duration `json:"preferred"`
}

// Prefix returns the advertisement's option for p.
func (r RA) Prefix(p netip.Prefix) (RAPrefix, bool) {
	for _, o := range r.Prefixes {
		if o.Prefix == p {
			return o, true
		}
	}
	return RAPrefix{}, false
}

// RACapture is what the LAN host hears of router advertisements.
type RACapture struct {
	mu  sync.Mutex
	ras []RA
}

// CaptureRAs starts listening, in the LAN host, to every router
// advertisement that reaches it (multicast or unicast) until the lab ends.
func (l *Lab) CaptureRAs() *RACapture {
	l.t.Helper()
	c := &RACapture{}
	ready := make(chan struct{})
	var once sync.Once
	l.helper(l.LAN, func(s string) {
		if s == "listening" {
			once.Do(func() { close(ready) })
			return
		}
		var r RA
		if json.Unmarshal([]byte(s), &r) == nil {
			c.mu.Lock()
			c.ras = append(c.ras, r)
			c.mu.Unlock()
		}
	}, "ra-capture")
	select {
	case <-ready:
	case <-time.After(10 * time.Second):
		l.t.Fatal("the LAN host's RA capture did not start")
	}
	return c
}

// CaptureRAsIn is CaptureRAs for a host in namespace ns that no lab
// built: the VM tier's systemd guest, where the router is the guest
// itself and the LAN host a namespace beside it. The test binary must
// call HelperMain first thing, as the lab's tests do; the capture ends
// with t.
func CaptureRAsIn(t T, ns string) *RACapture {
	t.Helper()
	return (&Lab{t: t, LAN: ns}).CaptureRAs()
}

// Since returns the advertisements received at or after t.
func (c *RACapture) Since(t time.Time) []RA {
	c.mu.Lock()
	defer c.mu.Unlock()
	var list []RA
	for _, r := range c.ras {
		if !r.At.Before(t) {
			list = append(list, r)
		}
	}
	return list
}

// WaitFor returns the first advertisement received at or after t that ok
// accepts, waiting up to timeout for it.
func (c *RACapture) WaitFor(t time.Time, timeout time.Duration, ok func(RA) bool) (RA, bool) {
	for deadline := time.Now().Add(timeout); ; time.Sleep(10 * time.Millisecond) {
		for _, r := range c.Since(t) {
			if ok(r) {
				return r, true
			}
		}
		if time.Now().After(deadline) {
			return RA{}, false
		}
	}
}

// AnnounceFromHost makes the LAN host send one router advertisement of p,
// as a second router on the LAN (radvd, dnsmasq) would; its router
// lifetime is 0, so the host itself takes no default route from it.
func (l *Lab) AnnounceFromHost(p netip.Prefix) {
	l.t.Helper()
	l.helper(l.LAN, nil, "ra-send", "eth0", p.String())
}

// raSend sends one router advertisement of prefix on iface, with router
// lifetime 0.
func raSend(iface, prefix string) error {
	p, err := netip.ParsePrefix(prefix)
	if err != nil {
		return err
	}
	_, err = sendRA(iface, func(*net.Interface) *ndp.RouterAdvertisement {
		return &ndp.RouterAdvertisement{CurrentHopLimit: 64, Options: []ndp.Option{&ndp.PrefixInformation{
			PrefixLength: uint8(p.Bits()), OnLink: true, AutonomousAddressConfiguration: true,
			ValidLifetime: time.Hour, PreferredLifetime: time.Hour, Prefix: p.Addr()}}}
	})
	return err
}

// sendRA sends the router advertisement ra makes for iface to ff02::1 on
// iface, and returns when it handed it to the kernel.
func sendRA(iface string, ra func(*net.Interface) *ndp.RouterAdvertisement) (time.Time, error) {
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return time.Time{}, err
	}
	c, _, err := ndp.Listen(ifi, ndp.LinkLocal)
	if err != nil {
		return time.Time{}, err
	}
	defer c.Close()
	at := time.Now()
	return at, c.WriteTo(ra(ifi), nil, netip.MustParseAddr("ff02::1"))
}

// raCapture prints every router advertisement this namespace receives,
// as JSON, after a line "listening".
func raCapture() error {
	pc, err := icmp.ListenPacket("ip6:ipv6-icmp", "::")
	if err != nil {
		return err
	}
	var f ipv6.ICMPFilter
	f.SetAll(true)
	f.Accept(ipv6.ICMPTypeRouterAdvertisement)
	c := pc.IPv6PacketConn()
	if err := c.SetICMPFilter(&f); err != nil {
		return err
	}
	if err := c.SetControlMessage(ipv6.FlagDst, true); err != nil {
		return err
	}
	fmt.Println("listening")
	enc := json.NewEncoder(os.Stdout)
	buf := make([]byte, 65536)
	for {
		n, cm, src, err := c.ReadFrom(buf)
		if err != nil {
			return err
		}
		m, err := ndp.ParseMessage(buf[:n])
		ra, ok := m.(*ndp.RouterAdvertisement)
		if err != nil || !ok {
			continue
		}
		r := RA{At: time.Now(), RouterLifetime: ra.RouterLifetime}
		r.Src, _ = netip.AddrFromSlice(src.(*net.IPAddr).IP)
		if cm != nil {
			r.Dst, _ = netip.AddrFromSlice(cm.Dst)
		}
		for _, o := range ra.Options {
			switch o := o.(type) {
			case *ndp.PrefixInformation:
				r.Prefixes = append(r.Prefixes, RAPrefix{Prefix: netip.PrefixFrom(o.Prefix, int(o.PrefixLength)), Valid: o.ValidLifetime, Preferred: o.PreferredLifetime})
			case *ndp.RecursiveDNSServer:
				r.RDNSS = append(r.RDNSS, *o)
			}
		}
		if enc.Encode(r) != nil {
			return nil // the test is gone
		}
	}
}
