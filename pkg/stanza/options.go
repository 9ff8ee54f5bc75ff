package stanza

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/ifisp/ifisp/pkg/connmark"
)

// Option describes one stanza option ifisp understands.
type Option struct {
	Name   string // as written in /etc/network/interfaces
	Family Family // the family of stanza it belongs on; "" for both

	// Default is the option's default written as its value would be in
	// the stanza ("100ms", "yes"), the one place it is written: Parse runs
	// it through the option's own parser whenever the stanza leaves the
	// option out, so it means exactly what the same text given would mean,
	// and the README's table and ifisp-interfaces(5) print it from here. A
	// 6rd option's default applies on a 6rd stanza only. "" when the option
	// has no default, or a Derived one.
	Default string
	// Default6 is the default on an inet6 stanza, where it differs from
	// the inet one in Default.
	Default6 string
	// Derived says, for a default that depends on the rest of the stanza
	// or on the kernel, what it is derived from ("the stanza's gateway"):
	// code computes it, where the value is needed (Config.defaults for the
	// stanza's own facts, the hooks and ifisp-watch for the kernel's).
	Derived string

	Value string // what the value is, as documented
	Doc   string // one line

	// parse sets the option's field of c from value, with the Config's
	// ifupdown facts (Family, Method, Gateway, ...) already read; root is
	// the filesystem root the rt_tables files are read below.
	parse func(c *Config, value, root string) error
	// wrongFamily says what is wrong with the option on a stanza of the
	// other family, when the generic "only for inet stanzas" does not.
	wrongFamily string
}

//go:generate go run ../../internal/optdoc

