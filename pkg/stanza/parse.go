package stanza

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/ifisp/ifisp/pkg/connmark"
)

// ErrNotOptedIn is returned for a stanza that is not ifisp's: one without
// isp-table or 6rd-prefix (lo, a LAN interface), ifupdown's `--all`
// pseudo-interface, or an address family other than inet and inet6.
// Hooks do nothing at all for it.
var ErrNotOptedIn = errors.New("not an ifisp stanza")

// Problem is one thing wrong with a stanza.
type Problem struct {
	Option string // the option as written in the stanza (or ifupdown's own)
	Value  string // its value; "" when missing
	Msg    string // what is wrong, and what to do
}

// Error is every problem found in one stanza. Its text has one line per
// problem: `IFACE: OPTION "VALUE": what is wrong (what to do)`.
type Error struct {
	Iface    string
	Problems []Problem
}

// Error returns the problems, one line each, without a trailing newline.
func (e *Error) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = e.Line(p)
	}
	return strings.Join(lines, "\n")
}

// Line is the line of one problem: `IFACE: OPTION "VALUE": what is wrong`.
func (e *Error) Line(p Problem) string {
	if p.Value == "" {
		return fmt.Sprintf("%s: %s: %s", e.Iface, p.Option, p.Msg)
	}
	return fmt.Sprintf("%s: %s %q: %s", e.Iface, p.Option, p.Value, p.Msg)
}

// Errorf returns an *Error with the one problem of option (value may be
// empty): for the checks that need the kernel, made outside this package.
func Errorf(iface, option, value, format string, args ...any) *Error {
	return &Error{Iface: iface, Problems: []Problem{{Option: option, Value: value, Msg: fmt.Sprintf(format, args...)}}}
}

// Owner names the hook that acts on option, and so reports its problems:
// ifisp-6rd for 6rd-*, ifisp-snat for snat-*, ifisp-route for the rest
// (isp-*, and ifupdown's own address, gateway and metric).
func Owner(option string) string {
	switch {
	case strings.HasPrefix(option, "6rd-"):
		return "ifisp-6rd"
	case strings.HasPrefix(option, "snat-"):
		return "ifisp-snat"
	}
	return "ifisp-route"
}

// stanzaVars are the variables of ifupdown's environment, besides the
// IF_* options, that say which stanza a hook runs for (Config.Env).
var stanzaVars = map[string]bool{"IFACE": true, "LOGICAL": true, "ADDRFAM": true, "METHOD": true}

