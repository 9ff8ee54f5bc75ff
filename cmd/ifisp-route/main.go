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
// the LAN (lan.Native); a failed routing takes back an address this run
// added.
func up(h *netlink.Handle, l *policy.Link) error {
	c := l.Config
	s, hasLAN, err := lan.Native(c)
	if err != nil {
		return err
	}
	var lanNet *lan.Subnet
	if hasLAN {
		_, had := lan.Read(lan.File(c))
		if err := lan.Publish(h, c.Iface, lan.File(c), lan.Published{Prefix: s.Prefix, Address: s.Address(), Dev: s.Iface}); err != nil {
			return err
		}
		routed := *l
		routed.Config = lan.Routed(c, s)
		if err := policy.Up(h, &routed); err != nil {
			if !had {
				err = errors.Join(err, lan.Unpublish(h, c.Iface, lan.File(c)))
			}
			return err
		}
		lanNet = &s
	} else if err := policy.Up(h, l); err != nil {
		return err
	}
	return registry.Record(h, l, lanNet)
}

// withdraw forgets the link, so that the monitor lets go of it, and
// withdraws its main-table defaults; for 6rd stanzas too, which ifisp-6rd
// registers but has no if-down.d hook of its own.
func withdraw(h *netlink.Handle, c *stanza.Config) error {
	if err := registry.Forget(c.Iface, c.Family); err != nil {
		return err
	}
	l, err := policy.Resolve(h, c)
	if err != nil {
		return err
	}
	return policy.Withdraw(h, l)
}

func down(h *netlink.Handle, l *policy.Link) error {
	if err := registry.Forget(l.Config.Iface, l.Config.Family); err != nil {
		return err
	}
	return errors.Join(lan.Unpublish(h, l.Config.Iface, lan.File(l.Config)), policy.Down(h, l))
}