// options is the single source of truth: every ifisp option, in the order
// they are parsed and documented.
var options = []Option{
	{Name: "isp-table", Value: "name (rt_tables, rt_tables.d/*.conf, /usr/share/iproute2/rt_tables) or number", Doc: "this ISP's routing table; the same table serves its inet and inet6 stanzas. 0, 253, 254, 255 are refused",
		parse: func(c *Config, v, root string) (err error) {
			c.Table, err = table(v, root)
			c.TableName = v
			return err
		}},
	{Name: "isp-gateway", Derived: "the stanza's gateway", Value: "address", Doc: "the ISP table's gateway; for `inet dhcp` or a tunnel, the gateway of the default route the kernel has",
		parse: func(c *Config, v, _ string) (err error) { c.ISPGateway, err = c.addr(v); return err }},
	{Name: "isp-metric", Value: "number", Doc: "add a main-table default through this ISP at this metric (lower wins). Leave it out when the stanza's own `gateway` already adds one, or for a link that should carry only inbound and source-routed traffic",
		parse: func(c *Config, v, _ string) (err error) { c.Metric, err = metric(v); return err }},
	{Name: "isp-source", Value: "CIDR list", Doc: "more source prefixes of this ISP (extra static IPs, a delegated IPv6 prefix); each gets a `from` rule",
		parse: func(c *Config, v, _ string) (err error) { c.Sources, err = c.prefixes(v); return err }},
	{Name: "isp-throw", Default: "10.0.0.0/8 172.16.0.0/12 192.168.0.0/16", Default6: "fc00::/7", Value: "CIDR list", Doc: "destinations sent back to the main table",
		parse: func(c *Config, v, _ string) (err error) { c.Throw, err = c.prefixes(v); return err }},
	{Name: "snat-from", Value: "CIDR list", Doc: "inside ranges NATed to this link's address on the way out (IPv4); on an inet6 stanza, one ULA prefix (fc00::/7) mapped prefix for prefix to snat-to's (NPTv6, off unless given)",
		parse: func(c *Config, v, _ string) (err error) { c.SNATFrom, err = c.prefixes(v); return err }},
	{Name: "snat-to", Derived: "the stanza's address (inet)", Value: "address (inet), prefix (inet6)", Doc: "the address to NAT to; on an inet6 stanza, the prefix of this ISP's that snat-from's maps to, of the same length",
		parse: func(c *Config, v, _ string) (err error) { return c.setSNATTo(v) }},
	{Name: "isp-check", Derived: "the gateway", Value: "address list", Doc: "targets the health monitor probes through this link",
		parse: func(c *Config, v, _ string) (err error) { c.Check, err = c.addrs(v); return err }},
	// The health check's defaults: a dead upstream is withdrawn 1.0 to 1.1 s
	// after its last answer, and a link losing 10 % of packets each way (19 %
	// of rounds) has 6000 × 0.81 × 0.19^10 ≈ 0.0003 false failovers in ten
	// minutes. README "The health monitor" has the arithmetic.
	{Name: "isp-check-interval", Default: "100ms", Value: "duration", Doc: "probe period",
		parse: func(c *Config, v, _ string) (err error) { c.CheckInterval, err = duration(v); return err }},
	{Name: "isp-check-down", Default: "10", Value: "count", Doc: "rounds in a row without an answer before the link is withdrawn",
		parse: func(c *Config, v, _ string) (err error) { c.CheckDown, err = count(v); return err }},
	{Name: "isp-check-up", Default: "30", Value: "count", Doc: "answered rounds in a row before it is restored",
		parse: func(c *Config, v, _ string) (err error) { c.CheckUp, err = count(v); return err }},
	{Name: "isp-mark", Derived: "derived from isp-table: its number, or, when that is larger than the mask's largest id, (number - 1) mod largest + 1 (tables 200 and 201 give 73 and 74 under the default mask)", Value: "number", Doc: "this link's id in ifisp's connection marks (1 to 127 with the default isp-mark-mask); each ISP link needs its own: set it when two tables fold to one id",
		parse: func(c *Config, v, _ string) (err error) { c.Mark.ID, err = markID(v); return err }},
	// The mask's reasons are connmark.DefaultMask's.
	{Name: "isp-mark-mask", Default: connmark.Hex(connmark.DefaultMask), Value: "hex mask, one run of bits", Doc: "the bits of the connection mark that are ifisp's, the same on every ISP stanza; the administrator's bits outside it are never changed",
		parse: func(c *Config, v, _ string) (err error) { c.Mark.Mask, err = markMask(v); return err }},
	{Name: "isp-inbound", Default: "yes", Value: "yes or no", Doc: "connections that arrive by this link (port forwards included) are answered by it, whichever link is preferred: an `fwmark` rule on the inbound mark",
		parse: func(c *Config, v, _ string) (err error) { c.Inbound, err = yesNo(v); return err }},
	{Name: "isp-sticky", Family: Inet, wrongFamily: "an IPv6 flow keeps its link by its own source address already (move it to the interface's inet stanza)", Default: "no", Value: "yes or no", Doc: "flows NATed to this link stay on it until they end, even when a preferred link comes back (new flows take the preferred one): an `fwmark` rule on the outbound mark",
		parse: func(c *Config, v, _ string) (err error) { c.Sticky, err = yesNo(v); return err }},
	{Name: "isp-lan", Family: Inet6, Value: "interface[:subnet-id]", Doc: "LAN interface that gets /64 number subnet-id (hex, default 0) of this ISP's prefix (its first `isp-source` of /64 or shorter, or a 6rd stanza's delegated prefix): the router's address ::1 there, and router advertisements of that /64 from ifisp-watch",
		parse: func(c *Config, v, _ string) error { return c.setLAN("isp-lan", v) }},
	{Name: "isp-rdnss", Family: Inet6, Value: "address list", Doc: "DNS servers announced (RDNSS, RFC 8106) in the router advertisements on the `isp-lan` interface, withdrawn with this ISP's prefix",
		parse: func(c *Config, v, _ string) (err error) { c.RDNSS, err = c.addrs(v); return err }},
	{Name: "6rd-prefix", Family: Inet6, Value: "IPv6 prefix, or dhcp", Doc: "the ISP's 6rd prefix (RFC 5969), on an `inet6 v4tunnel` stanza; `dhcp`: the prefix, relay and IPv4 mask length of DHCP option 212 in the lease of the interface 6rd-local names",
		parse: func(c *Config, v, _ string) (err error) {
			if v == "dhcp" {
				c.sixrd().FromDHCP = true
				return nil
			}
			c.sixrd().Prefix, err = sixrdPrefix(v)
			return err
		}},
	{Name: "6rd-relay", Family: Inet6, Value: "IPv4 address", Doc: "the ISP's 6rd border relay",
		parse: func(c *Config, v, _ string) (err error) { c.sixrd().Relay, err = ipv4(v); return err }},
	{Name: "6rd-ipv4-masklen", Family: Inet6, Default: "0", Value: "0..32", Doc: "leading bits of the IPv4 address shared by the 6rd domain",
		parse: func(c *Config, v, _ string) (err error) { c.sixrd().IPv4MaskLen, err = maskLen(v); return err }},
	{Name: "6rd-local", Family: Inet6, Derived: "the tunnel's local", Value: "interface or IPv4 address", Doc: "whose IPv4 address is embedded in the delegated prefix",
		parse: func(c *Config, v, _ string) error { return c.sixrd().setLocal(v) }},
	{Name: "6rd-lan", Family: Inet6, Value: "interface[:subnet-id]", Doc: "`isp-lan` of a 6rd stanza, numbered from the delegated prefix: the spelling kept from before `isp-lan`",
		parse: func(c *Config, v, _ string) error { c.sixrd(); return c.setLAN("6rd-lan", v) }},
}

// Options returns the table of options, for documentation and the CLI.
func Options() []Option {
	return append([]Option(nil), options...)
}

// DefaultFor returns o's Default on a stanza of family f: the text Parse
// runs through o's parser when the stanza leaves o out ("" for none).
func (o *Option) DefaultFor(f Family) string {
	if f == Inet6 && o.Default6 != "" {
		return o.Default6
	}
	return o.Default
}

// DefaultDoc is o's default as the documentation states it, with quote
// around each literal value ("" when o has none): the value, its inet and
// inet6 values, or what a derived default is derived from.
func (o *Option) DefaultDoc(quote func(string) string) string {
	switch {
	case o.Default6 != "":
		return quote(o.Default) + " (inet), " + quote(o.Default6) + " (inet6)"
	case o.Default != "":
		return quote(o.Default)
	}
	return o.Derived
}

// MarkdownTable renders the options as the table README.md and
// docs/design.md show: internal/optdoc writes it there (go generate
// ./pkg/stanza), and its test fails when a copy differs.
func MarkdownTable() string {
	var b strings.Builder
	b.WriteString("| option | value | meaning |\n| --- | --- | --- |\n")
	for _, o := range options {
		doc := o.Doc
		if d := o.DefaultDoc(func(v string) string { return "`" + v + "`" }); d != "" {
			doc += "; default: " + d
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s |\n", o.Name, o.Value, doc)
	}
	return b.String()
}

// applyDefaults sets the Default of every option that set reports not set
// (left out, or given with a value that was refused), through the option's
// own parser, on a stanza of the option's family; a 6rd option's only on a
// 6rd stanza, which its defaults would otherwise make one of. A default
// that does not parse is ifisp's bug, reported as a problem of the option.
func (c *Config) applyDefaults(set func(name string) bool, bad func(option, value, format string, args ...any)) {
	for i := range options {
		o := &options[i]
		v := o.DefaultFor(c.Family)
		switch {
		case v == "" || set(o.Name):
		case o.Family != "" && o.Family != c.Family:
		case strings.HasPrefix(o.Name, "6rd-") && c.SixRD == nil:
		default:
			if err := o.parse(c, v, ""); err != nil {
				bad(o.Name, "", "its default %q does not parse (a bug in ifisp): %v", v, err)
			}
		}
	}
}

// The health check's defaults, from the options table, for the tests and
// benchmarks that reason about them.
var DefaultCheckInterval, DefaultCheckDown, DefaultCheckUp = func() (time.Duration, int, int) {
	c := &Config{Family: Inet}
	c.applyDefaults(func(string) bool { return false }, func(string, string, string, ...any) {})
	return c.CheckInterval, c.CheckDown, c.CheckUp
}()

// optionPrefixes are the prefixes of the options that are ifisp's: any
// unknown option with one of them is a typo.
var optionPrefixes = []string{"isp-", "snat-", "6rd-"}

// set parses value into c, refusing it on a stanza of the wrong family.
func (o *Option) set(c *Config, value, root string) error {
	switch {
	case o.Family == "" || o.Family == c.Family:
		return o.parse(c, value, root)
	case o.wrongFamily != "":
		return errors.New(o.wrongFamily)
	}
	return fmt.Errorf("only for %s stanzas (this is an %s stanza)", o.Family, c.Family)
}

// findOption returns the option called name, or nil.
func findOption(name string) *Option {
	for i := range options {
		if options[i].Name == name {
			return &options[i]
		}
	}
	return nil
}

// addr parses one address of the stanza's family.
func (c *Config) addr(v string) (netip.Addr, error) {
	a, err := netip.ParseAddr(v)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, errors.New("not an IP address")
	}
	if !c.Family.Contains(a) {
		return netip.Addr{}, fmt.Errorf("an %s address on an %s stanza", familyName(a), c.Family)
	}
	return a, nil
}

