// Binary ifisp-snat is the ifupdown hook that installs a WAN's SNAT rules
// (snat-from) and its egress guard, in ifisp's own iptables chains, each
// table in one iptables-restore transaction.
//
// Linked into if-pre-up.d it installs them before ifupdown adds the address
// and its gateway route, so no flow can leave the WAN un-NATed or spoofed in
// between; into if-up.d it installs them for `inet dhcp`, whose address is
// only known then; into if-post-down.d it removes them.
package main

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

func main() {
	hook.Main("ifisp-snat", hook.Phases{
		"pre-up":    preUp,
		"post-up":   dynamicUp,
		"post-down": down,
	})
}

// dynamicUp installs the rules of a stanza whose address only the kernel
// knows (inet dhcp); a static stanza's are in place since pre-up, and
// running through them again would only lengthen the moment in which
// if-up.d stands between the new route and the conntrack reconcile.
func dynamicUp(h *netlink.Handle, c *stanza.Config) error {
	if c.Address.IsValid() {
		return nil
	}
	return up(h, c)
}

// preUp installs the chains before ifupdown configures the interface; for
// a 6rd stanza it removes the tunnel an interrupted ifup left, which
// ifupdown is about to create.
func preUp(h *netlink.Handle, c *stanza.Config) error {
	if c.SixRD != nil {
		return sixrdlink.Clear(h, c)
	}
	return up(h, c)
}

func up(h *netlink.Handle, c *stanza.Config) error {
	if c.SixRD != nil {
		// A 6rd tunnel's sources come from its delegated prefix, which
		// only ifisp-6rd computes; it has no guard yet.
		return nil
	}
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

func down(_ *netlink.Handle, c *stanza.Config) error {
	b, err := nat.NewExec(c.Family)
	if err != nil {
		return fmt.Errorf("%s: %w", c.Iface, err)
	}
	return nat.Down(b, c)
}
