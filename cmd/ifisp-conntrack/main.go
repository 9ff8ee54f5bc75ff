// Binary ifisp-conntrack is the ifupdown hook that reconciles conntrack
// after a route change, by connection mark (package reconcile): in
// if-down.d, after ifisp-route has withdrawn the link's default, it deletes
// the flows NATed to the link; last in if-up.d, when the link has taken the
// default, the flows NATed to the other links (but an isp-sticky link's),
// and for inet dhcp the flows that left the link before its SNAT rule was
// in. A static link that comes up as the backup costs no conntrack work at
// all.
//
// It acts for inet stanzas, and for inet6 ones with NPTv6 (snat-from): any
// other IPv6 flow's source is its host's own address, which no conntrack
// delete can move to another link.
package main

import (
	"fmt"

	"github.com/vishvananda/netlink"

	"github.com/ifisp/ifisp/pkg/hook"
	"github.com/ifisp/ifisp/pkg/reconcile"
	"github.com/ifisp/ifisp/pkg/registry"
	"github.com/ifisp/ifisp/pkg/stanza"
)

func main() {
	hook.Main("ifisp-conntrack", hook.Phases{
		"post-up":  reconciled(took),
		"pre-down": reconciled(left),
	})
}

// reconciled runs f for the link of a stanza whose flows are NATed
// (stanza.Config.Reconciled).
func reconciled(f func(*netlink.Handle, *stanza.Config, *reconcile.Link) error) hook.Action {
	return func(h *netlink.Handle, c *stanza.Config) error {
		if !c.Reconciled() {
			return nil
		}
		l := &reconcile.Link{Iface: c.Iface, Family: c.Family, Mark: c.Mark, Sticky: c.Sticky}
		if nl, err := h.LinkByName(c.Iface); err == nil {
			l.Index = nl.Attrs().Index
		}
		if err := f(h, c, l); err != nil {
			return fmt.Errorf("%s: reconciling conntrack: %w", c.Iface, err)
		}
		return nil
	}
}

// took deletes the flows that now route by l, and for a stanza whose
// address the kernel learns (inet dhcp), those that left by it un-NATed.
func took(h *netlink.Handle, c *stanza.Config, l *reconcile.Link) error {
	if l.Index == 0 {
		return nil // gone meanwhile: it took nothing
	}
	ct, err := reconcile.Dial()
	if err != nil {
		return err
	}
	defer ct.Close()
	others, err := reconcile.Registered(h)
	if err != nil {
		return err
	}
	if err := reconcile.Took(h, ct, *l, others); err != nil {
		return err
	}
	if !c.Address.IsValid() {
		_, err = reconcile.UnNATed(h, ct, *l)
	}
	return err
}

func left(_ *netlink.Handle, c *stanza.Config, l *reconcile.Link) error {
	// A link with no record never came up (a stanza refused at ifup, say,
	// that names another link's table and so its mark): the flows under
	// its mark are another link's.
	rec, err := registry.Read(c.Iface, c.Family)
	if err != nil || rec == nil {
		return err
	}
	ct, err := reconcile.Dial()
	if err != nil {
		return err
	}
	defer ct.Close()
	l.Mark = rec.Mark
	return reconcile.Left(ct, *l)
}
