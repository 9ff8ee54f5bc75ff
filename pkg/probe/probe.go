// Package probe sends ICMP echo requests (IPv4 and IPv6) from one local
// address and reports the answers. Bound to a link's own address, the probes
// follow that address's `from` rule into the ISP's table and leave by the
// link even while its main-table default is withdrawn: a dead link can be
// watched healing.
//
// It uses raw ICMP sockets (CAP_NET_RAW): ping sockets would need
// net.ipv4.ping_group_range opened up in every namespace.
package probe

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// IANA protocol numbers, for icmp.ParseMessage.
const (
	protoICMP   = 1
	protoICMPv6 = 58
)

// Pinger sends echo requests from one address and reads their answers.
// Send and Receive may run in different goroutines.
type Pinger struct {
	conn *icmp.PacketConn
	v6   bool
	id   int
	zone string // the interface, for link-local targets
}

// Listen opens a Pinger sending from src. iface is the link's interface,
// the zone of link-local targets (an IPv6 gateway is often fe80::1).
func Listen(src netip.Addr, iface string) (*Pinger, error) {
	network := "ip4:icmp"
	if src.Is6() {
		network = "ip6:ipv6-icmp"
	}
	conn, err := icmp.ListenPacket(network, src.String())
	if err != nil {
		return nil, fmt.Errorf("opening an ICMP socket on %s: %w", src, err)
	}
	p := &Pinger{conn: conn, v6: src.Is6(), zone: iface, id: randomID()}
	if p.v6 {
		// Only echo replies wake the reader: the socket would otherwise get
		// every neighbour discovery packet of the address.
		var f ipv6.ICMPFilter
		f.SetAll(true)
		f.Accept(ipv6.ICMPTypeEchoReply)
		if err := conn.IPv6PacketConn().SetICMPFilter(&f); err != nil {
			conn.Close()
			return nil, fmt.Errorf("filtering the ICMPv6 socket on %s: %w", src, err)
		}
	}
	return p, nil
}

// Send sends one echo request with sequence number seq to dst.
func (p *Pinger) Send(dst netip.Addr, seq uint16) error {
	var typ icmp.Type = ipv4.ICMPTypeEcho
	if p.v6 {
		typ = ipv6.ICMPTypeEchoRequest
	}
	b, err := (&icmp.Message{Type: typ, Body: &icmp.Echo{ID: p.id, Seq: int(seq), Data: []byte("ifisp-watch")}}).Marshal(nil)
	if err != nil {
		return err
	}
	to := &net.IPAddr{IP: dst.AsSlice()}
	if dst.Is6() && dst.IsLinkLocalUnicast() {
		to.Zone = p.zone
	}
	_, err = p.conn.WriteTo(b, to)
	return err
}

// Receive reads answers until the Pinger is closed, calling answer with the
// sequence number of each echo reply to one of p's requests.
func (p *Pinger) Receive(answer func(seq uint16)) error {
	proto := protoICMP
	if p.v6 {
		proto = protoICMPv6
	}
	buf := make([]byte, 1500)
	for {
		n, _, err := p.conn.ReadFrom(buf)
		if errors.Is(err, net.ErrClosed) {
			return nil
		}
		if err != nil {
			return err
		}
		m, err := icmp.ParseMessage(proto, buf[:n])
		if err != nil || (m.Type != ipv4.ICMPTypeEchoReply && m.Type != ipv6.ICMPTypeEchoReply) {
			continue
		}
		if e, ok := m.Body.(*icmp.Echo); ok && e.ID == p.id {
			answer(uint16(e.Seq))
		}
	}
}

// Close stops Receive.
func (p *Pinger) Close() error { return p.conn.Close() }

// randomID picks the echo identifier: raw sockets see every echo reply to
// the address, so each Pinger tells its own by a random one.
func randomID() int {
	var b [2]byte
	rand.Read(b[:])
	return int(binary.BigEndian.Uint16(b[:]))
}