// Parse reads the stanza ifupdown describes in environ (os.Environ()'s
// "KEY=value" form) and returns its Config, ErrNotOptedIn, or an *Error
// listing every problem. Table names are resolved through the rt_tables
// files below root ("/" on a live system).
func Parse(environ []string, root string) (*Config, error) {
	env := make(map[string]string, len(environ))
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	c := &Config{
		Iface:         env["IFACE"],
		Logical:       env["LOGICAL"],
		Family:        Family(env["ADDRFAM"]),
		Method:        env["METHOD"],
		Mode:          env["MODE"],
		Phase:         env["PHASE"],
		Metric:        -1,
		GatewayMetric: -1,
	}
	if c.Iface == "" || c.Iface == "--all" || (c.Family != Inet && c.Family != Inet6) {
		return nil, ErrNotOptedIn
	}
	iface := c.Iface
	c.Delegation = c.Family == Inet6 && c.Method == "dhcp" && env["IF_REQUEST_PREFIX"] == "1"
	for _, kv := range environ {
		if k, _, _ := strings.Cut(kv, "="); stanzaVars[k] || strings.HasPrefix(k, "IF_") {
			c.Env = append(c.Env, kv)
		}
	}
	slices.Sort(c.Env)

	// The stanza's own options that are ifisp's, by their written name.
	given := map[string]string{}
	for k, v := range env {
		name, ok := strings.CutPrefix(k, "IF_")
		if !ok {
			continue
		}
		name = strings.ToLower(strings.ReplaceAll(name, "_", "-"))
		for _, p := range optionPrefixes {
			if strings.HasPrefix(name, p) {
				given[name] = v
			}
		}
	}
	var problems []Problem
	bad := func(option, value, format string, args ...any) {
		problems = append(problems, Problem{Option: option, Value: value, Msg: fmt.Sprintf(format, args...)})
	}
	_, hasTable := given["isp-table"]
	_, has6rd := given["6rd-prefix"]
	if !hasTable && !has6rd {
		if len(given) == 0 {
			return nil, ErrNotOptedIn
		}
		reportUnknown(given, bad)
		reportNoOptIn(given, bad)
		return nil, &Error{Iface: c.Iface, Problems: problems}
	}

	if !isIfname(iface) {
		bad("iface", iface, "not an interface name ifisp can manage (1 to 15 of A-Z a-z 0-9 _ . -; an alias such as eth0:1 cannot have a table of its own)")
	}
	c.parseIfupdown(env, bad)
	reportUnknown(given, bad)
	failed := map[string]bool{} // the options given with a bad value
	for _, o := range options {
		if v, ok := given[o.Name]; ok {
			if err := o.set(c, v, root); err != nil {
				bad(o.Name, v, "%v", err)
				failed[o.Name] = true
			}
		}
	}
	c.applyDefaults(func(name string) bool { _, ok := given[name]; return ok && !failed[name] }, bad)
	c.defaults()
	// From here on, "missing" means not given at all: a bad value has
	// been reported already.
	for _, o := range []string{"address", "gateway", "pointopoint", "local", "accept_ra"} {
		if v := env["IF_"+strings.ToUpper(o)]; v != "" {
			given[o] = v
		}
	}
	c.check(given, failed, bad)
	if len(problems) > 0 {
		return nil, &Error{Iface: c.Iface, Problems: problems}
	}
	return c, nil
}

// reportUnknown reports the given options that look like ifisp's but are
// not: typos must not pass silently.
func reportUnknown(given map[string]string, bad func(option, value, format string, args ...any)) {
	for _, name := range sortedKeys(given) {
		if findOption(name) == nil {
			bad(name, given[name], "unknown option%s", suggest(name))
		}
	}
}

// reportNoOptIn reports the ifisp options of a stanza that has neither
// isp-table nor 6rd-prefix, which they do nothing without.
func reportNoOptIn(given map[string]string, bad func(option, value, format string, args ...any)) {
	var known []string
	only6rd := true
	for _, name := range sortedKeys(given) {
		if findOption(name) != nil {
			known = append(known, name)
			only6rd = only6rd && strings.HasPrefix(name, "6rd-")
		}
	}
	if len(known) == 0 {
		return
	}
	missing := "isp-table"
	if only6rd {
		missing = "6rd-prefix"
	}
	bad(missing, "", "missing: %s does nothing without it (add %s to the stanza)", strings.Join(known, ", "), missing)
}

// parseIfupdown reads ifupdown's own options that ifisp needs: address
// (with netmask), gateway and metric.
func (c *Config) parseIfupdown(env map[string]string, bad func(option, value, format string, args ...any)) {
	if v := env["IF_ADDRESS"]; v != "" {
		p, err := c.address(v, env["IF_NETMASK"])
		if err != nil {
			bad("address", v, "%v", err)
		}
		c.Address = p
	}
	if v := env["IF_GATEWAY"]; v != "" {
		a, err := c.addr(v)
		if err != nil {
			bad("gateway", v, "%v", err)
		}
		c.Gateway = a
	}
	if v := env["IF_METRIC"]; v != "" {
		n, err := metric(v)
		if err != nil {
			bad("metric", v, "%v", err)
		}
		c.GatewayMetric = n
	}
}

