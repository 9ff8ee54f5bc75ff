package reconcile

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"github.com/ti-mo/netfilter"
	"golang.org/x/sys/unix"
)

// ctnetlink's numbers (linux/netfilter/nfnetlink_conntrack.h).
const (
	msgCTDelete = 2 // IPCTNL_MSG_CT_DELETE

	ctaTupleOrig = 1
	ctaID        = 12
	ctaZone      = 18

	ctaTupleIP    = 1
	ctaTupleProto = 2

	ctaIPv4Src, ctaIPv4Dst = 1, 2
	ctaIPv6Src, ctaIPv6Dst = 3, 4

	ctaProtoNum                                              = 1
	ctaProtoSrcPort, ctaProtoDstPort                         = 2, 3
	ctaProtoICMPID, ctaProtoICMPType, ctaProtoICMPCode       = 4, 5, 6
	ctaProtoICMPv6ID, ctaProtoICMPv6Type, ctaProtoICMPv6Code = 7, 8, 9
)

// batch is how many deletes go into one system call.
const batch = 512

// Deleter deletes conntrack entries many per system call. One netlink round
// trip per entry (conntrack.Conn.Delete) costs about 15 µs, which at
// 100,000 entries is three times what `conntrack -D` takes for the same.
type Deleter struct {
	c *netlink.Conn
}

// DialDeleter opens a ctnetlink socket in the namespace cfg names (nil: the
// current one).
func DialDeleter(cfg *netlink.Config) (*Deleter, error) {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, cfg)
	if err != nil {
		return nil, fmt.Errorf("opening ctnetlink for deletes (needs root and the nfnetlink module): %w", err)
	}
	// Room for a batch's worth of error replies.
	c.SetReadBuffer(1 << 20)
	return &Deleter{c: c}, nil
}

// Close closes the socket.
func (d *Deleter) Close() error { return d.c.Close() }

// Delete deletes flows, each only if its id still names the same entry (a
// new flow that reuses the tuple is not touched). Entries already gone
// count as deleted. It returns how many were deleted.
func (d *Deleter) Delete(flows []conntrack.Flow) (int, error) {
	deleted := 0
	var errs []error
	for start := 0; start < len(flows); start += batch {
		chunk := flows[start:min(start+batch, len(flows))]
		msgs := make([]netlink.Message, 0, len(chunk))
		for _, f := range chunk {
			m, err := deleteMessage(f)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			msgs = append(msgs, m)
		}
		// Without the ack flag the kernel answers failures only, and has
		// queued every answer by the time the send returns.
		if _, err := d.c.SendMessages(msgs); err != nil {
			return deleted, errors.Join(append(errs, fmt.Errorf("sending conntrack deletes: %w", err))...)
		}
		failed, err := d.drain()
		if err != nil {
			errs = append(errs, err)
		}
		deleted += len(msgs) - failed
	}
	return deleted, errors.Join(errs...)
}

// drain reads the failures the kernel queued for the last batch, and
// returns how many there were. ENOENT (the entry ended meanwhile) is no
// error.
func (d *Deleter) drain() (int, error) {
	failed := 0
	var errs []error
	d.c.SetReadDeadline(time.Now())
	defer d.c.SetReadDeadline(time.Time{})
	for {
		_, err := d.c.Receive()
		if err == nil {
			continue
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return failed, errors.Join(errs...)
		}
		failed++
		if !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("deleting a conntrack entry: %w", err))
			if len(errs) > 10 {
				return failed, errors.Join(errs...) // enough said
			}
		}
	}
}

// deleteMessage builds ctnetlink's delete request for f: its original
// tuple, its zone and its id. It writes the bytes itself: going through
// netfilter.Attribute allocates per attribute, which at 100,000 entries is
// half of the whole delete.
func deleteMessage(f conntrack.Flow) (netlink.Message, error) {
	t := f.TupleOrig
	src, dst := t.IP.SourceAddress, t.IP.DestinationAddress
	if !src.IsValid() || !dst.IsValid() || src.Is4() != dst.Is4() {
		return netlink.Message{}, fmt.Errorf("conntrack entry %d: bad addresses %s -> %s", f.ID, src, dst)
	}
	family, srcType, dstType := byte(unix.AF_INET), uint16(ctaIPv4Src), uint16(ctaIPv4Dst)
	if src.Is6() {
		family, srcType, dstType = unix.AF_INET6, ctaIPv6Src, ctaIPv6Dst
	}
	var e encoder
	e.b = append(make([]byte, 0, 128), family, 0, 0, 0) // nfgenmsg: family, version, res_id
	orig := e.open(ctaTupleOrig)
	ip := e.open(ctaTupleIP)
	e.attr(srcType, src.AsSlice())
	e.attr(dstType, dst.AsSlice())
	e.close(ip)
	proto := e.open(ctaTupleProto)
	e.attr(ctaProtoNum, []byte{t.Proto.Protocol})
	switch t.Proto.Protocol {
	case unix.IPPROTO_ICMP:
		e.attr(ctaProtoICMPID, be16(t.Proto.ICMPID))
		e.attr(ctaProtoICMPType, []byte{t.Proto.ICMPType})
		e.attr(ctaProtoICMPCode, []byte{t.Proto.ICMPCode})
	case unix.IPPROTO_ICMPV6:
		e.attr(ctaProtoICMPv6ID, be16(t.Proto.ICMPID))
		e.attr(ctaProtoICMPv6Type, []byte{t.Proto.ICMPType})
		e.attr(ctaProtoICMPv6Code, []byte{t.Proto.ICMPCode})
	default:
		e.attr(ctaProtoSrcPort, be16(t.Proto.SourcePort))
		e.attr(ctaProtoDstPort, be16(t.Proto.DestinationPort))
	}
	e.close(proto)
	e.close(orig)
	e.attr(ctaID, binary.BigEndian.AppendUint32(nil, f.ID))
	if f.Zone != 0 {
		e.attr(ctaZone, be16(f.Zone))
	}
	return netlink.Message{
		Header: netlink.Header{
			Type:  netlink.HeaderType(netfilter.NFSubsysCTNetlink)<<8 | msgCTDelete,
			Flags: netlink.Request,
		},
		Data: e.b,
	}, nil
}

// encoder writes netlink attributes (struct nlattr, 4-byte aligned).
type encoder struct{ b []byte }

const nlaNested = 0x8000 // NLA_F_NESTED

func (e *encoder) attr(typ uint16, data []byte) {
	e.b = binary.NativeEndian.AppendUint16(e.b, uint16(4+len(data)))
	e.b = binary.NativeEndian.AppendUint16(e.b, typ)
	e.b = append(e.b, data...)
	for len(e.b)%4 != 0 {
		e.b = append(e.b, 0)
	}
}

// open starts a nested attribute and returns where, for close.
func (e *encoder) open(typ uint16) int {
	at := len(e.b)
	e.b = binary.NativeEndian.AppendUint16(e.b, 0)
	e.b = binary.NativeEndian.AppendUint16(e.b, typ|nlaNested)
	return at
}

func (e *encoder) close(at int) {
	binary.NativeEndian.PutUint16(e.b[at:], uint16(len(e.b)-at))
}

func be16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }
