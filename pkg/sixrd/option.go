package sixrd

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Option is a 6rd domain as DHCPv4 option 212 (OPTION_6RD, RFC 5969
// section 7.1.1) gives it: the IPv4 mask length, the 6rd prefix and the
// border relay (the first of the option's relays).
type Option struct {
	IPv4MaskLen int          `json:"ipv4_masklen"`
	Prefix      netip.Prefix `json:"prefix"`
	Relay       netip.Addr   `json:"relay"`
}

// ParseOption reads option 212 as dhclient hands it to its scripts, with
// the option declared `{ integer 8, integer 8, ip6-address, array of
// ip-address }`: "IPV4MASKLEN PREFIXLEN PREFIX RELAY..." (e.g. "14 32
// 2001:db8:: 192.0.2.1"). It refuses what no 6rd domain can be: a mask
// length past 32, a prefix with host bits or whose delegated prefixes
// would be longer than /64, a relay that is not a unicast IPv4 address.
func ParseOption(s string) (Option, error) {
	f := strings.Fields(s)
	if len(f) < 4 {
		return Option{}, fmt.Errorf("option 212 %q: want IPV4MASKLEN PREFIXLEN PREFIX RELAY...", clip(s))
	}
	mask, err := strconv.ParseUint(f[0], 10, 8)
	if err != nil || mask > 32 {
		return Option{}, fmt.Errorf("%w: option 212's %q", ErrMaskLen, clip(f[0]))
	}
	bits, err := strconv.ParseUint(f[1], 10, 8)
	if err != nil || bits == 0 || bits > 128 {
		return Option{}, fmt.Errorf("%w: option 212's prefix length %q is not 1 to 128", ErrPrefix, clip(f[1]))
	}
	a, err := netip.ParseAddr(f[2])
	if err != nil || !a.Is6() || a.Is4In6() || a.Zone() != "" {
		return Option{}, fmt.Errorf("%w: option 212's %q is not an IPv6 address", ErrPrefix, clip(f[2]))
	}
	o := Option{IPv4MaskLen: int(mask), Prefix: netip.PrefixFrom(a, int(bits))}
	if err := check6rdPrefix(o.Prefix); err != nil {
		return Option{}, err
	}
	if n := int(bits) + 32 - int(mask); n > MaxDelegatedLen {
		return Option{}, fmt.Errorf("%w: option 212's 6rd prefix %s and IPv4 mask length %d give a /%d", ErrTooLong, o.Prefix, mask, n)
	}
	if o.Relay, err = netip.ParseAddr(f[3]); err != nil || !o.Relay.Is4() || !o.Relay.IsGlobalUnicast() {
		return Option{}, fmt.Errorf("%w: option 212's relay %q", ErrIPv4, clip(f[3]))
	}
	return o, nil
}

// clip cuts a value from the network short for a message.
func clip(s string) string {
	if len(s) > 48 {
		return s[:48] + "..."
	}
	return s
}
