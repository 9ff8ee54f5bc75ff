// Binary ifisp-conntrack is the ifupdown hook that reconciles conntrack
// after a route change: it deletes exactly the entries whose SNAT address
// (or un-NATed source) no longer fits the WAN routing picks for them, and
// keeps every flow whose mapping still fits.
//
// It runs last in if-up.d (after routes and SNAT), in if-down.d after
// ifisp-route has withdrawn the link's default, and in if-post-down.d once
// the address is gone (the router's own flows from it go then).
package main

import (
	"github.com/ti-mo/conntrack"
	"github.com/vishvananda/netlink"

	"github.com/ifisp/ifisp/pkg/hook"
	"github.com/ifisp/ifisp/pkg/reconcile"
	"github.com/ifisp/ifisp/pkg/stanza"
)

func main() {
	hook.Main("ifisp-conntrack", hook.Phases{
		"post-up":   run,
		"pre-down":  run,
		"post-down": run,
	})
}

func run(*stanza.Config) error {
	ct, err := conntrack.Dial(nil)
	if err != nil {
		return err
	}
	defer ct.Close()
	h, err := netlink.NewHandle()
	if err != nil {
		return err
	}
	defer h.Close()
	_, err = reconcile.Run(ct, h)
	return err
}
