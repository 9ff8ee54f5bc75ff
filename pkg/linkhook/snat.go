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

// snatDown removes the link's chains, as its record has them, and then the
// record: ifisp-route's post-down (ifisp-6rd's, for a 6rd stanza) has
// removed the rest of what it holds. The other links' records say which
// top chains stay.
func snatDown(_ *netlink.Handle, c *stanza.Config) error {
	b, err := nat.NewExec(c.Family)
	if err != nil {
		return fmt.Errorf("%s: %w", c.Iface, err)
	}
	all, err := registry.All()
	if err != nil {
		return err
	}
	recorded := false // the link has a record
	var own *nat.Chains
	var others []nat.Chains
	for _, r := range all {
		switch {
		case r.Family != c.Family:
		case r.Iface == c.Iface:
			recorded, own = true, r.Chains
		case r.Chains != nil:
			others = append(others, *r.Chains)
		}
	}
	if err := nat.Down(b, c, own, others); err != nil {
		return err
	}
	if !recorded {
		return nil
	}
	return registry.Forget(c.Iface, c.Family)
}
