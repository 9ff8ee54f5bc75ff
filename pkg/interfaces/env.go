package interfaces

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Variable is one option as ifupdown holds it for a stanza it configures:
// the stanza's own (an option given twice joined by a newline), its
// method's defaults, and what the method's conversions made of them.
type Variable struct {
	Name, Value string
}

// commands are the options ifupdown runs instead of exporting them.
var commands = map[string]bool{"pre-up": true, "up": true, "down": true, "post-down": true}

// methodDefaults are the defaults of ifupdown 0.8's Linux methods that
// have any ("[value]" in inet.defn, inet6.defn), in their order there.
var methodDefaults = map[string][]Variable{
	"inet static":    {{"broadcast", "+"}},
	"inet6 static":   {{"autoconf", "0"}, {"preferred-lifetime", ""}, {"dad-attempts", "60"}, {"dad-interval", "0.1"}},
	"inet6 v4tunnel": {{"preferred-lifetime", ""}},
	"inet6 6to4":     {{"preferred-lifetime", ""}},
	"inet6 auto":     {{"accept_ra", "2"}, {"request_prefix", "0"}, {"ll-attempts", "60"}, {"ll-interval", "0.1"}},
	"inet6 dhcp":     {{"accept_ra", "1"}, {"request_prefix", "0"}, {"ll-attempts", "60"}, {"ll-interval", "0.1"}},
}

// Variables returns the options ifupdown holds for s when it configures
// the interface iface (the physical interface, s.Name when it is not
// mapped): those Env exports, in ifupdown's order. The conversions are
// those of ifupdown 0.8's Linux methods: `address A/N` becomes address A
// and netmask N (a dotted mask for inet, a classful one for an inet
// address without /N, as ifupdown computes), broadcast "+" or "-" is
// computed, an inet6 static stanza with a gateway gets accept_ra 0. One
// conversion is not made: hwaddress "random" stays "random" (ifupdown
// draws a MAC address; no ifisp hook reads it).
func (s *Stanza) Variables(iface string) []Variable {
	if iface == "" {
		iface = s.Name
	}
	v := &vars{}
	for _, o := range s.Options {
		if commands[o.Name] {
			continue
		}
		if i := v.find(o.Name); i >= 0 {
			v.list[i].Value += "\n" + o.Value
			continue
		}
		v.list = append(v.list, Variable{o.Name, o.Value})
	}
	method := s.Family + " " + s.Method
	for _, d := range methodDefaults[method] {
		if v.find(d.Name) < 0 {
			v.list = append(v.list, d)
		}
	}
	convert(method, iface, v)
	return v.list
}

// Env returns the environment ifupdown 0.8 gives the hooks (and the
// commands) of stanza s in phase (pre-up, post-up, pre-down or post-down)
// for the interface iface ("" for s.Name), as "KEY=value" strings: IFACE,
// LOGICAL, ADDRFAM, METHOD, MODE, PHASE, VERBOSITY=0, PATH, ifupdown's
// own IFUPDOWN_ locks, and every option of Variables as IF_NAME, upper
// case, '-' made '_', other characters than letters, digits and '_'
// dropped. CLASS, which only `--allow` and `--all` set, is left out.
func (s *Stanza) Env(iface, phase string) []string {
	if iface == "" {
		iface = s.Name
	}
	mode := "start"
	if phase == "pre-down" || phase == "post-down" {
		mode = "stop"
	}
	var env []string
	for _, o := range s.Variables(iface) {
		env = append(env, "IF_"+EnvName(o.Name)+"="+o.Value)
	}
	if parent, _, ok := strings.Cut(iface, "."); ok {
		env = append(env, "IFUPDOWN_"+parent+"=parent-lock")
	}
	return append(env,
		"IFUPDOWN_"+iface+"="+phase,
		"IFACE="+iface,
		"LOGICAL="+s.Name,
		"ADDRFAM="+s.Family,
		"METHOD="+s.Method,
		"MODE="+mode,
		"PHASE="+phase,
		"VERBOSITY=0",
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	)
}

// EnvName is the name ifupdown exports option as, without "IF_".
func EnvName(option string) string {
	var b strings.Builder
	for _, r := range option {
		switch {
		case r == '-':
			b.WriteByte('_')
		case r >= 'a' && r <= 'z':
			b.WriteRune(r - 'a' + 'A')
		case r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_':
			b.WriteRune(r)
		}
	}
	return b.String()
}

// vars is a stanza's variables while they are converted.
type vars struct{ list []Variable }

func (v *vars) find(name string) int {
	for i, o := range v.list {
		if o.Name == name {
			return i
		}
	}
	return -1
}

func (v *vars) get(name string) (string, bool) {
	if i := v.find(name); i >= 0 {
		return v.list[i].Value, true
	}
	return "", false
}

// convert runs option through f in place, when it is set.
func (v *vars) convert(option string, f func(string) string) {
	if i := v.find(option); i >= 0 {
		v.list[i].Value = f(v.list[i].Value)
	}
}

// derive sets newOption, when it is not set yet, to f of option's value,
// when option is set (ifupdown's "option fn =newoption?").
func (v *vars) derive(option, newOption string, f func(string) string) {
	value, ok := v.get(option)
	if !ok || v.find(newOption) >= 0 {
		return
	}
	v.list = append(v.list, Variable{newOption, f(value)})
}

