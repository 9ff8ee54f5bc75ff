package linkhook

import (
	"fmt"

	"github.com/vishvananda/netlink"

	"github.com/ifisp/ifisp/pkg/hook"
	"github.com/ifisp/ifisp/pkg/reconcile"
	"github.com/ifisp/ifisp/pkg/registry"
	"github.com/ifisp/ifisp/pkg/stanza"
)

// Conntrack is ifisp-conntrack's: the conntrack reconcile after the
// link's routes changed.
// It has work only for stanzas whose flows are NATed
// (stanza.Config.Reconciled).
var Conntrack = awaiting(hook.Phases{
	"post-up":  {For: (*stanza.Config).Reconciled, Do: reconciled(took)},
	"pre-down": {For: (*stanza.Config).Reconciled, Do: reconciled(left)},
}, nil)

// reconciled runs f for the stanza's link.
func reconciled(f func(*netlink.Handle, *stanza.Config, *reconcile.Link) error) hook.Action {
	return func(h *netlink.Handle, c *stanza.Config) error {
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
// address the kernel learns (inet dhcp), those that left by it with a
// source not its own: un-NATed, or NATed to an earlier lease's address.
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
		_, err = reconcile.Strays(h, ct, *l)
	}
	return err
}

// left deletes the flows NATed to the link going down.
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
