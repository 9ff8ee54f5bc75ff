package linkhook

import (
	"fmt"

	"github.com/vishvananda/netlink"

	"github.com/ifisp/ifisp/pkg/hook"
	"github.com/ifisp/ifisp/pkg/nat"
	"github.com/ifisp/ifisp/pkg/policy"
	"github.com/ifisp/ifisp/pkg/registry"
	"github.com/ifisp/ifisp/pkg/sixrdlink"
	"github.com/ifisp/ifisp/pkg/stanza"
)

// SNAT is ifisp-snat's: the link's SNAT rules and egress guard, and in
// pre-up every check of the stanza (package hook).
var SNAT = awaiting(hook.Phases{
	"pre-up":    {Do: preUp},
	"post-up":   {For: dynamic, Do: snatUp},
	"post-down": {Do: snatDown},
}, nil)

// dynamic reports whether c's address only the kernel knows (inet dhcp):
// if-up.d installs its rules. A static stanza's are in place since pre-up,
// and running through them again would only lengthen the moment in which
// if-up.d stands between the new route and the conntrack reconcile. A 6rd
// tunnel's sources come from its delegated prefix, which only ifisp-6rd
// computes; it has no chains yet.
func dynamic(c *stanza.Config) bool { return !c.Address.IsValid() && not6rd(c) }

// preUp installs the chains before ifupdown configures the interface; for
// a 6rd stanza it removes the tunnel an interrupted ifup left, which
// ifupdown is about to create.
func preUp(h *netlink.Handle, c *stanza.Config) error {
	if c.SixRD != nil {
		return sixrdlink.Clear(h, c)
	}
	return snatUp(h, c)
}

// snatUp installs the chains of a link that is not 6rd and records them
// with its plan.
func snatUp(h *netlink.Handle, c *stanza.Config) error {
	l, err := policy.Resolve(h, c)
	if err != nil {
		return err
	}
	if !l.Address.IsValid() {
		return nil // inet dhcp before its lease: if-up.d installs them
	}
	b, err := nat.NewExec(c.Family)
	if err != nil {
		return fmt.Errorf("%s: %w", c.Iface, err)
	}
	nl := &nat.Link{Config: c, Address: l.Address}
	if err := nat.Up(b, nl); err != nil {
		return err
	}
	ch := nl.Chains()
	return registry.Update(c.Iface, c.Family, func(r *registry.Link) { r.Chains = &ch })
}

func snatDown(_ *netlink.Handle, c *stanza.Config) error {
	b, err := nat.NewExec(c.Family)
	if err != nil {
		return fmt.Errorf("%s: %w", c.Iface, err)
	}
	return nat.Down(b, c)
}
