// Binary ifisp-route is the ifupdown hook that installs an ISP's source
// routing: its table, its `from` rules and its optional main-table default.
//
// Linked into if-pre-up.d it checks the stanza against the kernel (the
// table is no other link's, the metric is free) before ifupdown changes
// anything; into if-up.d it installs the routing; into if-down.d it
// withdraws the main-table defaults through the link before ifupdown
// deconfigures it; into if-post-down.d it removes the rules and the table
// once the address is gone.
//
// It also keeps ifisp-watch's registry: a link is recorded, with the
// main-table defaults ifup left, once its routes are in, and forgotten
// before its defaults are withdrawn. Both happen under the run directory's
// lock (package hook takes it), so the monitor never acts on a link halfway
// through ifup or ifdown.
package main

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

func main() {
	hook.Main("ifisp-route", hook.Phases{
		"post-up":   do(up),
		"pre-down":  withdraw,
		"post-down": do(down),
	})
}

// do runs f on the stanza's link. A 6rd stanza's routing is ifisp-6rd's:
// only it knows the delegated prefix.
func do(f func(*netlink.Handle, *policy.Link) error) hook.Action {
	return func(h *netlink.Handle, c *stanza.Config) error {
		if c.SixRD != nil {
			return nil
		}
		l, err := policy.Resolve(h, c)
		if err != nil {
			return err
		}
		return f(h, l)
	}
}

// up installs the routing and, with isp-lan, first the router's address on
// the LAN (lan.Add). The link's plan is recorded ahead of any change, so
// that whatever this run does, killed or not, ifdown knows it is the
// link's; a failed routing takes back an address this run added.
func up(h *netlink.Handle, l *policy.Link) error {
	c := l.Config
	old, err := registry.Read(c.Iface, c.Family)
	if err != nil {
		return err
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

// down removes what the link's record says is its own (what its stanza
// plans, for a link with no record: a refused or never-finished ifup), less
// what other links' records keep, then forgets the link.
func down(h *netlink.Handle, l *policy.Link) error {
	c := l.Config
	rec, err := registry.Read(c.Iface, c.Family)
	if err != nil {
		return err
	}
	others, err := registry.Others(c.Iface, c.Family)
	if err != nil {
		return err
	}
	own := l.Plan()
	var errs []error
	if rec != nil {
		if !rec.Routing.Empty() { // an older ifisp's record has no plan
			own = rec.Routing
		}
		if rec.LANAddress != nil {
			errs = append(errs, lan.Remove(h, c.Iface, *rec.LANAddress))
		}
	}
	errs = append(errs, policy.Down(h, l, own, registry.Plans(others)...))
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return registry.Forget(c.Iface, c.Family)
}
