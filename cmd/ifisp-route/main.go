// Binary ifisp-route is the ifupdown hook that installs an ISP's source
// routing: its table, its `from` rules and its optional main-table default.
//
// Linked into if-up.d it installs them; into if-down.d it withdraws the
// main-table defaults through the link before ifupdown deconfigures it; into
// if-post-down.d it removes the rules and the table once the address is gone.
package main

import (
	"github.com/vishvananda/netlink"

	"github.com/ifisp/ifisp/pkg/hook"
	"github.com/ifisp/ifisp/pkg/policy"
	"github.com/ifisp/ifisp/pkg/stanza"
)

func main() {
	hook.Main("ifisp-route", hook.Phases{
		"post-up":   do(policy.Up),
		"pre-down":  do(policy.Withdraw),
		"post-down": do(policy.Down),
	})
}

// do runs f on the stanza's link in the current network namespace. A 6rd
// stanza's routing is ifisp-6rd's: only it knows the delegated prefix.
func do(f func(*netlink.Handle, *policy.Link) error) hook.Action {
	return func(c *stanza.Config) error {
		if c.SixRD != nil {
			return nil
		}
		return policy.WithLink(c, f)
	}
}
