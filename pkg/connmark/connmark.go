// Package connmark is the arithmetic of ifisp's connection marks: which
// bits of the 32-bit conntrack mark are ifisp's (the mask), and the values
// one ISP link's flows carry in them.
//
// A mark never picks the link of a new outbound connection: source rules
// and the main table's metrics do that. Marks are bookkeeping (the kernel
// finds one link's flows by them, so conntrack work is one filtered
// request), the reply path of a connection that arrived by a link, and,
// for a link with isp-sticky, the link of an established outbound flow.
//
// Inside the mask, the highest bit says which way the connection came: set
// for a connection that arrived by the link (inbound), clear for one that
// left by it (outbound). The bits below it are the link's id. So taking a
// link's outbound flows away never touches its inbound ones, and the
// administrator's bits outside the mask are never changed.
package connmark

import (
	"fmt"
	"math/bits"
)

// DefaultMask is the top byte. Kubernetes (0x4000, 0x8000), Tailscale
// (0xff0000), mwan3 (0x3f00), wg-quick and firewalld use lower bits; of the
// common users only Calico's default (0xffff0000) overlaps, and a router
// running ifupdown for its ISPs is no Kubernetes node.
const DefaultMask uint32 = 0xff000000

// Mark is one link's place in the connection mark: its id under the mask.
type Mark struct {
	ID   uint32 `json:"id"`
	Mask uint32 `json:"mask"`
}

// CheckMask says what is wrong with mask as ifisp's mark field: it must be
// one run of at least two bits (the direction bit and one bit of id).
func CheckMask(mask uint32) error {
	if bits.OnesCount32(mask) < 2 {
		return fmt.Errorf("%#x has fewer than 2 bits (one says inbound or outbound, the rest are the link's id)", mask)
	}
	if low := mask >> bits.TrailingZeros32(mask); low&(low+1) != 0 {
		return fmt.Errorf("%#x is not one run of bits (e.g. 0xff000000)", mask)
	}
	return nil
}

// MaxID is the largest link id mask holds (a valid mask).
func MaxID(mask uint32) uint32 {
	return 1<<(bits.OnesCount32(mask)-1) - 1
}

// DefaultID is a link's id when the stanza has no isp-mark: the table's
// number when it fits the mask, so that the marks of tables 100 and 101 read
// 0x64000000 and 0x65000000; a larger number (rt_tables' customary 200, or
// 4294967295) folds into 1..MaxID, so any table works without an option. Two
// tables may fold to one id; ifisp-snat refuses the second link then, with
// an error that names isp-mark.
func DefaultID(table int, mask uint32) uint32 {
	top := uint64(MaxID(mask))
	if table <= 0 || top == 0 { // top 0: a bad mask, refused elsewhere
		return 0
	}
	if uint64(table) <= top {
		return uint32(table)
	}
	return uint32((uint64(table)-1)%top) + 1
}

// Out is the mark of a connection that left by the link.
func (m Mark) Out() uint32 { return m.ID << bits.TrailingZeros32(m.Mask) }

// In is the mark of a connection that arrived by the link.
func (m Mark) In() uint32 { return m.Out() | InboundBit(m.Mask) }

// InboundBit is the bit of mask that marks inbound connections: its
// highest.
func InboundBit(mask uint32) uint32 { return 1 << (31 - bits.LeadingZeros32(mask)) }

// Hex writes a mark or mask as iptables-save and `ip rule` print them.
func Hex(v uint32) string { return fmt.Sprintf("%#x", v) }
