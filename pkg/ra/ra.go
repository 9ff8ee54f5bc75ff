// Package ra sends IPv6 router advertisements (RFC 4861) on the LAN
// interfaces that carry ISP prefixes, with RFC 8475's conditional
// lifetimes: the prefix of an ISP that failed is announced with preferred
// lifetime 0 (hosts keep the address, and the connections on it, but pick
// another ISP's address for new ones), and with its full lifetimes again
// when the ISP heals. A prefix that goes away altogether (ifdown) stays
// announced, deprecated, for what remains of its valid lifetime. No
// lifetime announced outlasts what the ISP gave: RFC 9096's limits, and
// a delegated prefix's own remaining lifetimes (L-15).
//
// The caller (ifisp-watch) says what each LAN's prefixes are, and which are
// deprecated, with Set; the Sender announces every change at once, answers
// router solicitations, and advertises periodically. It stays silent on an
// interface where it hears another router announce one of its prefixes:
// two senders of one prefix contradict each other's lifetimes.
package ra

import (
	"context"
	"log"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/mdlayher/ndp"
)

// The timing and lifetimes of the advertisements: radvd's defaults (RFC
// 4861 section 6.2.1) for the timing and the router lifetime; RFC 9096's
// ND_VALID_LIMIT and ND_PREFERRED_LIMIT for the prefixes, so that hosts
// drop a prefix the router stopped announcing (it rebooted and forgot
// it, the ISP renumbered without a word) within 90 minutes, not days;
// and RFC 8106's recommended 3 × MaxInterval for the RDNSS lifetime.
const (
	MaxInterval       = 600 * time.Second
	MinInterval       = 200 * time.Second // 0.33 × MaxInterval
	RouterLifetime    = 1800 * time.Second
	ValidLifetime     = 5400 * time.Second
	PreferredLifetime = 2700 * time.Second
	RDNSSLifetime     = 3 * MaxInterval
)

// Prefix is one ISP's /64 on a LAN interface.
type Prefix struct {
	Prefix netip.Prefix
	// Deprecated announces it with preferred lifetime 0: its ISP is down
	// while another is up.
	Deprecated bool
	// RDNSS are the DNS servers announced with it (isp-rdnss).
	RDNSS []netip.Addr
	// PreferredUntil and ValidUntil are when the ISP's delegation of
	// the prefix stops being preferred and valid, as the DHCP client
	// last said (zero: no end known, a static prefix): the lifetimes
	// announced never outlast them (RFC 9096 L-15).
	PreferredUntil, ValidUntil time.Time
}

// Sender announces prefixes on LAN interfaces.
type Sender struct {
	ctx context.Context
	log *log.Logger

	mu     sync.Mutex
	ifaces map[string]*lanIface
}

// New returns a Sender that runs until ctx ends, logging to logger.
func New(ctx context.Context, logger *log.Logger) *Sender {
	return &Sender{ctx: ctx, log: logger, ifaces: map[string]*lanIface{}}
}

// Set makes lans, LAN interface name to its prefixes, what the Sender
// announces from now on. A prefix's place in its list is its place in the
// advertisement: list the preferred ISP's last (Linux hosts configure the
// prefixes of one advertisement in its order, and on a tie in RFC 6724's
// rules pick the address configured last). An interface or prefix left out
// is announced as gone. Set never blocks on the network.
func (s *Sender) Set(lans map[string][]Prefix) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, name := range slices.Sorted(maps.Keys(lans)) {
		li := s.ifaces[name]
		if li == nil {
			li = newLANIface(s.ctx, name, s.log)
			s.ifaces[name] = li
		}
		li.set(lans[name])
	}
	for name, li := range s.ifaces {
		if _, ok := lans[name]; !ok {
			li.set(nil)
		}
	}
}

// entry is a prefix as one interface announces it.
type entry struct {
	Prefix
	// gone is when the prefix left the caller's list (its link went down
	// by ifdown), zero while it is in it.
	gone time.Time
}

// lifetimes is what an advertisement says of an entry at now, and
// whether it is still worth saying. A gone prefix is announced deprecated
// with what remains of the valid lifetime it had when it went (RFC 7084
// L-13's "the lower of the current valid lifetime and two hours": with
// ValidLifetime under two hours, always the former), counting down.
func (e *entry) lifetimes(now time.Time) (valid, preferred time.Duration, ok bool) {
	validUntil, preferredUntil := now.Add(ValidLifetime), now.Add(PreferredLifetime)
	if !e.gone.IsZero() {
		validUntil, preferredUntil = e.gone.Add(ValidLifetime), now
	}
	if e.Deprecated {
		preferredUntil = now
	}
	validUntil = earliest(validUntil, e.ValidUntil)
	preferredUntil = earliest(preferredUntil, e.PreferredUntil, validUntil)
	valid = max(validUntil.Sub(now).Truncate(time.Second), 0)
	preferred = max(preferredUntil.Sub(now).Truncate(time.Second), 0)
	return valid, preferred, valid > 0
}