// address reads ifupdown's `address`, "A/N" or "A" with `netmask` (dotted
// for inet, a length for inet6), keeping the host address.
func (c *Config) address(v, netmask string) (netip.Prefix, error) {
	if strings.Contains(v, "/") {
		p, err := netip.ParsePrefix(v)
		if err != nil {
			return netip.Prefix{}, errors.New("not an address with prefix length")
		}
		if !c.Family.Contains(p.Addr()) {
			return netip.Prefix{}, fmt.Errorf("an %s address on an %s stanza", familyName(p.Addr()), c.Family)
		}
		return p, nil
	}
	a, err := c.addr(v)
	if err != nil {
		return netip.Prefix{}, err
	}
	// Without a netmask, ifupdown runs `ip addr add ADDRESS`, which gives
	// the address a host prefix (/32, /128): so does ifisp.
	bits := a.BitLen()
	if netmask != "" {
		if bits, err = maskBits(netmask, a.BitLen()); err != nil {
			return netip.Prefix{}, fmt.Errorf("netmask %q: %v", netmask, err)
		}
	}
	return netip.PrefixFrom(a, bits), nil
}

// maskBits reads a netmask as a length ("24", "64") or, for an address of
// addrBits 32, a dotted mask.
func maskBits(m string, addrBits int) (int, error) {
	if n, err := strconv.Atoi(m); err == nil && n >= 0 && n <= addrBits {
		return n, nil
	}
	a, err := netip.ParseAddr(m)
	if err != nil || !a.Is4() || addrBits != 32 {
		return 0, errors.New("not a netmask")
	}
	b := a.As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	ones := 0
	for v&(1<<31) != 0 {
		ones++
		v <<= 1
	}
	if v != 0 {
		return 0, errors.New("not a contiguous netmask")
	}
	return ones, nil
}

// defaults fills in the Derived defaults of the options table that follow
// from the stanza itself, once its options and their Defaults are set.
func (c *Config) defaults() {
	if !c.ISPGateway.IsValid() {
		c.ISPGateway = c.Gateway
	}
	if c.Mark.ID == 0 {
		c.Mark.ID = connmark.DefaultID(c.Table, c.Mark.Mask)
	}
}

