package linkhook

import (
	"errors"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/ifisp/ifisp/pkg/hook"
	"github.com/ifisp/ifisp/pkg/lan"
	"github.com/ifisp/ifisp/pkg/policy"
	"github.com/ifisp/ifisp/pkg/registry"
	"github.com/ifisp/ifisp/pkg/stanza"
)

// Route is ifisp-route's: the link's source routing, its LAN address and
// its record.
// A 6rd stanza's routing is ifisp-6rd's: only it knows the delegated
// prefix.
var Route = awaiting(hook.Phases{
	"post-up":   {For: not6rd, Do: do(routeUp)},
	"pre-down":  {Do: withdraw},
	"post-down": {For: not6rd, Do: do(routeDown)},
}, sessionAnchor)

// do runs f on the stanza's link.
func do(f func(*netlink.Handle, *policy.Link) error) hook.Action {
	return func(h *netlink.Handle, c *stanza.Config) error {
		l, err := policy.Resolve(h, c)
		if err != nil {
			return err
		}
		return f(h, l)
	}
}

// routeUp installs the routing and, with isp-lan, first the router's address on
// the LAN (lan.Add). The link's plan is recorded ahead of any change, so
// that whatever this run does, killed or not, ifdown knows it is the
// link's; a failed routing takes back an address this run added.
func routeUp(h *netlink.Handle, l *policy.Link) error {
	c := l.Config
	old, err := registry.Read(c.Iface, c.Family)
	if err != nil {
		return err
	}
	if !l.Gateway.IsValid() && old != nil && old.Complete() && old.Withdrawn {
		// A re-run (a renumbered prefix) while ifisp-watch has the
		// link's defaults withdrawn: the main table has no default to
		// take the gateway from, but the withdrawn ones have it.
		l.Gateway = old.Gateway
	}
	if c.WaitsForRA() && !l.Gateway.IsValid() && l.Index != 0 && (old == nil || !old.Complete()) {
		// DHCPv6 has no route: the ISP's first router advertisement may
		// come minutes after dhclient returned. ifisp-watch brings the
		// link up when its default comes.
		wait := &registry.Link{Iface: c.Iface, Family: c.Family, Stanza: c.Env, Lost: true, Delegated: c.Delegated}
		if old != nil {
			wait.Chains = old.Chains
		}
		return registry.Write(wait)
	}
	others, err := registry.Others(c.Iface, c.Family)
	if err != nil {
		return err
	}
	s, hasLAN, err := lan.Native(c)
	if err != nil {
		return err
	}
	routed, lanNet, addr := l, (*lan.Subnet)(nil), (*lan.Published)(nil)
	var had *lan.Published // the address an earlier run recorded
	if hasLAN {
		if old != nil {
			had = old.LANAddress
		}
		a, err := lan.Claim(h, c.Iface, had, lan.Published{Prefix: s.Prefix, Address: s.Address(), Dev: s.Iface})
		if err != nil {
			return err
		}
		routed = &policy.Link{Config: lan.Routed(c, s), Index: l.Index, Address: l.Address, Gateway: l.Gateway}
		lanNet, addr = &s, &a
	}
	rec := registry.Plan(routed, old, lanNet, addr)
	if err := registry.Write(rec); err != nil {
		return err
	}
	if addr != nil {
		if err := lan.Add(h, c.Iface, *addr); err != nil {
			return err
		}
	}
	if err := policy.Up(h, routed, registry.Plans(others)...); err != nil {
		if addr != nil && had == nil {
			err = errors.Join(err, lan.Remove(h, c.Iface, *addr))
		}
		return err
	}
	if old != nil && old.LANAddress != nil && (addr == nil || *old.LANAddress != *addr) {
		// Renumbered (another delegated prefix), or no prefix any more.
		if err := lan.Remove(h, c.Iface, *old.LANAddress); err != nil {
			return err
		}
	}
	return registry.Record(h, l.Index, rec)
}

// withdraw marks the link's record as going down, so that the monitor
// lets go of it, and withdraws its main-table defaults; for 6rd stanzas
// too, which ifisp-6rd registers but has no if-down.d hook of its own.
func withdraw(h *netlink.Handle, c *stanza.Config) error {
	rec, err := registry.Read(c.Iface, c.Family)
	if err != nil {
		return err
	}
	if rec != nil {
		rec.Since = time.Time{}
		if err := registry.Write(rec); err != nil {
			return err
		}
	}
	l, err := policy.Resolve(h, c)
	if err != nil {
		return err
	}
	return policy.Withdraw(h, l)
}

// routeDown removes what the link's record says is its own (what its stanza
// plans, for a link with no record: a refused or never-finished ifup), less
// what other links' records keep, then forgets the link, but for its
// chains: ifisp-snat's post-down, next, removes them and the rest of the
// record.
func routeDown(h *netlink.Handle, l *policy.Link) error {
	c := l.Config
	rec, err := registry.Read(c.Iface, c.Family)
	if err != nil {
		return err
	}
	var errs []error
	if rec != nil && rec.LANAddress != nil {
		errs = append(errs, lan.Remove(h, c.Iface, *rec.LANAddress))
	}
	errs = append(errs, registry.RemoveRouting(h, l, rec))
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if rec != nil && rec.Chains != nil {
		return registry.Write(rec.Leaves())
	}
	return registry.Forget(c.Iface, c.Family)
}
