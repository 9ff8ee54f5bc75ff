// Package sixrd does the address arithmetic of IPv6 Rapid Deployment (6rd,
// RFC 5969): the prefix an ISP delegates to a customer edge router through a
// 6rd tunnel, the /64 subnets inside it, and the addresses the router uses.
//
// A 6rd domain is described by its 6rd prefix (length p), the number o of
// leading bits that every IPv4 address in the domain shares (the IPv4 mask
// length), and the IPv4 address of its border relay. The customer's delegated
// prefix is the 6rd prefix followed by the last 32-o bits of the customer's
// IPv4 address, so its length is n = p + 32 - o.
//
// The package is pure computation on net/netip values; it changes nothing.
package sixrd

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// MaxDelegatedLen is the longest delegated prefix this package accepts: a
// delegated prefix must hold at least one /64 for the LAN (RFC 5969 section
// 4: n = p + 32 - o must not exceed 64 when the prefix feeds a LAN).
const MaxDelegatedLen = 64

// Delegated returns the customer's 6rd delegated prefix: prefix (the ISP's
// 6rd prefix, length p) followed by the last 32-ipv4MaskLen bits of v4 (the
// customer's IPv4 address), a prefix of length p+32-ipv4MaskLen.
//
// It fails when prefix is not a valid IPv6 prefix without host bits, when v4
// is not an IPv4 address (an IPv4-mapped IPv6 address is refused: Unmap it
// first), when ipv4MaskLen is outside 0..32, or when the delegated prefix
// would be longer than /64. Every error names the values it was given and
// wraps one of the package's sentinel errors.
func Delegated(prefix netip.Prefix, ipv4MaskLen int, v4 netip.Addr) (netip.Prefix, error) {
	if err := check6rdPrefix(prefix); err != nil {
		return netip.Prefix{}, err
	}
	if err := checkIPv4(v4); err != nil {
		return netip.Prefix{}, err
	}
	if ipv4MaskLen < 0 || ipv4MaskLen > 32 {
		return netip.Prefix{}, fmt.Errorf("%w: %d", ErrMaskLen, ipv4MaskLen)
	}
	p := prefix.Bits()
	suffixLen := 32 - ipv4MaskLen
	n := p + suffixLen
	if n > MaxDelegatedLen {
		return netip.Prefix{}, fmt.Errorf("%w: 6rd prefix %s and IPv4 mask length %d give a /%d (%d + 32 - %d)",
			ErrTooLong, prefix, ipv4MaskLen, n, p, ipv4MaskLen)
	}
	hi, lo := split(prefix.Addr())
	if suffixLen > 0 {
		// The IPv4 suffix occupies bits p..n-1, which all lie in the high
		// half because n <= 64; it ends exactly 64-n bits above bit 63.
		v4b := v4.As4()
		suffix := uint64(binary.BigEndian.Uint32(v4b[:])) & (1<<suffixLen - 1)
		hi |= suffix << (64 - n)
	}
	return netip.PrefixFrom(join(hi, lo), n), nil
}

// RelayPrefix returns the IPv4 prefix that all addresses of the 6rd domain
// share: the first ipv4MaskLen bits of v4 (any address of the domain, such as
// the customer's own). It is the kernel's 6rd-relay_prefix tunnel parameter
// (`ip tunnel 6rd dev T 6rd-prefix P 6rd-relay_prefix R`), from which the
// kernel restores the IPv4 bits that the delegated prefix leaves out; with
// ipv4MaskLen 0 it is 0.0.0.0/0.
func RelayPrefix(v4 netip.Addr, ipv4MaskLen int) (netip.Prefix, error) {
	if err := checkIPv4(v4); err != nil {
		return netip.Prefix{}, err
	}
	if ipv4MaskLen < 0 || ipv4MaskLen > 32 {
		return netip.Prefix{}, fmt.Errorf("%w: %d", ErrMaskLen, ipv4MaskLen)
	}
	return netip.PrefixFrom(v4, ipv4MaskLen).Masked(), nil
}

