package ra

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/mdlayher/ndp"
	"golang.org/x/net/ipv6"
)

// Timing of one interface's sender besides RFC 4861's intervals.
const (
	// listenFirst is how long a new socket listens (after soliciting) for
	// other routers before its first advertisement: RFC 4861's
	// MAX_RA_DELAY_TIME, within which a router answers a solicitation.
	// ifisp-watch opens the socket when a link's ifup begins, so the
	// link's first advertisement rarely waits for it.
	listenFirst = 500 * time.Millisecond
	// repeatAfter is when a change is announced again, in case the first
	// multicast was lost: twice, then the periodic schedule.
	repeatAfter = time.Second
	repeats     = 2
	// retryOpen is how often a socket that could not be opened (no such
	// interface, its link-local address not there yet) is tried again.
	retryOpen = time.Second
	// quietFor is how long another router's advertisement of one of the
	// interface's prefixes keeps the sender silent: it advertises at least
	// every MaxRtrAdvInterval, radvd's default of which is MaxInterval.
	quietFor = 2 * MaxInterval
)

var (
	allNodes   = netip.MustParseAddr("ff02::1")
	allRouters = netip.MustParseAddr("ff02::2")
)

// lanIface is the sender of one LAN interface: one goroutine owns its
// socket and its entries; set hands it the caller's latest list.
type lanIface struct {
	name    string
	log     *log.Logger
	updates chan []Prefix
}

func newLANIface(ctx context.Context, name string, logger *log.Logger) *lanIface {
	li := &lanIface{name: name, log: logger, updates: make(chan []Prefix, 1)}
	go li.run(ctx)
	return li
}

// set replaces any update the goroutine has not taken yet with p.
func (li *lanIface) set(p []Prefix) {
	for {
		select {
		case li.updates <- p:
			return
		default:
		}
		select {
		case <-li.updates:
		default:
		}
	}
}

// packet is one ICMPv6 message the socket read, or the error that ended it.
type packet struct {
	src netip.Addr
	b   []byte
	err error
}

// sock is an open socket on the interface and what it was opened with.
type sock struct {
	conn *ndp.Conn
	addr netip.Addr // the router's link-local address
	mac  net.HardwareAddr
}

// run is the interface's goroutine.
func (li *lanIface) run(ctx context.Context) {
	var (
		entries []entry
		s       *sock
		packets = make(chan packet, 16)
		next    = time.NewTimer(time.Hour) // the next advertisement
		retry   = time.NewTicker(retryOpen)
		repeat  int
		// The sender is silent until listenUntil (a new socket hears the
		// others first) and until conflictUntil (another router announces
		// one of its prefixes).
		listenUntil, conflictUntil time.Time
		failed                     string   // the last error logged, not to repeat it
		sent                       [][]byte // the last advertisements sent, to know our own echo
	)
	next.Stop()
	defer retry.Stop()
	defer func() {
		if s != nil {
			s.conn.Close()
		}
	}()
	report := func(err error) {
		if err.Error() != failed {
			failed = err.Error()
			li.log.Printf("router advertisements on %s: %v", li.name, err)
		}
	}
	schedule := func(d time.Duration) {
		next.Stop()
		next.Reset(d)
	}
	advertise := func(dst netip.Addr) {
		if now := time.Now(); s == nil || len(entries) == 0 || now.Before(listenUntil) || now.Before(conflictUntil) {
			return
		}
		m := message(entries, s.mac, time.Now())
		b, err := ndp.MarshalMessage(m)
		if err == nil {
			err = s.conn.WriteTo(m, nil, dst)
		}
		if err != nil {
			report(fmt.Errorf("sending to %s: %w", dst, err))
			return
		}
		failed = ""
		sent = append(sent, b)
		if len(sent) > 4 {
			sent = sent[1:]
		}
	}
	open := func() {
		var err error
		if s, err = listen(li.name); err != nil {
			report(err)
			return
		}
		failed = ""
		// A change that comes while it listens is announced when the
		// listening ends.
		listenUntil = time.Now().Add(listenFirst)
		go read(ctx, s.conn, packets)
		// Other routers answer a solicitation: hear them before speaking.
		s.conn.WriteTo(&ndp.RouterSolicitation{}, nil, allRouters)
		schedule(listenFirst)
	}
	open()
	for {
		select {
		case <-ctx.Done():
			return
		case <-retry.C:
			if s == nil {
				open()
			}
		case p := <-li.updates:
			var changed bool
			entries, changed = merge(entries, p, time.Now())
			if changed {
				advertise(allNodes)
				repeat = repeats
				schedule(repeatAfter)
			}
		case <-next.C:
			advertise(allNodes)
			entries, _ = merge(entries, current(entries), time.Now()) // gone ones run out
			if repeat > 0 {
				repeat--
				schedule(repeatAfter)
			} else {
				schedule(MinInterval + rand.N(MaxInterval-MinInterval))
			}
		case p := <-packets:
			if s == nil {
				continue
			}
			if p.err != nil {
				report(fmt.Errorf("reading: %w; opening the socket again", p.err))
				s.conn.Close()
				s = nil
				continue
			}
			m, err := ndp.ParseMessage(p.b)
			if err != nil {
				continue
			}
			switch m := m.(type) {
			case *ndp.RouterSolicitation:
				if p.src.WithZone("") == s.addr.WithZone("") {
					continue // our own, sent when the socket opened
				}
				// RFC 7772: answer a solicitation by unicast, so one
				// host's joining costs the others' batteries nothing.
				dst := p.src
				if !dst.IsLinkLocalUnicast() {
					dst = allNodes
				}
				advertise(dst)
			case *ndp.RouterAdvertisement:
				if p.src.WithZone("") == s.addr.WithZone("") && ours(sent, p.b) {
					continue // our own multicast, looped back
				}
				if other := clash(m, entries); other.IsValid() {
					if !time.Now().Before(conflictUntil) {
						li.log.Printf("router advertisements on %s: another router (%s) announces %s too: silent on %s while it does (turn its advertisements of ISP prefixes off, e.g. radvd or dnsmasq, or take isp-lan out of the stanza)",
							li.name, p.src.WithZone(""), other, li.name)
					}
					conflictUntil = time.Now().Add(quietFor)
				}
			}
		}
	}
}

