package reconcile

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"github.com/ti-mo/netfilter"
	"golang.org/x/sys/unix"

	"github.com/ifisp/ifisp/pkg/policy"
)

const (
	wana = 3 // interface indexes
	wanb = 4
	lan0 = 2
)

var (
	a      = netip.MustParseAddr
	wans   = policy.WANs{wana: {netip.MustParsePrefix("198.51.100.2/32")}, wanb: {netip.MustParsePrefix("203.0.113.2/32"), netip.MustParsePrefix("203.0.113.64/29")}}
	inside = a("10.1.0.10")
	remote = a("192.0.2.100")
)

// flow builds a conntrack entry from src to dst whose replies come back to
// replyDst (the SNAT address when it differs from src).
func flow(src, dst, replyDst netip.Addr) conntrack.Flow {
	f := conntrack.Flow{}
	f.TupleOrig.IP.SourceAddress, f.TupleOrig.IP.DestinationAddress = src, dst
	f.TupleReply.IP.SourceAddress, f.TupleReply.IP.DestinationAddress = dst, replyDst
	if replyDst != src {
		f.Status |= conntrack.StatusSrcNAT
	}
	return f
}

func TestStale(t *testing.T) {
	via := func(oif int) func(_, _ netip.Addr) route {
		return func(_, _ netip.Addr) route { return route{oif: oif, ok: true} }
	}
	for _, tc := range []struct {
		name   string
		f      conntrack.Flow
		lookup func(_, _ netip.Addr) route
		want   bool
	}{
		{"NATed to the link routing picks", flow(inside, remote, a("203.0.113.2")), via(wanb), false},
		{"NATed to the other link", flow(inside, remote, a("198.51.100.2")), via(wanb), true},
		{"NATed to a link that went away", flow(inside, remote, a("203.0.113.2")), via(wana), true},
		{"inside source without NAT out a WAN", flow(inside, remote, inside), via(wanb), true},
		{"public LAN host of the WAN's isp-source", flow(a("203.0.113.65"), remote, a("203.0.113.65")), via(wanb), false},
		{"public LAN host of the other WAN", flow(a("203.0.113.65"), remote, a("203.0.113.65")), via(wana), true},
		{"router's own flow from its WAN address", flow(a("198.51.100.2"), remote, a("198.51.100.2")), via(wana), false},
		{"inbound to the router", flow(remote, a("203.0.113.2"), remote), func(_, _ netip.Addr) route { return route{oif: 1, local: true, ok: true} }, false},
		{"routed to the LAN", flow(remote, inside, remote), via(lan0), false},
		{"no route", flow(inside, remote, inside), func(_, _ netip.Addr) route { return route{} }, false},
	} {
		if got := stale(tc.f, wans, tc.lookup); got != tc.want {
			t.Errorf("%s: stale = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// fakeDumper is a conntrack table whose dump fails as the kernel's can.
type fakeDumper struct {
	flows     []conntrack.Flow
	failDumps []error
}

func (f *fakeDumper) DumpFilter(conntrack.Filter, *conntrack.DumpOptions) ([]conntrack.Flow, error) {
	if len(f.failDumps) > 0 {
		err := f.failDumps[0]
		f.failDumps = f.failDumps[1:]
		return nil, err
	}
	return f.flows, nil
}

func TestDumpRetries(t *testing.T) {
	ct := &fakeDumper{flows: []conntrack.Flow{{ID: 7}}, failDumps: []error{unix.EINTR, unix.ENOBUFS}}
	got, err := dump(ct)
	if err != nil || len(got) != 1 {
		t.Errorf("dump after two interrupted tries: %v, %v", got, err)
	}
	ct = &fakeDumper{failDumps: []error{unix.EPERM}}
	if _, err := dump(ct); !errors.Is(err, unix.EPERM) {
		t.Errorf("dump with EPERM: got %v, want it reported", err)
	}
	ct = &fakeDumper{failDumps: []error{unix.EINTR, unix.EINTR, unix.EINTR, unix.EINTR, unix.EINTR, unix.EINTR}}
	if _, err := dump(ct); err == nil {
		t.Error("dump interrupted every time: got no error")
	}
}

// The hand-written delete request is byte for byte what ti-mo/netfilter's
// attribute encoder makes of the same tuple.
func TestDeleteMessage(t *testing.T) {
	for _, f := range []conntrack.Flow{
		conntrack.NewFlow(unix.IPPROTO_UDP, 0, a("10.1.0.10"), remote, 20000, 7000, 0, 0),
		conntrack.NewFlow(unix.IPPROTO_TCP, 0, a("2001:db8:b::10"), a("2001:db8:ffff::100"), 40000, 443, 0, 0),
		{TupleOrig: conntrack.Tuple{IP: conntrack.IPTuple{SourceAddress: inside, DestinationAddress: remote},
			Proto: conntrack.ProtoTuple{Protocol: unix.IPPROTO_ICMP, ICMPID: 77, ICMPType: 8}}, ID: 1234, Zone: 3},
	} {
		f.ID += 99
		got, err := deleteMessage(f)
		if err != nil {
			t.Fatal(err)
		}
		want, err := referenceDelete(f)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Data, want.Data) || got.Header.Type != want.Header.Type || got.Header.Flags != want.Header.Flags {
			t.Errorf("%v:\n got %x %v\nwant %x %v", f.TupleOrig, got.Data, got.Header, want.Data, want.Header)
		}
	}
}

// referenceDelete builds the request through netfilter.Attribute.
func referenceDelete(f conntrack.Flow) (netlink.Message, error) {
	t := f.TupleOrig
	family := netfilter.ProtoIPv4
	ip := []netfilter.Attribute{{Type: ctaIPv4Src, Data: t.IP.SourceAddress.AsSlice()}, {Type: ctaIPv4Dst, Data: t.IP.DestinationAddress.AsSlice()}}
	if t.IP.SourceAddress.Is6() {
		family = netfilter.ProtoIPv6
		ip = []netfilter.Attribute{{Type: ctaIPv6Src, Data: t.IP.SourceAddress.AsSlice()}, {Type: ctaIPv6Dst, Data: t.IP.DestinationAddress.AsSlice()}}
	}
	proto := []netfilter.Attribute{{Type: ctaProtoNum, Data: []byte{t.Proto.Protocol}}}
	if t.Proto.Protocol == unix.IPPROTO_ICMP {
		proto = append(proto, netfilter.Attribute{Type: ctaProtoICMPID, Data: netfilter.Uint16Bytes(t.Proto.ICMPID)},
			netfilter.Attribute{Type: ctaProtoICMPType, Data: []byte{t.Proto.ICMPType}},
			netfilter.Attribute{Type: ctaProtoICMPCode, Data: []byte{t.Proto.ICMPCode}})
	} else {
		proto = append(proto, netfilter.Attribute{Type: ctaProtoSrcPort, Data: netfilter.Uint16Bytes(t.Proto.SourcePort)},
			netfilter.Attribute{Type: ctaProtoDstPort, Data: netfilter.Uint16Bytes(t.Proto.DestinationPort)})
	}
	attrs := []netfilter.Attribute{
		{Type: ctaTupleOrig, Nested: true, Children: []netfilter.Attribute{
			{Type: ctaTupleIP, Nested: true, Children: ip},
			{Type: ctaTupleProto, Nested: true, Children: proto},
		}},
		{Type: ctaID, Data: netfilter.Uint32Bytes(f.ID)},
	}
	if f.Zone != 0 {
		attrs = append(attrs, netfilter.Attribute{Type: ctaZone, Data: netfilter.Uint16Bytes(f.Zone)})
	}
	return netfilter.MarshalNetlink(netfilter.Header{SubsystemID: netfilter.NFSubsysCTNetlink, MessageType: msgCTDelete,
		Family: family, Flags: netlink.Request}, attrs)
}