// RelayNextHop returns the IPv6 next hop through which a 6rd tunnel reaches
// the border relay at IPv4 address relay: the IPv4-compatible address
// ::a.b.c.d. On Linux the default route of a 6rd site is
// `ip route add ::/0 via ::192.0.2.1 dev 6rd`; the sit driver takes the
// tunnel's remote endpoint from the last 32 bits of such a next hop.
//
// It returns the zero Addr when relay is not an IPv4 address (IPv4-mapped
// addresses included: Unmap them first).
func RelayNextHop(relay netip.Addr) netip.Addr {
	if !relay.Is4() {
		return netip.Addr{}
	}
	b := relay.As4()
	return join(0, uint64(binary.BigEndian.Uint32(b[:])))
}

// Subnet returns the /64 numbered id inside the delegated prefix: the
// delegated prefix with id in the 64-n bits that follow it. Subnet 0 is the
// first /64.
//
// It fails when delegated is not a valid IPv6 prefix without host bits of
// length 64 or shorter, or when id does not fit in 64-n bits (a /56 holds the
// subnets 0..255; a /64 only subnet 0).
func Subnet(delegated netip.Prefix, id uint64) (netip.Prefix, error) {
	if !delegated.IsValid() || !delegated.Addr().Is6() {
		return netip.Prefix{}, fmt.Errorf("%w: %s", ErrDelegated, delegated)
	}
	if delegated.Masked() != delegated {
		return netip.Prefix{}, fmt.Errorf("%w: %s has host bits set (the prefix is %s)",
			ErrDelegated, delegated, delegated.Masked())
	}
	n := delegated.Bits()
	if n > 64 {
		return netip.Prefix{}, fmt.Errorf("%w: %s is longer than /64", ErrDelegated, delegated)
	}
	// n == 0 leaves 64 subnet bits: every id fits (and 1<<64 would overflow).
	if n > 0 && id>>(64-n) != 0 {
		return netip.Prefix{}, fmt.Errorf("%w: subnet %d of %s (a /%d holds %d subnets of /64, 0..%d)",
			ErrSubnetID, id, delegated, n, uint64(1)<<(64-n), uint64(1)<<(64-n)-1)
	}
	hi, _ := split(delegated.Addr())
	return netip.PrefixFrom(join(hi|id, 0), 64), nil
}

// LANAddr returns the address ifisp gives the LAN interface in subnet: the
// subnet's address with interface identifier 1 (prefix::1). It returns the
// zero Addr when subnet is not a valid IPv6 prefix of length 64 or shorter.
func LANAddr(subnet netip.Prefix) netip.Addr {
	if !subnet.IsValid() || !subnet.Addr().Is6() || subnet.Bits() > 64 {
		return netip.Addr{}
	}
	hi, _ := split(subnet.Masked().Addr())
	return join(hi, 1)
}

// check6rdPrefix reports whether prefix can be a 6rd prefix: valid, IPv6,
// and without host bits (a typo such as 2001:db8:1::/32 must not pass).
func check6rdPrefix(prefix netip.Prefix) error {
	if !prefix.IsValid() || !prefix.Addr().Is6() {
		return fmt.Errorf("%w: %s is not an IPv6 prefix", ErrPrefix, prefix)
	}
	if prefix.Masked() != prefix {
		return fmt.Errorf("%w: %s has host bits set (the prefix is %s)", ErrPrefix, prefix, prefix.Masked())
	}
	return nil
}

// checkIPv4 reports whether v4 is a plain IPv4 address.
func checkIPv4(v4 netip.Addr) error {
	switch {
	case v4.Is4():
		return nil
	case v4.Is4In6():
		return fmt.Errorf("%w: %s is IPv4-mapped IPv6 (want %s)", ErrIPv4, v4, v4.Unmap())
	case !v4.IsValid():
		return fmt.Errorf("%w: none given", ErrIPv4)
	default:
		return fmt.Errorf("%w: %s", ErrIPv4, v4)
	}
}

// split returns the high and low 64 bits of the IPv6 address a.
func split(a netip.Addr) (hi, lo uint64) {
	b := a.As16()
	return binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])
}

// join makes an IPv6 address from its high and low 64 bits.
func join(hi, lo uint64) netip.Addr {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], hi)
	binary.BigEndian.PutUint64(b[8:], lo)
	return netip.AddrFrom16(b)
}