// addrs parses a whitespace-separated list of addresses, without repeats.
func (c *Config) addrs(v string) ([]netip.Addr, error) {
	var list []netip.Addr
	for _, f := range strings.Fields(v) {
		a, err := c.addr(f)
		if err != nil {
			return nil, fmt.Errorf("%s: %v", f, err)
		}
		for _, o := range list {
			if o == a {
				return nil, fmt.Errorf("%s: given twice", f)
			}
		}
		list = append(list, a)
	}
	return list, nil
}

// prefixes parses a whitespace-separated CIDR list of the stanza's family,
// without host bits or repeats.
func (c *Config) prefixes(v string) ([]netip.Prefix, error) {
	var list []netip.Prefix
	for _, f := range strings.Fields(v) {
		p, err := prefix(f)
		if err != nil {
			return nil, fmt.Errorf("%s: %v", f, err)
		}
		if !c.Family.Contains(p.Addr()) {
			return nil, fmt.Errorf("%s: an %s prefix on an %s stanza", f, familyName(p.Addr()), c.Family)
		}
		for _, o := range list {
			if o == p {
				return nil, fmt.Errorf("%s: given twice", f)
			}
		}
		list = append(list, p)
	}
	if len(list) == 0 {
		return nil, errors.New("empty list")
	}
	return list, nil
}

// prefix parses a CIDR prefix and refuses host bits, which are always a
// typo in a routing prefix.
func prefix(v string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(v)
	if err != nil {
		return netip.Prefix{}, errors.New("not a CIDR prefix")
	}
	if p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("host bits set, did you mean %s", p.Masked())
	}
	return p, nil
}

// familyName returns the family of a, for messages.
func familyName(a netip.Addr) Family {
	if a.Is4() {
		return Inet
	}
	return Inet6
}

// table resolves isp-table to the number of a table an ISP may have.
func table(v, root string) (int, error) {
	n, err := LookupTable(root, v)
	switch {
	case errors.Is(err, ErrNoTable) && !madeOf(v, alnum+"-+_."): // what iproute2 writes in rt_tables
		return 0, errors.New("not a table name or number")
	case errors.Is(err, ErrNoTable):
		return 0, fmt.Errorf("no such table in /etc/iproute2/rt_tables, rt_tables.d/*.conf or /usr/share/iproute2/rt_tables (add \"NUMBER %s\" to /etc/iproute2/rt_tables.d/isp.conf, or give a number)", v)
	case err != nil:
		return 0, err
	case n == 0 || n == 253 || n == 254 || n == 255:
		return 0, errors.New("reserved table (0, 253, 254, 255 are refused)")
	}
	return n, nil
}

// metric parses a route metric.
func metric(v string) (int, error) {
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil || n > maxUint32 {
		return 0, fmt.Errorf("not a metric (a number from 0 to %d)", maxUint32)
	}
	return int(n), nil
}

// count parses a number of probe rounds.
func count(v string) (int, error) {
	n, err := strconv.ParseUint(v, 10, 16)
	if err != nil || n == 0 {
		return 0, errors.New("not a count (a number from 1 to 65535)")
	}
	return int(n), nil
}

// duration parses a probe period.
func duration(v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, errors.New("not a positive duration (e.g. 200ms, 1s)")
	}
	return d, nil
}

// setSNATTo parses snat-to: an address on an inet stanza, a prefix on an
// inet6 one.
func (c *Config) setSNATTo(v string) (err error) {
	if c.Family == Inet {
		c.SNATTo, err = c.addr(v)
		return err
	}
	c.SNATPrefix, err = prefix(v)
	if err == nil && !c.Family.Contains(c.SNATPrefix.Addr()) {
		return errors.New("not an IPv6 prefix (NPTv6 maps snat-from to it)")
	}
	return err
}