// check finds the problems that lie between options; failed names the
// options whose own value was bad, which have been reported already.
func (c *Config) check(given map[string]string, failed map[string]bool, bad func(option, value, format string, args ...any)) {
	has := func(o string) bool { _, ok := given[o]; return ok }
	if c.Method == "static" {
		if !has("address") {
			bad("address", "", "missing (a static stanza needs its address)")
		}
		if has("isp-table") && !has("isp-gateway") && !has("gateway") {
			bad("isp-gateway", "", "missing (set isp-gateway, or gateway, on a static stanza)")
		}
	}
	c.checkGateway(has, failed, bad)
	if c.WaitsForRA() && has("isp-table") && given["accept_ra"] != "2" {
		bad("accept_ra", given["accept_ra"], "the default of an inet6 dhcp stanza comes by router advertisement, which a router (forwarding on) ignores unless accept_ra is 2 (set accept_ra 2, or give isp-gateway)")
	}
	if c.Family == Inet6 && has("snat-from") && !failed["snat-from"] && !failed["snat-to"] {
		c.checkNPT(given, has, bad)
	}
	if max := connmark.MaxID(c.Mark.Mask); c.Mark.ID > max && !failed["isp-mark"] && !failed["isp-mark-mask"] && !failed["isp-table"] {
		bad("isp-mark", given["isp-mark"], "does not fit isp-mark-mask %s (ids 1 to %d)", connmark.Hex(c.Mark.Mask), max)
	}
	if c.RDNSS != nil && c.LAN == nil && !failed["isp-lan"] && !failed["6rd-lan"] {
		bad("isp-rdnss", given["isp-rdnss"], "does nothing without isp-lan (the LAN interface its router advertisements go to)")
	}
	// No 6rd option was accepted (on an inet stanza, each was refused).
	if c.SixRD == nil {
		if c.LAN == nil {
			return
		}
		parent, ok := c.LANParent()
		if !ok && c.Delegation {
			return // the delegated prefix's subnets are checked when it comes
		}
		if !ok {
			bad(c.LAN.Option, c.LAN.Value, "needs an IPv6 isp-source prefix of /64 or shorter to number the LAN from (add the prefix the ISP delegated to isp-source)")
			return
		}
		c.checkLAN(parent.Bits(), "isp-source "+parent.String(), bad)
		return
	}
	if c.Method != "v4tunnel" {
		first := "6rd-prefix"
		for _, o := range options {
			if strings.HasPrefix(o.Name, "6rd-") && has(o.Name) {
				first = o.Name
				break
			}
		}
		bad(first, given[first], "6rd options belong on an `inet6 v4tunnel` stanza (this is inet6 %s)", c.Method)
		return
	}
	s := c.SixRD
	if !has("6rd-prefix") {
		bad("6rd-prefix", "", "missing (the other 6rd options need it)")
		return
	}
	if !has("local") {
		// ifupdown's `ip tunnel add ... remote any` without a local
		// address clashes with the fallback device sit0 ("No buffer space
		// available").
		bad("local", "", "missing: ifupdown's v4tunnel cannot create a sit tunnel without it (it would be sit0's twin); with 6rd-local IFACE any unicast IPv4 address will do, the tunnel's local address follows IFACE's")
	}
	if s.FromDHCP {
		for _, o := range []string{"6rd-relay", "6rd-ipv4-masklen"} {
			if has(o) {
				bad(o, given[o], "comes from DHCP option 212 with 6rd-prefix dhcp (drop it, or give 6rd-prefix itself)")
			}
		}
		if s.LocalIface == "" && !failed["6rd-local"] {
			bad("6rd-local", given["6rd-local"], "6rd-prefix dhcp needs 6rd-local IFACE, the interface whose dhclient lease carries option 212")
		}
		return // the rest is checked when the option comes (sixrd.ParseOption)
	}
	if !has("6rd-relay") {
		bad("6rd-relay", "", "missing (the ISP's border relay, an IPv4 address)")
	}
	if failed["6rd-prefix"] || failed["6rd-ipv4-masklen"] {
		return
	}
	delegated := s.Prefix.Bits() + 32 - s.IPv4MaskLen
	if delegated > 64 {
		bad("6rd-ipv4-masklen", strconv.Itoa(s.IPv4MaskLen), "6rd-prefix /%d plus %d IPv4 bits makes a /%d, longer than /64 (raise 6rd-ipv4-masklen to at least %d)",
			s.Prefix.Bits(), 32-s.IPv4MaskLen, delegated, s.Prefix.Bits()-32)
		return
	}
	if c.LAN != nil {
		c.checkLAN(delegated, "delegated prefix", bad)
	}
}

