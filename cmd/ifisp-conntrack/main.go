// Binary ifisp-conntrack is the ifupdown hook that reconciles conntrack
// after a route change: it deletes exactly the entries whose SNAT address
// (or un-NATed source) no longer fits the WAN routing picks for them, and
// keeps every flow whose mapping still fits.
//
// It runs last in if-up.d (after routes and SNAT) and in if-down.d after
// ifisp-route has withdrawn the link's default, for inet stanzas: NAT is
// IPv4's, and an IPv6 flow's source is its host's own address, which no
// conntrack delete can move to another link. It does not run in
// if-post-down.d: the only entries that could go stale there are the
// router's own flows from the address just removed, which carry no packet
// (the kernel sends from no address it does not have), are valid again if
// the address returns, and would cost a full conntrack dump to find.
package main

import (
	"fmt"

	"github.com/vishvananda/netlink"

	"github.com/ifisp/ifisp/pkg/hook"
	"github.com/ifisp/ifisp/pkg/reconcile"
	"github.com/ifisp/ifisp/pkg/stanza"
)

func main() {
	hook.Main("ifisp-conntrack", hook.Phases{
		"post-up":  run,
		"pre-down": run,
	})
}

func run(h *netlink.Handle, c *stanza.Config) error {
	if c.Family != stanza.Inet {
		return nil
	}
	if _, err := reconcile.Now(h); err != nil {
		return fmt.Errorf("%s: reconciling conntrack: %w", c.Iface, err)
	}
	return nil
}
