package linkhook

import (
	"github.com/vishvananda/netlink"

	"github.com/ifisp/ifisp/pkg/hook"
	"github.com/ifisp/ifisp/pkg/sixrdlink"
	"github.com/ifisp/ifisp/pkg/stanza"
)

// SixRD is ifisp-6rd's: a 6rd stanza's tunnel parameters, addresses and
// routing.
var SixRD = awaiting(hook.Phases{
	"post-up":   sixrd(sixrdlink.Up),
	"post-down": sixrd(sixrdlink.Down),
}, nil)

// sixrd runs f for 6rd stanzas only.
func sixrd(f hook.Action) hook.Action {
	return func(h *netlink.Handle, c *stanza.Config) error {
		if c.SixRD == nil {
			return nil
		}
		return f(h, c)
	}
}