// LANParent returns the prefix a native stanza's isp-lan numbers its /64
// from: the first isp-source prefix of /64 or shorter, or for a stanza
// that asks for a delegated prefix (Delegation) that prefix, once it came.
func (c *Config) LANParent() (netip.Prefix, bool) {
	if c.Delegation {
		return c.Delegated, c.Delegated.IsValid()
	}
	for _, p := range c.Sources {
		if p.Addr().Is6() && p.Bits() <= 64 {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

// checkLAN checks that the isp-lan subnet id numbers a /64 within a
// prefix of parentBits, what, e.g. "delegated prefix".
func (c *Config) checkLAN(parentBits int, what string, bad func(option, value, format string, args ...any)) {
	switch bits := 64 - parentBits; {
	case bits == 0 && c.LAN.Subnet != 0:
		bad(c.LAN.Option, c.LAN.Value, "the %s is a single /64: subnet id must be 0", what)
	case bits < 64 && c.LAN.Subnet>>bits != 0:
		bad(c.LAN.Option, c.LAN.Value, "subnet id %x does not fit in the /%d %s (at most %x)", c.LAN.Subnet, parentBits, what, uint64(1)<<bits-1)
	}
}

// ula is where an inet6 snat-from must lie: ifisp translates unique local
// addresses only, never global ones.
var ula = netip.MustParsePrefix("fc00::/7")

// checkNPT checks an inet6 stanza's NPTv6: one ULA prefix in snat-from,
// mapped to a snat-to prefix of the same length.
func (c *Config) checkNPT(given map[string]string, has func(string) bool, bad func(option, value, format string, args ...any)) {
	from := c.SNATFrom[0]
	switch {
	case len(c.SNATFrom) > 1:
		bad("snat-from", given["snat-from"], "one prefix on an inet6 stanza (NPTv6 maps one ULA prefix to one of the ISP's)")
	case !ula.Contains(from.Addr()) || from.Bits() < ula.Bits():
		bad("snat-from", given["snat-from"], "not a unique local prefix (fc00::/7): ifisp translates ULA sources only, a global address keeps its own")
	case !has("snat-to"):
		bad("snat-to", "", "missing: an inet6 snat-from maps to a prefix of this ISP's, give it (a /%d)", from.Bits())
	case c.SNATPrefix.Bits() != from.Bits():
		bad("snat-to", given["snat-to"], "a /%d, but snat-from %s is a /%d: NPTv6 maps prefix to prefix of one length", c.SNATPrefix.Bits(), from, from.Bits())
	}
}

// checkGateway finds what would make the routes of a static stanza fail
// once ifupdown has configured it: an ISP gateway the table's default
// cannot reach (ifupdown adds its own `gateway` route onlink, ifisp's table
// needs it on the link), and an isp-metric default that would collide with
// the stanza's own `gateway` route.
func (c *Config) checkGateway(has func(string) bool, failed map[string]bool, bad func(option, value, format string, args ...any)) {
	option := "isp-gateway"
	if !has(option) {
		option = "gateway"
	}
	gw := c.ISPGateway
	// A host address (/32, /128) reaches its gateway by a route of its
	// own (pointopoint, an up line): only the kernel can tell, in if-up.d.
	if c.Method == "static" && c.Address.IsValid() && !c.Address.IsSingleIP() && gw.IsValid() && !failed[option] && !has("pointopoint") {
		switch {
		case gw == c.Address.Addr():
			bad(option, gw.String(), "is the stanza's own address (give the ISP's router)")
		case !gw.IsLinkLocalUnicast() && !c.Address.Masked().Contains(gw):
			bad(option, gw.String(), "not on the link: %s does not contain it, so the ISP table's default cannot reach it (fix the address's prefix length, or the gateway)", c.Address.Masked())
		case gw.Is4() && c.Address.Bits() < 31 && (gw == c.Address.Masked().Addr() || gw == lastAddr(c.Address)):
			bad(option, gw.String(), "is the network or broadcast address of %s, not a router (give the ISP's router)", c.Address.Masked())
		}
	}
	if c.Gateway.IsValid() && c.Metric >= 0 && !failed["isp-metric"] {
		own := max(c.GatewayMetric, 0)
		if KernelMetric(c.Family, own) == KernelMetric(c.Family, c.Metric) {
			bad("isp-metric", strconv.Itoa(c.Metric), "the stanza's own gateway already adds a default at metric %d (leave isp-metric out, or give another)", own)
		}
	}
}

// lastAddr returns the last address of p's network: IPv4's broadcast.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v |= 1<<(32-p.Bits()) - 1
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// KernelMetric returns the metric the kernel stores for a route given
// metric m: IPv6 turns 0 into 1024.
func KernelMetric(f Family, m int) int {
	if f == Inet6 && m == 0 {
		return 1024
	}
	return m
}

// suggest names the known option closest to a misspelt one.
func suggest(name string) string {
	best, dist := "", 3
	for _, o := range options {
		if d := editDistance(name, o.Name); d < dist {
			best, dist = o.Name, d
		}
	}
	if best == "" {
		return " (see the option table in README.md)"
	}
	return fmt.Sprintf(" (did you mean %s?)", best)
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
