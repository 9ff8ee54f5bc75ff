// Package lease makes a WAN follow its address when a DHCP client or pppd
// learns it, long after ifup: a renewed lease with another address or
// gateway, a lease lost, a PPP session that connects again with another
// address. Each event becomes a new plan for the same link, through the
// very hooks ifup runs (package linkhook), under the one lock.
//
// The clients hand their values over in the environment they give their
// scripts; the values come from the network, so they are read here as
// data, each checked for what it must be (an interface name, an address),
// and never given to a shell.
package lease

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/ifisp/ifisp/pkg/sixrd"
	"github.com/ifisp/ifisp/pkg/stanza"
)

// Kind is what an event does to its link.
type Kind int

const (
	// Ignored events change nothing (PREINIT, a DHCPv6 event, ...).
	Ignored Kind = iota
	// Bound: the link has an address (and a gateway): up, on it.
	Bound
	// Lost: the lease or session is gone: the link counts as down.
	Lost
	// Delegated: the DHCPv6 server delegated Prefix (again, or anew).
	Delegated
	// Undelegated: Prefix is no longer delegated (a lifetime of 0, the
	// binding expired or was released). It goes at once, though dhclient
	// may bring the next prefix a moment later: packets from it would
	// leave by an ISP that no longer routes it back.
	Undelegated
)

// Event is one lease event, read and checked.
type Event struct {
	Client string // "dhclient" or "ppp"
	Reason string // dhclient's reason, or "ip-up", "ip-down"
	Kind   Kind
	Iface  string // the kernel's interface
	Family stanza.Family
	// Address and Gateway are the lease's (Bound): the router option,
	// or the PPP peer; a DHCPv6 lease has no gateway (it comes by router
	// advertisement).
	Address, Gateway netip.Addr
	// Prefix is the delegated prefix (Delegated, Undelegated).
	Prefix netip.Prefix
	// Preferred and Valid are the lifetimes the client gave what the
	// link holds by lease, counted from the event: a delegated prefix's
	// (Delegated), an IPv4 lease's (Bound, inet: its lease time, both);
	// 0 when it gave none.
	Preferred, Valid time.Duration
	// SixRD is the lease's option 212 (new_option_6rd), nil for none.
	SixRD *sixrd.Option
	// Stanza is the ifupdown interface of a PPP session's stanza (its
	// ipparam, or the provider pppd was called with); "" for DHCP, whose
	// interface is the stanza's.
	Stanza string
}

// String names the event for a log line: "dhclient RENEW on wanb".
func (e Event) String() string { return fmt.Sprintf("%s %s on %s", e.Client, e.Reason, e.Iface) }

// dhclientKinds is what each of dhclient-script's reasons does to an IPv4
// link. TIMEOUT is a lease from the lease file that dhclient found still
// usable; the DHCPv6 reasons are ignored.
var dhclientKinds = map[string]Kind{
	"BOUND": Bound, "RENEW": Bound, "REBIND": Bound, "REBOOT": Bound, "TIMEOUT": Bound,
	"EXPIRE": Lost, "FAIL": Lost, "RELEASE": Lost, "STOP": Lost,
}

// dhclient6Kinds is what each DHCPv6 reason does: the bindings of
// `dhclient -6`, one script run each, an address (IA_NA) or a delegated
// prefix (IA_PD). DEPREF6 only deprecates what stays bound.
var dhclient6Kinds = map[string]Kind{
	"BOUND6": Bound, "RENEW6": Bound, "REBIND6": Bound,
	"EXPIRE6": Undelegated, "RELEASE6": Undelegated, "STOP6": Undelegated,
}

// Dhclient reads the event dhclient-script was run for from its
// environment (env's "KEY=value" form): reason, interface, new_ip_address,
// new_routers; for DHCPv6, new_ip6_address or new_ip6_prefix with
// new_max_life, old_ip6_prefix. An error names the value that is wrong;
// the link is then left as it is.
func Dhclient(env []string) (Event, error) {
	v := vars(env)
	e := Event{Client: "dhclient", Family: stanza.Inet}
	var err error
	if e.Reason, err = word(v, "reason"); err != nil {
		return e, err
	}
	if e.Iface, err = iface(v, "interface"); err != nil {
		return e, err
	}
	if kind, ok := dhclient6Kinds[e.Reason]; ok {
		e.Family = stanza.Inet6
		return dhclient6(v, e, kind)
	}
	e.Kind = dhclientKinds[e.Reason]
	if e.Kind != Bound {
		return e, nil
	}
	if e.Address, err = addr4(v, "new_ip_address"); err != nil {
		return e, err
	}
	routers := v["new_routers"]
	if strings.TrimSpace(routers) == "" {
		return e, fmt.Errorf("the lease of %s has no router (option 3): no gateway to route %s by", e.Address, e.Iface)
	}
	first, _, _ := strings.Cut(strings.TrimSpace(routers), " ")
	if e.Gateway, err = parse4("new_routers", first); err != nil {
		return e, err
	}
	if e.Valid, err = seconds(v, "new_dhcp_lease_time"); err != nil {
		return e, err
	}
	e.Preferred = e.Valid
	if o := v["new_option_6rd"]; o != "" {
		opt, err := sixrd.ParseOption(o)
		if err != nil {
			return e, fmt.Errorf("new_option_6rd: %w", err)
		}
		e.SixRD = &opt
	}
	return e, nil
}