// convert applies the conversions of ifupdown 0.8's Linux method (FAMILY
// METHOD), in their order in the .defn files.
func convert(method, iface string, v *vars) {
	switch method {
	case "inet static":
		v.convert("hwaddress", cleanHWAddress)
		v.derive("address", "netmask", v4Mask)
		v.convert("address", func(a string) string { return token(a, 0, a) })
		v.convert("broadcast", func(b string) string { return v4Broadcast(v, b) })
	case "inet manual", "inet dhcp", "inet6 manual", "inet6 dhcp":
		v.convert("hwaddress", cleanHWAddress)
	case "inet6 static":
		v.convert("hwaddress", cleanHWAddress)
		v.convert("preferred-lifetime", func(p string) string { return preferredLifetime(iface, p) })
		v.derive("address", "netmask", func(a string) string { return token(a, 1, "") })
		v.convert("address", func(a string) string { return token(a, 0, "") })
		v.derive("gateway", "accept_ra", func(string) string { return "0" })
	case "inet6 v4tunnel":
		v.convert("preferred-lifetime", func(p string) string { return preferredLifetime(iface, p) })
	case "inet6 6to4":
		v.derive("local", "hexaddress", hexAddress)
		v.convert("preferred-lifetime", func(p string) string { return preferredLifetime(iface, p) })
	}
}

// token returns the n-th '/'-separated token of s (empty tokens skipped,
// as strtok does), or missing.
func token(s string, n int, missing string) string {
	tokens := strings.FieldsFunc(s, func(r rune) bool { return r == '/' })
	if n < len(tokens) {
		return tokens[n]
	}
	return missing
}

// cleanHWAddress drops the class word ifupdown accepts before a MAC
// address ("ether 02:...").
func cleanHWAddress(h string) string {
	class, rest, ok := strings.Cut(h, " ")
	if !ok {
		return h
	}
	switch strings.ToLower(class) {
	case "ether", "ax25", "arcnet", "netrom":
		return rest
	}
	return h
}

// v4Mask is ifupdown's compute_v4_mask: the dotted netmask of "A/N" or
// "A/MASK", or A's classful one for a bare A. A value it cannot read is
// kept as it is.
func v4Mask(value string) string {
	addr, bits, hasBits := strings.Cut(strings.TrimLeft(value, "/"), "/")
	a, err := netip.ParseAddr(addr)
	if err != nil || !a.Is4() {
		return value
	}
	bits = token(bits, 0, "")
	width := -1
	switch {
	case !hasBits || bits == "":
		switch b := a.As4()[0]; {
		case b <= 127:
			width = 8
		case b <= 191:
			width = 16
		case b <= 223:
			width = 24
		default:
			width = 32
		}
	default:
		if m, err := netip.ParseAddr(bits); err == nil && m.Is4() {
			return m.String()
		}
		n, err := strconv.Atoi(leadingDigits(bits))
		if err != nil || n > 32 {
			return value
		}
		width = n
	}
	return maskString(width)
}

// maskString writes a netmask of width bits dotted.
func maskString(width int) string {
	m := ^uint32(0)
	if width < 32 {
		m = ^(uint32(1)<<(32-width) - 1)
	}
	return fmt.Sprintf("%d.%d.%d.%d", m>>24, m>>16&0xff, m>>8&0xff, m&0xff)
}

// leadingDigits returns the digits s starts with, as sscanf's %d reads.
func leadingDigits(s string) string {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	return s[:i]
}

// v4Broadcast is ifupdown's compute_v4_broadcast: "+" is the address with
// every host bit set, "-" with none (for a /31, 255.255.255.255 and
// 0.0.0.0); anything else, or an address or netmask it cannot read, stays.
func v4Broadcast(v *vars, b string) string {
	if b != "+" && b != "-" {
		return b
	}
	addr, _ := v.get("address")
	mask, _ := v.get("netmask")
	a, err := netip.ParseAddr(addr)
	m, merr := netip.ParseAddr(mask)
	if err != nil || merr != nil || !a.Is4() || !m.Is4() {
		return b
	}
	av, mv := u32(a), u32(m)
	var r uint32
	switch {
	case mv == 0xfffffffe && b == "+":
		r = 0xffffffff
	case mv == 0xfffffffe:
		r = 0
	case b == "+":
		r = av | ^mv
	default:
		r = av & mv
	}
	return netip.AddrFrom4([4]byte{byte(r >> 24), byte(r >> 16), byte(r >> 8), byte(r)}).String()
}

func u32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// preferredLifetime is ifupdown's set_preferred_lft: an alias interface
// (eth0:1) gets 0.
func preferredLifetime(iface, p string) string {
	if strings.Contains(iface, ":") {
		return "0"
	}
	return p
}

// hexAddress is ifupdown's make_hex_address for 6to4: 192.0.2.1 is
// c000:0201.
func hexAddress(local string) string {
	a, err := netip.ParseAddr(local)
	if err != nil || !a.Is4() {
		return local
	}
	b := a.As4()
	return fmt.Sprintf("%02x%02x:%02x%02x", b[0], b[1], b[2], b[3])
}
