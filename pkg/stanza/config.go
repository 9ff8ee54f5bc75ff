// Package stanza reads one /etc/network/interfaces stanza, as ifupdown hands
// it to a hook in IFACE, ADDRFAM, METHOD, MODE, PHASE and IF_* variables,
// into a typed, validated Config.
//
// The options ifisp understands are declared once, in the table in
// options.go: name, address family, parser, default and a one-line doc.
// A default is written there once, as the value text its parser reads (or
// as what it is derived from), and the README's option table and
// ifisp-interfaces(5) are generated from it (go generate ./pkg/stanza).
// Parsing never touches the kernel: facts that only the kernel knows (the
// address of an `inet dhcp` stanza, say) are resolved by the packages that
// act on the Config.
package stanza

import (
	"github.com/ifisp/ifisp/pkg/sixrd"
	"net/netip"
	"slices"
	"time"

	"github.com/ifisp/ifisp/pkg/connmark"
)

// Family is the address family of a stanza, as ifupdown's ADDRFAM says.
type Family string

// The address families ifisp acts on.
const (
	Inet  Family = "inet"
	Inet6 Family = "inet6"
)

// Bits returns the length of an address of the family.
func (f Family) Bits() int {
	if f == Inet6 {
		return 128
	}
	return 32
}

// Contains reports whether a belongs to the family. An IPv4-mapped IPv6
// address is an inet6 address, as the kernel sees it.
func (f Family) Contains(a netip.Addr) bool {
	return a.IsValid() && a.Is4() == (f == Inet)
}

// Config is one stanza, parsed and validated. The zero value of an optional
// field means the option was not given and has no default.
type Config struct {
	Iface   string // IFACE: the kernel interface
	Logical string // LOGICAL: the stanza's name in /etc/network/interfaces
	Family  Family // ADDRFAM
	Method  string // METHOD: static, dhcp, v4tunnel, ...
	Mode    string // MODE: start or stop
	Phase   string // PHASE: pre-up, post-up, pre-down or post-down
	// Env is the stanza as ifupdown exported it (IFACE, LOGICAL, ADDRFAM,
	// METHOD and the IF_* options), sorted: recorded with the link, so
	// that ifisp-lease can run the hooks again when a lease changes,
	// without ifupdown.
	Env []string
	// Session says the stanza is an `inet ppp` one run for its PPP
	// session's interface (PPP_IFACE), by ifisp-lease from pppd's ip-up
	// and ip-down, rather than by ifupdown (see AwaitsSession).
	Session bool

	// Address is the stanza's `address` with its prefix length (from
	// `address A/N` or `address A` + `netmask`). Invalid for dynamic
	// methods, whose address is whatever the kernel has.
	Address netip.Prefix
	// Gateway is the stanza's own `gateway`: ifupdown adds a main-table
	// default route through it, which ifisp must withdraw first on down.
	Gateway netip.Addr
	// GatewayMetric is the stanza's `metric` (that route's metric), -1 if
	// not given.
	GatewayMetric int

	Table     int    // isp-table, resolved to a number
	TableName string // isp-table as written

	// ISPGateway is isp-gateway, defaulting to Gateway; invalid when the
	// kernel must tell (dhcp, tunnels).
	ISPGateway netip.Addr
	// Metric is isp-metric, -1 when not given (no main-table default of
	// ifisp's own).
	Metric int

	Sources  []netip.Prefix // isp-source
	Throw    []netip.Prefix // isp-throw, defaulted per family
	SNATFrom []netip.Prefix // snat-from
	SNATTo   netip.Addr     // snat-to of an inet stanza; invalid means the stanza's address
	// SNATPrefix is snat-to of an inet6 stanza: the prefix snat-from's
	// ULA prefix maps to (NPTv6).
	SNATPrefix netip.Prefix

	Check         []netip.Addr  // isp-check
	CheckInterval time.Duration // isp-check-interval
	CheckDown     int           // isp-check-down
	CheckUp       int           // isp-check-up

	// Mark is the link's place in the connection mark: isp-mark (default
	// the table's number) under isp-mark-mask.
	Mark    connmark.Mark
	Inbound bool // isp-inbound
	Sticky  bool // isp-sticky
	// LAN is isp-lan (or 6rd-lan): nil when not given.
	LAN *LAN
	// RDNSS is isp-rdnss.
	RDNSS []netip.Addr

	// SixRD is set when the stanza carries 6rd-prefix.
	SixRD *SixRD

	// Delegation says the stanza asks its DHCPv6 server for a prefix:
	// `inet6 dhcp` with `request_prefix 1`. The prefix is the link's
	// first isp-source and the one isp-lan numbers the LAN from.
	Delegation bool
	// Delegated is that prefix, once dhclient has it (Delegate): the
	// hooks find it in the link's record, not in the stanza.
	Delegated netip.Prefix
}

// Delegate makes p, the prefix the DHCPv6 server delegated, the link's
// first isp-source.
func (c *Config) Delegate(p netip.Prefix) {
	c.Delegated = p
	c.Sources = append([]netip.Prefix{p}, slices.DeleteFunc(slices.Clone(c.Sources), func(q netip.Prefix) bool { return q == p })...)
}

// WaitsForRA reports whether the stanza's gateway comes by router
// advertisement, which may come long after ifup: an `inet6 dhcp` stanza
// without isp-gateway (DHCPv6 gives no route). Its link is brought up
// when the default arrives, by ifisp-watch, not refused at ifup.
func (c *Config) WaitsForRA() bool {
	return c.Family == Inet6 && c.Method == "dhcp" && !c.ISPGateway.IsValid()
}

// LAN is the LAN interface an ISP's prefix numbers a /64 of: isp-lan, or
// 6rd-lan on a 6rd stanza.
type LAN struct {
	Option string // "isp-lan" or "6rd-lan", as written
	Value  string // its value, as written, for messages
	Iface  string
	Subnet uint64 // which /64 of the ISP's prefix (default 0)
}

// AwaitsSession reports whether the stanza's hooks run before its link
// exists: ifupdown runs an `inet ppp` stanza's while pppd is still
// dialling, with IFACE the stanza's name, not the session's interface.
// They only record the stanza; pppd's ip-up brings the link up.
func (c *Config) AwaitsSession() bool { return c.Method == "ppp" && !c.Session }

// Reconciled reports whether ifisp-conntrack acts for the stanza: an
// inet stanza's link, or an inet6 one's with NPTv6 (snat-from), NATs
// flows; a 6rd tunnel's never does.
func (c *Config) Reconciled() bool {
	return c.SixRD == nil && (c.Family == Inet || len(c.SNATFrom) > 0)
}

// SixRD holds the 6rd options of an `inet6 v4tunnel` stanza (RFC 5969).
type SixRD struct {
	Prefix      netip.Prefix // 6rd-prefix
	Relay       netip.Addr   // 6rd-relay
	IPv4MaskLen int          // 6rd-ipv4-masklen
	// Local is 6rd-local: either an interface name (LocalIface) or a
	// literal IPv4 address (LocalAddr); empty/invalid means the tunnel's
	// own `local`.
	LocalIface string
	LocalAddr  netip.Addr
	// FromDHCP is `6rd-prefix dhcp`: Prefix, Relay and IPv4MaskLen come
	// from option 212 of LocalIface's lease (Fill), not the stanza.
	FromDHCP bool
}

// Fill takes a `6rd-prefix dhcp` stanza's domain from option 212.
func (s *SixRD) Fill(o sixrd.Option) {
	s.Prefix, s.Relay, s.IPv4MaskLen = o.Prefix, o.Relay, o.IPv4MaskLen
}