// dhclient6 reads a DHCPv6 binding: a delegated prefix (new_ip6_prefix;
// new_max_life 0 takes it back) or, for an end of the bindings, the prefix
// that ends (old_ip6_prefix), else an address (new_ip6_address).
func dhclient6(v map[string]string, e Event, kind Kind) (Event, error) {
	var err error
	switch {
	case kind == Undelegated:
		if v["old_ip6_prefix"] == "" {
			return e, nil // an address binding ends: the link keeps what the kernel has
		}
		e.Kind = Undelegated
		e.Prefix, err = prefix6(v, "old_ip6_prefix")
	case v["new_ip6_prefix"] != "":
		e.Kind = Delegated
		if e.Prefix, err = prefix6(v, "new_ip6_prefix"); err != nil {
			return e, err
		}
		if e.Valid, err = seconds(v, "new_max_life"); err != nil {
			return e, err
		}
		if e.Preferred, err = seconds(v, "new_preferred_life"); err != nil {
			return e, err
		}
		if v["new_max_life"] != "" && e.Valid == 0 {
			e.Kind = Undelegated
		}
	case v["new_ip6_address"] != "":
		e.Kind = Bound
		a, perr := netip.ParseAddr(v["new_ip6_address"])
		if perr != nil || !a.Is6() || a.Is4In6() || !a.IsGlobalUnicast() {
			return e, fmt.Errorf("new_ip6_address %s is not a unicast IPv6 address", shown(v["new_ip6_address"]))
		}
		e.Address = a
	}
	return e, err
}

// prefix6 is v[name], which must be a global IPv6 prefix of /64 or
// shorter (isp-lan numbers /64s from it), written with its host bits zero.
func prefix6(v map[string]string, name string) (netip.Prefix, error) {
	s := v[name]
	p, err := netip.ParsePrefix(s)
	switch {
	case err != nil || !p.Addr().Is6() || p.Addr().Is4In6() || !p.Addr().IsGlobalUnicast() || p.Addr().Zone() != "":
		return netip.Prefix{}, fmt.Errorf("%s %s is not an IPv6 prefix", name, shown(s))
	case p.Bits() > 64:
		return netip.Prefix{}, fmt.Errorf("%s %s is longer than /64: no /64 of it can number a LAN", name, shown(s))
	case p.Masked() != p:
		return netip.Prefix{}, fmt.Errorf("%s %s has bits set past its length", name, shown(s))
	}
	return p, nil
}

// PPP reads the event of pppd's ip-up (up) or ip-down script from its
// environment: PPP_IFACE, PPP_LOCAL, PPP_REMOTE, and the stanza from
// PPP_IPPARAM, else the provider's call file (CALL_FILE, which pon sets
// to the provider's name).
func PPP(env []string, up bool) (Event, error) {
	v := vars(env)
	e := Event{Client: "ppp", Reason: "ip-down", Kind: Lost, Family: stanza.Inet}
	if up {
		e.Reason, e.Kind = "ip-up", Bound
	}
	var err error
	if e.Iface, err = iface(v, "PPP_IFACE"); err != nil {
		return e, err
	}
	name := "PPP_IPPARAM"
	if v[name] == "" {
		name = "CALL_FILE"
	}
	if e.Stanza, err = iface(v, name); err != nil {
		return e, fmt.Errorf("%w (name the stanza with `ipparam STANZA` in the peers file)", err)
	}
	if !up {
		// The session's address, when pppd gives it, says which
		// session ended: an old one's ip-down must not end the next.
		if v["PPP_LOCAL"] != "" {
			e.Address, err = addr4(v, "PPP_LOCAL")
		}
		return e, err
	}
	if e.Address, err = addr4(v, "PPP_LOCAL"); err != nil {
		return e, err
	}
	if e.Gateway, err = addr4(v, "PPP_REMOTE"); err != nil {
		return e, err
	}
	return e, nil
}

// seconds is v[name], a lifetime in seconds as DHCP writes it (32 bits;
// 0 when the variable is not there).
func seconds(v map[string]string, name string) (time.Duration, error) {
	s := v[name]
	if s == "" {
		return 0, nil
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("%s %s is not a number of seconds", name, shown(s))
	}
	return time.Duration(n) * time.Second, nil
}

// vars maps env's variables.
func vars(env []string) map[string]string {
	m := make(map[string]string, len(env))
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return m
}

// maxShown is how much of a bad value a message quotes.
const maxShown = 64

// shown quotes a value from the network for a log line: escaped, and cut
// short.
func shown(s string) string {
	if len(s) > maxShown {
		return fmt.Sprintf("%q... (%d bytes)", s[:maxShown], len(s))
	}
	return fmt.Sprintf("%q", s)
}

// word is v[name], which must be a word of capitals and digits.
func word(v map[string]string, name string) (string, error) {
	s := v[name]
	if s == "" || len(s) > 16 || strings.Trim(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") != "" {
		return "", fmt.Errorf("%s %s is not a reason", name, shown(s))
	}
	return s, nil
}

// iface is v[name], which must be an interface name the kernel allows:
// 1 to 15 bytes, none of them '/', ':', a blank or a control character,
// and neither "." nor "..".
func iface(v map[string]string, name string) (string, error) {
	s := v[name]
	ok := s != "" && len(s) <= 15 && s != "." && s != ".."
	for _, r := range s {
		if r <= ' ' || r >= 0x7f || r == '/' || r == ':' {
			ok = false
		}
	}
	if !ok {
		return "", fmt.Errorf("%s %s is not an interface name", name, shown(s))
	}
	return s, nil
}

// addr4 is v[name], which must be a unicast IPv4 address.
func addr4(v map[string]string, name string) (netip.Addr, error) { return parse4(name, v[name]) }

func parse4(name, s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() || !a.IsGlobalUnicast() {
		return netip.Addr{}, fmt.Errorf("%s %s is not a unicast IPv4 address", name, shown(s))
	}
	return a, nil
}