// earliest is the earliest of t and the non-zero times of limits.
func earliest(t time.Time, limits ...time.Time) time.Time {
	for _, l := range limits {
		if !l.IsZero() && l.Before(t) {
			t = l
		}
	}
	return t
}

// shortened says whether the ISP cut p's lifetimes short of was's: a
// change to announce at once. A renewal, which only extends them, is not.
func shortened(was, p Prefix) bool {
	cut := func(was, now time.Time) bool { return !now.IsZero() && (was.IsZero() || now.Before(was)) }
	return cut(was.ValidUntil, p.ValidUntil) || cut(was.PreferredUntil, p.PreferredUntil)
}

// Message builds the advertisement of entries at now, from a router with
// link-layer address mac (nil for none).
func message(entries []entry, mac net.HardwareAddr, now time.Time) *ndp.RouterAdvertisement {
	ra := &ndp.RouterAdvertisement{CurrentHopLimit: 64, RouterSelectionPreference: ndp.Medium}
	var live, dead []netip.Addr
	for i := range entries {
		e := &entries[i]
		valid, preferred, ok := e.lifetimes(now)
		if !ok {
			continue
		}
		ra.Options = append(ra.Options, &ndp.PrefixInformation{
			PrefixLength: uint8(e.Prefix.Prefix.Bits()), OnLink: true, AutonomousAddressConfiguration: true,
			ValidLifetime: valid, PreferredLifetime: preferred, Prefix: e.Prefix.Prefix.Addr(),
		})
		if e.gone.IsZero() {
			// The router serves the LAN while any of its ISPs is up
			// (or, last resort, while any is registered at all).
			ra.RouterLifetime = RouterLifetime
		}
		if preferred > 0 {
			live = append(live, e.RDNSS...)
		} else {
			dead = append(dead, e.RDNSS...)
		}
	}
	live = uniq(live)
	dead = slices.DeleteFunc(uniq(dead), func(a netip.Addr) bool { return slices.Contains(live, a) })
	if len(live) > 0 {
		ra.Options = append(ra.Options, &ndp.RecursiveDNSServer{Lifetime: RDNSSLifetime, Servers: live})
	}
	if len(dead) > 0 {
		// Lifetime 0: hosts stop using a failed ISP's resolvers.
		ra.Options = append(ra.Options, &ndp.RecursiveDNSServer{Lifetime: 0, Servers: dead})
	}
	if len(mac) == 6 {
		ra.Options = append(ra.Options, &ndp.LinkLayerAddress{Direction: ndp.Source, Addr: mac})
	}
	return ra
}

// merge makes the entries of the caller's new list want, keeping those
// that left it as gone (since now) and dropping gone ones whose valid
// lifetime ran out. It reports whether what the advertisement says
// changed other than by the passing of time.
func merge(have []entry, want []Prefix, now time.Time) ([]entry, bool) {
	var out []entry
	changed := false
	for _, p := range want {
		i := slices.IndexFunc(have, func(e entry) bool { return e.Prefix.Prefix == p.Prefix })
		if i < 0 || !have[i].gone.IsZero() || have[i].Deprecated != p.Deprecated || !slices.Equal(have[i].RDNSS, p.RDNSS) || shortened(have[i].Prefix, p) {
			changed = true
		}
		out = append(out, entry{Prefix: p})
	}
	for _, e := range have {
		if slices.ContainsFunc(want, func(p Prefix) bool { return p.Prefix == e.Prefix.Prefix }) {
			continue
		}
		if e.gone.IsZero() {
			e.gone, changed = now, true
		}
		if _, _, ok := e.lifetimes(now); ok {
			// Gone prefixes go first: the preferred ISP's stays last.
			out = append([]entry{e}, out...)
		}
	}
	// The order of the live prefixes is the caller's: a new order is a
	// change too (it tells hosts which ISP is preferred).
	if !changed {
		changed = !slices.EqualFunc(live(have), live(out), func(a, b entry) bool { return a.Prefix.Prefix == b.Prefix.Prefix })
	}
	return out, changed
}

// live returns the entries that are in the caller's list.
func live(entries []entry) []entry {
	return slices.DeleteFunc(slices.Clone(entries), func(e entry) bool { return !e.gone.IsZero() })
}

func uniq(list []netip.Addr) []netip.Addr {
	var out []netip.Addr
	for _, a := range list {
		if !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}