// current returns the caller's list as it stands in entries: merging it
// again changes nothing but what time does to gone prefixes.
func current(entries []entry) []Prefix {
	var list []Prefix
	for _, e := range live(entries) {
		list = append(list, e.Prefix)
	}
	return list
}

// listen opens the interface's ICMPv6 socket on its link-local address,
// joined to all-routers, reading only solicitations and advertisements.
func listen(name string) (*sock, error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return nil, fmt.Errorf("no such interface (retrying every %s)", retryOpen)
	}
	conn, addr, err := ndp.Listen(ifi, ndp.LinkLocal)
	if err != nil {
		return nil, fmt.Errorf("opening an ICMPv6 socket: %w (has %s a link-local address? retrying every %s)", err, name, retryOpen)
	}
	var f ipv6.ICMPFilter
	f.SetAll(true)
	f.Accept(ipv6.ICMPTypeRouterSolicitation)
	f.Accept(ipv6.ICMPTypeRouterAdvertisement)
	if err := conn.SetICMPFilter(&f); err != nil {
		conn.Close()
		return nil, fmt.Errorf("filtering ICMPv6: %w", err)
	}
	if err := conn.JoinGroup(allRouters); err != nil {
		conn.Close()
		return nil, fmt.Errorf("joining %s: %w", allRouters, err)
	}
	return &sock{conn: conn, addr: addr, mac: ifi.HardwareAddr}, nil
}

// read passes what conn reads to out until it fails (Close makes it).
func read(ctx context.Context, conn *ndp.Conn, out chan<- packet) {
	buf := make([]byte, 65536)
	for {
		n, _, src, err := conn.ReadRaw(buf)
		p := packet{src: src, b: slices.Clone(buf[:n]), err: err}
		select {
		case out <- p:
		case <-ctx.Done():
			return
		}
		if err != nil {
			return
		}
	}
}

// ours reports whether b is one of the advertisements sent; the kernel
// fills in the checksum (bytes 2 and 3), so that is left out.
func ours(sent [][]byte, b []byte) bool {
	for _, s := range sent {
		if len(s) == len(b) && len(b) >= 4 && bytes.Equal(s[4:], b[4:]) {
			return true
		}
	}
	return false
}

// clash returns a prefix of entries that the advertisement m announces
// too, the zero Prefix when none.
func clash(m *ndp.RouterAdvertisement, entries []entry) netip.Prefix {
	for _, o := range m.Options {
		pi, ok := o.(*ndp.PrefixInformation)
		if !ok {
			continue
		}
		theirs := netip.PrefixFrom(pi.Prefix, int(pi.PrefixLength)).Masked()
		for _, e := range entries {
			if e.Prefix.Prefix.Overlaps(theirs) {
				return e.Prefix.Prefix
			}
		}
	}
	return netip.Prefix{}
}