// markID parses isp-mark; whether it fits the mask is checked once the
// mask is known.
func markID(v string) (uint32, error) {
	n, err := strconv.ParseUint(v, 10, 32)
	if err != nil || n == 0 {
		return 0, errors.New("not a link id (a number from 1 up)")
	}
	return uint32(n), nil
}

// markMask parses isp-mark-mask, in hex as iptables and ip rule print it.
func markMask(v string) (uint32, error) {
	n, err := strconv.ParseUint(strings.TrimPrefix(strings.ToLower(v), "0x"), 16, 32)
	if err != nil || !strings.HasPrefix(strings.ToLower(v), "0x") {
		return 0, errors.New("not a hex mask (e.g. 0xff000000)")
	}
	return uint32(n), connmark.CheckMask(uint32(n))
}

// yesNo parses a boolean option as ifupdown's own are written.
func yesNo(v string) (bool, error) {
	switch v {
	case "yes":
		return true, nil
	case "no":
		return false, nil
	}
	return false, errors.New("not yes or no")
}

// ipv4 parses an IPv4 address, whatever the stanza's family.
func ipv4(v string) (netip.Addr, error) {
	a, err := netip.ParseAddr(v)
	if err != nil || !a.Is4() {
		return netip.Addr{}, errors.New("not an IPv4 address")
	}
	return a, nil
}

// sixrdPrefix parses a 6rd prefix: IPv6, at most a /64.
func sixrdPrefix(v string) (netip.Prefix, error) {
	p, err := prefix(v)
	if err != nil {
		return p, err
	}
	if !p.Addr().Is6() || p.Addr().Is4In6() {
		return netip.Prefix{}, errors.New("not an IPv6 prefix")
	}
	if p.Bits() > 64 {
		return netip.Prefix{}, errors.New("longer than /64")
	}
	return p, nil
}

// maskLen parses 6rd-ipv4-masklen.
func maskLen(v string) (int, error) {
	n, err := strconv.ParseUint(v, 10, 8)
	if err != nil || n > 32 {
		return 0, errors.New("not a length from 0 to 32")
	}
	return int(n), nil
}

// isIfname reports whether name is an interface name ifisp accepts: 1 to
// 15 characters, as the kernel allows, from a conservative set (the kernel
// refuses only '/', ':' and whitespace, but a name like "eth0;ls" is more
// likely a mistake than an interface).
func isIfname(name string) bool {
	return len(name) <= 15 && madeOf(name, alnum+"_.-") && name != "." && name != ".."
}

// alnum is the ASCII letters and digits, for madeOf.
const alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// madeOf reports whether s is not empty and made of bytes of set only.
// (Not a regexp: every hook run parses a stanza, and compiling regexps at
// start-up was most of a hook's package initialisation.)
func madeOf(s, set string) bool {
	return s != "" && strings.Trim(s, set) == ""
}

// setLocal parses 6rd-local: an IPv4 address or an interface name.
func (s *SixRD) setLocal(v string) error {
	if a, err := netip.ParseAddr(v); err == nil {
		if !a.Is4() {
			return errors.New("not an IPv4 address")
		}
		s.LocalAddr = a
		return nil
	}
	if !isIfname(v) {
		return errors.New("neither an interface name nor an IPv4 address")
	}
	s.LocalIface = v
	return nil
}

// setLAN parses isp-lan (or its 6rd spelling, option): IFACE or
// IFACE:SUBNET-ID, the id in hex. The two spellings are one option.
func (c *Config) setLAN(option, v string) error {
	if c.LAN != nil {
		return fmt.Errorf("given with %s too (they are one option: keep one)", c.LAN.Option)
	}
	name, id, hasID := strings.Cut(v, ":")
	if !isIfname(name) {
		return errors.New("not an interface name (IFACE or IFACE:SUBNET-ID)")
	}
	lan := &LAN{Option: option, Value: v, Iface: name}
	if hasID {
		n, err := strconv.ParseUint(id, 16, 64)
		if err != nil {
			return fmt.Errorf("subnet id %q is not a hex number", id)
		}
		lan.Subnet = n
	}
	c.LAN = lan
	return nil
}

// sixrd returns c's SixRD, making it on the first 6rd option.
func (c *Config) sixrd() *SixRD {
	if c.SixRD == nil {
		c.SixRD = &SixRD{}
	}
	return c.SixRD
}
